"""RUN/index.html: what a training run (or an external evaluation) found, with intervals.

Reads the run-directory files (see run_io): oof_predictions.csv, metrics.json, history.csv,
baselines.json and config.json when present, and writes one self-contained page: headline numbers,
the metrics table at image and breast level, learning curves, ROC and PR curves, confusion matrices,
calibration, subgroups and baselines. Missing files drop their section with a note; nothing fails
because an optional file is absent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from mammo_insight.metrics import (
    METRIC_NAMES,
    aggregate_to_breast,
    metrics_frame,
    subgroup_metrics,
    thresholds_of,
)
from mammo_insight.report import (
    Section,
    bullet_list,
    figure,
    fmt_ci,
    metric_cards,
    paragraph,
    raw_link,
    render_page,
    table,
)
from mammo_insight.runs import run_figures as figs

log = logging.getLogger(__name__)

LEVEL_TITLES = {"image": "image", "breast": "breast (mean of images)", "breast_max": "breast (max of images)"}
HEADLINE = [
    ("breast", "roc_auc", "breast ROC-AUC"),
    ("breast", "pf1", "breast pF1"),
    ("breast", "pr_auc", "breast PR-AUC"),
    ("image", "roc_auc", "image ROC-AUC"),
    ("image", "pf1", "image pF1"),
]
BASELINE_METRICS = ["roc_auc", "pr_auc", "pf1", "balanced_accuracy", "f1"]
SUBGROUP_METRICS = ["roc_auc", "pr_auc", "pf1", "recall"]
SUBGROUP_BOOT = 200
LABEL = "cancer"
SHIFT_FILE = "shift.json"  # the dataset-shift check of a run trained with external caches (fusion.shift)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        log.warning("%s is not valid JSON (%s): its section is left out", path, exc)
        return None


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    ids = {c: str for c in ("image_id", "breast_id", "patient_id", "site_id", "machine_id")}
    return pd.read_csv(path, dtype=ids)


COUNT_METRICS = {"tn", "fp", "fn", "tp"}


def metrics_table(metrics: Mapping, levels: list[str] | None = None) -> pd.DataFrame:
    """Rows = metrics, columns = levels, cells 'value (low–high)'; plus threshold and counts rows."""
    levels = [lv for lv in (levels or list(LEVEL_TITLES)) if isinstance(metrics.get(lv), Mapping)]
    rows = []
    for name in METRIC_NAMES:
        rows.append(
            {
                "metric": name,
                **{
                    LEVEL_TITLES.get(lv, lv): fmt_ci(metrics[lv].get(name), count=name in COUNT_METRICS)
                    for lv in levels
                },
            }
        )
    for key in ("threshold", "n", "n_pos", "n_groups"):
        rows.append(
            {"metric": key, **{LEVEL_TITLES.get(lv, lv): _plain(metrics[lv].get(key)) for lv in levels}}
        )
    return pd.DataFrame(rows)


def _plain(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(int(value)) if isinstance(value, (int, float)) else str(value)


def run_headline(metrics: Mapping, levels: tuple[str, ...] = ("breast", "image")) -> dict[str, str]:
    """The headline numbers of a run or an evaluation (the given levels, with intervals)."""
    return {
        label: fmt_ci(metrics.get(level, {}).get(name))
        for level, name, label in HEADLINE
        if level in levels and isinstance(metrics.get(level), Mapping)
    }


def _summary(
    run_dir: Path, config: Mapping | None, metrics: Mapping | None, oof: pd.DataFrame | None
) -> Section:
    blocks = []
    if metrics:
        blocks.append(metric_cards(run_headline(metrics)))
    facts = []
    if config:
        keys = ["model", "view_mode", "folds", "epochs", "seed", "image_size", "loss", "sampler", "dataset"]
        facts += [f"{k}: {config[k]}" for k in keys if k in config]
    if oof is not None:
        labelled = oof[oof[LABEL].notna()] if LABEL in oof.columns else oof.iloc[:0]
        facts.append(
            f"{len(oof):,} images, {oof['breast_id'].nunique():,} breasts, "
            f"{oof['patient_id'].nunique():,} patients; {int(labelled[LABEL].sum()):,} positive images"
        )
    if metrics:
        for level, body in metrics.items():
            if isinstance(body, Mapping) and "threshold" in body:
                facts.append(
                    f"{LEVEL_TITLES.get(level, level)} threshold {body['threshold']:.4g}: "
                    f"{body.get('threshold_source', '')}"
                )
    blocks.append(bullet_list(facts))
    blocks.append(
        paragraph(
            "Intervals are 95% percentile bootstrap intervals that resample patients, so the "
            "correlation between a woman's images is respected. At a few percent prevalence "
            "accuracy means little: read pF1, PR-AUC and balanced accuracy next to ROC-AUC.",
            "note",
        )
    )
    return Section("Summary", blocks)


def _metrics_section(metrics: Mapping) -> Section:
    frame = metrics_table(metrics)
    return Section(
        "Metrics with intervals",
        [
            table(frame, caption="value (95% interval); confusion counts at the stated threshold"),
            figure(
                lambda: figs.forest_plot(
                    metrics_frame(metrics, list(LEVEL_TITLES)),
                    ["roc_auc", "pr_auc", "pf1", "balanced_accuracy", "f1"],
                ),
                "Point estimates and intervals per level",
            ),
        ],
    )


def _curves_sections(oof: pd.DataFrame, metrics: Mapping | None) -> list[Section]:
    labelled = oof[oof[LABEL].notna()]
    if labelled.empty or labelled[LABEL].nunique() < 2:
        return [
            Section(
                "ROC and PR curves",
                [
                    paragraph(
                        "Both classes are needed for curves: these predictions "
                        "hold one class (or no labels).",
                        "warn",
                    )
                ],
            )
        ]
    levels = {"image": labelled, "breast": aggregate_to_breast(labelled, "mean")}
    thresholds = thresholds_of(metrics) if metrics else {}
    out = [
        Section(
            "ROC and PR curves",
            [
                figure(
                    lambda: figs.roc_pr_curves(levels),
                    "Out-of-fold ROC and precision-recall curves; the dashed "
                    "lines are chance (the diagonal, and the prevalence)",
                )
            ],
        )
    ]
    if "fold" in labelled.columns and labelled["fold"].nunique() > 1:
        out[0].blocks.append(figure(lambda: figs.per_fold_roc(levels["breast"]), "Breast-level ROC per fold"))
    out.append(
        Section(
            "Confusion matrices",
            [figure(lambda: figs.confusion_matrices(levels, thresholds), "Counts at each level's threshold")],
        )
    )
    out.append(
        Section(
            "Calibration",
            [
                figure(
                    lambda: figs.calibration_curves(levels),
                    "Mean predicted probability vs observed rate, equal-count bins; "
                    "the diagonal is perfect calibration",
                ),
                paragraph(
                    "pF1 reads the probabilities directly, so calibration moves it; ROC-AUC ignores it.",
                    "note",
                ),
            ],
        )
    )
    return out


def _subgroup_section(oof: pd.DataFrame, metrics: Mapping | None) -> Section:
    labelled = oof[oof[LABEL].notna()]
    threshold = (metrics or {}).get("image", {}).get("threshold")
    sub = subgroup_metrics(
        labelled, None, threshold=threshold, n_boot=SUBGROUP_BOOT, metrics=SUBGROUP_METRICS
    )
    if sub.empty:
        return Section(
            "Subgroups",
            [
                paragraph(
                    "No subgroup column (view, age, density, site_id, machine_id) in oof_predictions.csv.",
                    "note",
                )
            ],
        )
    wide = (
        sub.assign(cell=[fmt_ci(r) for r in sub[["value", "ci_low", "ci_high"]].to_dict("records")])
        .set_index(["factor", "level", "n", "n_pos", "metric"])["cell"]
        .unstack("metric")
    )
    keys = sub[["factor", "level", "n", "n_pos"]].drop_duplicates()  # keep subgroup_metrics' row order
    wide = wide.reindex(pd.MultiIndex.from_frame(keys)).reset_index()
    wide = wide[["factor", "level", "n", "n_pos", *[m for m in SUBGROUP_METRICS if m in wide.columns]]]
    return Section(
        "Subgroups",
        [
            paragraph(
                "Image-level metrics per subgroup at one shared threshold: where detection is harder. "
                "Small subgroups have wide intervals; compare intervals, not point estimates.",
                "note",
            ),
            table(wide, caption="value (95% interval, patients resampled)"),
            figure(lambda: figs.subgroup_forest(sub[sub["metric"] == "roc_auc"]), "ROC-AUC per subgroup"),
        ],
    )


def _baselines_section(baselines: Mapping, metrics: Mapping | None) -> Section:
    rows = []
    entries = ({"this model": metrics} if metrics else {}) | dict(baselines)
    for name, body in entries.items():
        for level in ("image", "breast"):
            if isinstance(body.get(level), Mapping):
                rows.append(
                    {
                        "model": name,
                        "level": level,
                        **{m: fmt_ci(body[level].get(m)) for m in BASELINE_METRICS},
                    }
                )
    return Section(
        "Baselines",
        [
            paragraph(
                "Majority class, prevalence-random and logistic regression on downsampled pixels, fitted on "
                "the same folds and scored by the same functions: the floor the CNN has to clear.",
                "note",
            ),
            table(pd.DataFrame(rows), caption="value (95% interval)"),
        ],
    )


def shift_section(shift: Mapping) -> Section:
    """Where two sources meet: can the model tell them apart, and how it does on the home positives alone."""

    def frame(key: str, interval: str) -> pd.DataFrame:
        rows = pd.DataFrame(shift.get(key, []))
        if rows.empty:
            return rows
        rows[f"{interval} (95% CI)"] = [
            fmt_ci({"value": r[interval], "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
            for r in rows.to_dict("records")
        ]
        return rows.drop(columns=[interval, "ci_low", "ci_high"])

    threshold = shift.get("threshold")
    return Section(
        "Dataset shift",
        [
            paragraph(
                str(shift.get("verdict", "")), "warn" if "Yes" in str(shift.get("verdict", "")) else ""
            ),
            table(
                frame("probes", "roc_auc"),
                caption="which source is this film from? patient-grouped probe, chance 0.5",
            ),
            table(
                frame("groups", "called_positive"),
                caption=f"films called positive at the image threshold {threshold:.4g}, per source and label"
                if threshold is not None
                else "films called positive, per source and label",
            ),
            table(
                frame("aucs", "roc_auc"),
                caption="ROC-AUC of each source's positives against the home negatives",
            ),
            paragraph(f"{shift.get('note', '')} Intervals resample women.", "note"),
        ],
    )


def _files_section(run_dir: Path) -> Section:
    names = [
        "metrics.json",
        "oof_predictions.csv",
        "history.csv",
        "baselines.json",
        "config.json",
        SHIFT_FILE,
        "manifest.json",
    ]
    links = Markup(" · ").join(raw_link(n, n) for n in names if (run_dir / n).is_file())
    return Section("Files", [Markup("<p>Raw outputs of this run: ") + links + Markup("</p>")])


def render_run_report(
    run_dir: str | Path,
    out_path: str | Path | None = None,
    title: str | None = None,
    extra: Sequence[Section] = (),
) -> Path:
    """Write RUN/index.html (or out_path) from the run directory's files; returns the page path.

    `extra`: sections a stage adds after the metrics (an ensemble's members, a dataset-shift check)."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json")
    metrics = _read_json(run_dir / "metrics.json")
    baselines = _read_json(run_dir / "baselines.json")
    oof = _read_csv(run_dir / "oof_predictions.csv")
    label = (config or {}).get("label_column", LABEL)
    if oof is not None and label != LABEL and label in oof.columns:
        oof = oof.drop(columns=[LABEL], errors="ignore").rename(columns={label: LABEL})
    history = _read_csv(run_dir / "history.csv")
    sections = [_summary(run_dir, config, metrics, oof)]
    if metrics:
        sections.append(_metrics_section(metrics))
    else:
        sections.append(Section("Metrics with intervals", [paragraph("metrics.json is missing.", "warn")]))
    sections += extra
    shift = _read_json(run_dir / SHIFT_FILE)
    if shift:
        sections.append(shift_section(shift))
    if history is not None and not history.empty:
        sections.append(
            Section(
                "Learning curves",
                [
                    figure(
                        lambda: figs.learning_curves(history),
                        "Loss, pF1, ROC-AUC and balanced accuracy (at 0.5) per epoch; one line per fold",
                    )
                ],
            )
        )
    if oof is not None and LABEL in oof.columns:
        sections += _curves_sections(oof, metrics)
        sections.append(_subgroup_section(oof, metrics))
    if baselines:
        sections.append(_baselines_section(baselines, metrics))
    sections.append(_files_section(run_dir))
    name = (config or {}).get("model", run_dir.name)
    title = title or f"Training run: {name}"
    subtitle = f"{run_dir.name} · {(config or {}).get('view_mode', '')} view · out-of-fold predictions"
    return render_page(Path(out_path) if out_path else run_dir / "index.html", title, sections, subtitle)
