"""`compare`: runs trained on the same folds side by side, with paired tests over women.

An A/B comparison of two recipes (warm-up or none, one unfreezing schedule or another) is fair only on
the same images held out by the same folds, so runs on other folds are refused, naming the first woman
and image that differ. Each run is scored by the shared metrics at its own tuned thresholds, every pair
is compared at image and breast level by a paired bootstrap over women (ROC-AUC, PR-AUC, pF1: the same
resamples for both runs) and DeLong's test for ROC-AUC, and the learning curves are drawn over each other.

OUT/compare.json, tables/metrics.csv (run, level, metric, value, interval), tables/paired.csv,
tables/settings.csv (the options that differ between the runs), manifest.json, index.html.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from mammo_insight.files import write_csv_atomic
from mammo_insight.metrics import metrics_frame, save_metrics_json
from mammo_insight.metrics.compare import comparison_table
from mammo_insight.report import (
    Section,
    figure,
    fmt_ci,
    metric_cards,
    paragraph,
    raw_link,
    render_page,
    table,
)
from mammo_insight.runs import run_figures
from mammo_insight.runs.run_report import LEVEL_TITLES, metrics_table
from mammo_insight.runs.run_sets import COMPARED_METRICS, compare_runs, open_run_set
from mammo_insight.stages.base import StageResult, finish_stage

# config.json keys that say where or when a run was made, not how it was trained
NOT_SETTINGS = {
    "schema_version",
    "versions",
    "cache",
    "cache_index_sha256",
    "threshold",
    "thresholds",
    "device",
    "num_workers",
}


@dataclass(frozen=True)
class CompareConfig:
    """The runs compared (two or more, same folds) and the bootstrap's size and seed."""

    runs: tuple[Path, ...]
    n_boot: int = 1000
    seed: int = 0


@dataclass(frozen=True, eq=False)
class CompareResult(StageResult):
    """Each run's metrics, the paired tests of every pair, the settings that differ, and the histories."""

    config: CompareConfig
    names: tuple[str, ...]
    comparison: dict[str, Any]  # compare.json: runs, paired, n_boot, seed
    settings: pd.DataFrame  # one row per option that differs, one column per run
    histories: dict[str, pd.DataFrame]

    stage = "compare"
    title = "Runs compared on the same folds"

    def headline(self) -> dict[str, str]:
        out = {
            f"{n} breast ROC-AUC": fmt_ci(self.comparison["runs"][n]["breast"]["roc_auc"]) for n in self.names
        }
        first = next(iter(self.comparison["paired"]["breast"].items()), None)
        if first is not None:
            pair, body = first
            cell = body["roc_auc"]
            out[f"{pair.replace('_vs_', ' - ')} ROC-AUC"] = (
                f"{cell['diff']:+.3f} ({cell['ci_low']:+.3f} to {cell['ci_high']:+.3f}), "
                f"DeLong p={body['delong']['p_value']:.3g}"
            )
        return out

    def metrics_long(self) -> pd.DataFrame:
        """One row per (run, level, metric) with its interval."""
        frames = [
            metrics_frame(body, list(LEVEL_TITLES)).assign(run=name)
            for name, body in self.comparison["runs"].items()
        ]
        frame = pd.concat(frames, ignore_index=True)
        return frame[["run", "level", "metric", "value", "ci_low", "ci_high"]]

    def paired_table(self) -> pd.DataFrame:
        frames = [
            comparison_table(body).assign(level=level) for level, body in self.comparison["paired"].items()
        ]
        frame = pd.concat(frames, ignore_index=True)
        return frame[["level", *[c for c in frame.columns if c != "level"]]]


def settings_that_differ(names: tuple[str, ...], configs: tuple[dict[str, Any], ...]) -> pd.DataFrame:
    """The training options whose values are not the same in every run (one column per run)."""
    keys = sorted({k for c in configs for k in c} - NOT_SETTINGS)
    rows = []
    for key in keys:
        values = [c.get(key) for c in configs]
        if any(v != values[0] for v in values[1:]):
            rows.append(
                {
                    "option": key,
                    **{n: "–" if v is None else str(v) for n, v in zip(names, values, strict=True)},
                }
            )
    return pd.DataFrame(rows, columns=["option", *names])


