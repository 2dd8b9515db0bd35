"""The shape every stage shares.

A stage module `stages/<stage>.py` holds a frozen `<Stage>Config`, `run_<stage>(config) -> <Stage>Result`
(frozen; tables as DataFrames) and `write_<stage>(result, out) -> Path`, which writes the stage's files
first, then its manifest (config, seed, input hashes, and the `headline` the report index shows), and
only then draws its report: a report that fails can never cost the results. The CLI parses options and
calls these two functions; notebooks call them directly, and a result shows its headline in Jupyter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from mammo_insight.errors import MammoInsightError
from mammo_insight.manifest import write_manifest
from mammo_insight.report.blocks import figure, metric_cards


class StageResult:
    """Base of every stage's frozen result: a headline for the index, the CLI and notebooks."""

    stage: str = ""
    title: str = ""

    def headline(self) -> dict[str, str]:
        """The few formatted numbers worth seeing first (label -> text)."""
        return {}

    def lines(self) -> list[str]:
        """What the command prints when the stage is done: by default the headline, one figure a line."""
        return [f"{label}: {value}" for label, value in self.headline().items() if value]

    def problems(self) -> list[str]:
        """Warnings the command prints on stderr (failed files, a sample too small, ...)."""
        return []

    def figures(self) -> list[tuple[Callable[[], Any], str]]:
        """The report's key figures as (draw, caption) pairs, for the notebook view."""
        return []

    def tables(self) -> list[Markup]:
        """The report's key tables, ready to show, for the notebook view (under the figures)."""
        return []

    def _repr_html_(self) -> str:
        cards = metric_cards({k: v for k, v in self.headline().items() if v})
        drawn = "".join(str(figure(draw, caption)) for draw, caption in self.figures())
        tables = "".join(str(t) for t in self.tables())
        return f"<div><strong>{escape(self.title or self.stage)}</strong>{cards}{drawn}{tables}</div>"


def working_folder(result_folder: Path, out: str | Path, stage: str) -> Path:
    """``out`` for a stage that builds its folder while it runs (synth, preprocess, train, patch-train).

    Their fold models, cache images or DICOMs are already in the folder the config named, so the
    summary files must go there too: another ``out`` would split one run across two folders.
    """
    if Path(out).resolve() != Path(result_folder).resolve():
        raise MammoInsightError(
            f"{stage} built {result_folder} while it ran: write its results there, not to {out}"
        )
    return Path(result_folder)


def finish_stage(
    out: Path,
    result: StageResult,
    config: Mapping[str, Any],
    *,
    seed: int | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    report: str | None = "index.html",
    render: Callable[[], Any] | None = None,
) -> Path:
    """Write the manifest (with the result's headline), then draw the report; returns the manifest's path.

    `report` names the page (relative to the manifest) the index links; None when the stage has none.
    """
    path = write_manifest(
        out,
        result.stage,
        dict(config),
        seed,
        inputs=dict(inputs or {}),
        headline=result.headline(),
        report=report,
    )
    if render is not None:
        render()
    return path
