"""`report`: one index page over existing stage outputs, read from their manifests.

from mammo_insight.stages import report
result = report.run_report(report.ReportConfig(roots=(Path("runs"),)))
report.write_report(result, Path("runs"))     # runs/index.html
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_insight.report.index import STAGE_TITLES, find_stage_outputs, render_index
from mammo_insight.stages.base import StageResult


@dataclass(frozen=True)
class ReportConfig:
    """The folders searched for stage outputs (each itself and one level down) and the page's title."""

    roots: tuple[Path, ...]
    title: str = "mammo-insight reports"


@dataclass(frozen=True, eq=False)
class ReportResult(StageResult):
    """Every stage output found: (its manifest, the manifest's path), in data-flow order."""

    config: ReportConfig
    outputs: tuple[tuple[dict[str, Any], Path], ...]
    stage = "report"
    title = "Report index"

    def headline(self) -> dict[str, str]:
        stages = [STAGE_TITLES.get(str(m.get("stage")), str(m.get("stage"))) for m, _ in self.outputs]
        return {"stage outputs": str(len(self.outputs)), "stages": ", ".join(dict.fromkeys(stages))}


def run_report(config: ReportConfig) -> ReportResult:
    """Find every stage output under the roots (an error names the roots when there is none)."""
    return ReportResult(config, tuple(find_stage_outputs(list(config.roots))))


def write_report(result: ReportResult, out: Path) -> Path:
    """OUT/index.html linking every stage report found, with its headline numbers; returns the page."""
    return render_index(list(result.outputs), out, result.config.title)