def run_compare(config: CompareConfig) -> CompareResult:
    """Open the runs (refusing other folds), score each, and test every pair on the same women."""
    runs = open_run_set(config.runs)
    comparison = compare_runs(runs, n_boot=config.n_boot, seed=config.seed)
    histories = {n: h for i, n in enumerate(runs.names) if (h := runs.history(i)) is not None}
    return CompareResult(
        config, runs.names, comparison, settings_that_differ(runs.names, runs.configs), histories
    )


def _side_by_side(result: CompareResult, level: str) -> pd.DataFrame:
    """Rows = metrics, one column per run, cells 'value (low–high)'."""
    columns = {}
    for name, body in result.comparison["runs"].items():
        frame = metrics_table({level: body[level]}, [level]).set_index("metric")
        columns[name] = frame.iloc[:, 0]
    return pd.DataFrame(columns).reset_index()


def _render(result: CompareResult, out: Path) -> Path:
    n_boot = result.comparison["n_boot"]
    sections = [
        Section(
            "Summary",
            [
                metric_cards(result.headline()),
                paragraph(
                    f"{len(result.names)} runs validated on the same folds (every image held out by the same "
                    f"women's fold in each). Intervals: 95% percentile bootstrap over women ({n_boot} "
                    "resamples); threshold metrics at each run's own threshold tuned on its out-of-fold "
                    "predictions (optimistic, alike for every run).",
                    "note",
                ),
                table(result.settings, caption="training options that differ between the runs")
                if not result.settings.empty
                else paragraph("The runs record the same training options.", "note"),
            ],
        )
    ]
    for level in ("breast", "image"):
        sections.append(
            Section(
                f"Metrics, {LEVEL_TITLES[level]}",
                [table(_side_by_side(result, level), caption="value (95% interval); one column per run")],
            )
        )
    sections.append(
        Section(
            "Paired comparisons",
            [
                paragraph(
                    "a - b on the same women: both runs are scored on the same bootstrap resamples of women, "
                    f"so the case mix they share cancels ({', '.join(COMPARED_METRICS)}; p two-sided). DeLong's "
                    "test compares the ROC-AUCs on the same rows taken as independent (breasts of one woman "
                    "are not quite): read it with the bootstrap interval.",
                    "note",
                ),
                table(result.paired_table(), caption="paired differences with 95% intervals and p-values"),
            ],
        )
    )
    if result.histories:
        sections.append(
            Section(
                "Learning curves",
                [
                    figure(
                        lambda: run_figures.overlaid_learning_curves(result.histories),
                        "Per epoch, averaged over folds; validation solid, training dashed; one colour per run",
                    )
                ],
            )
        )
    names = ("compare.json", "tables/metrics.csv", "tables/paired.csv", "tables/settings.csv")
    links = Markup("<p>Raw outputs: ") + Markup(" · ").join(raw_link(n, n) for n in names) + Markup("</p>")
    sections.append(Section("Files", [links]))
    return render_page(
        out / "index.html", "Runs compared on the same folds", sections, " vs ".join(result.names)
    )


def write_compare(result: CompareResult, out: Path) -> Path:
    """OUT/compare.json and tables/*.csv, then the manifest, then index.html (returned)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_metrics_json(out / "compare.json", result.comparison)
    write_csv_atomic(out / "tables" / "metrics.csv", result.metrics_long())
    write_csv_atomic(out / "tables" / "paired.csv", result.paired_table())
    write_csv_atomic(out / "tables" / "settings.csv", result.settings)
    finish_stage(
        out,
        result,
        {"runs": [str(r) for r in result.config.runs], "n_boot": result.config.n_boot},
        seed=result.config.seed,
        inputs={
            f"oof_{n}": Path(r) / "oof_predictions.csv"
            for n, r in zip(result.names, result.config.runs, strict=True)
        },
        render=lambda: _render(result, out),
    )
    return out / "index.html"
