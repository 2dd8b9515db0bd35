"""`ensemble`: the mean of several runs trained on the same folds, evaluated and usable as a run.

The runs' out-of-fold probabilities are averaged image by image (and breast by breast for multi-view
runs), which is honest only because every image was held out by the same women's fold in each run:
runs on other folds are refused, naming the first woman and image that differ. The average is scored by
the shared metrics with thresholds tuned on it (labelled optimistic, as a run's own), and OUT opens as a
run (``runs.open.open_run`` gives a ``runs.ensemble.EnsembleRun``), so `evaluate --run OUT` and
`predict --run OUT` score new images with the mean of every member's fold models.

    from mammo_insight.stages import ensemble
    result = ensemble.run_ensemble(ensemble.EnsembleConfig(runs=(Path("runs/a"), Path("runs/b"))))
    ensemble.write_ensemble(result, Path("ens"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mammo_insight.files import write_csv_atomic
from mammo_insight.metrics import ThresholdRule, evaluate_predictions, save_metrics_json, thresholds_of
from mammo_insight.report import Section, fmt_ci, paragraph, table
from mammo_insight.runs.ensemble import shared_preprocess
from mammo_insight.runs.open import open_run
from mammo_insight.runs.run_io import save_run_config
from mammo_insight.runs.run_report import render_run_report, run_headline
from mammo_insight.runs.run_sets import RunSet, averaged_predictions, open_run_set
from mammo_insight.runs.spec import MEMBERS_KEY, RunSpec
from mammo_insight.stages.base import StageResult, finish_stage

MEMBER_METRICS = ("roc_auc", "pr_auc", "pf1", "balanced_accuracy")


@dataclass(frozen=True)
class EnsembleConfig:
    """The runs averaged (two or more, same folds) and the bootstrap's size."""

    runs: tuple[Path, ...]
    n_boot: int = 1000


@dataclass(frozen=True, eq=False)
class EnsembleResult(StageResult):
    """The averaged out-of-fold predictions, their metrics, and each member's metrics beside them."""

    config: EnsembleConfig
    values: dict[str, Any]  # OUT/config.json: the members, what they read, the tuned thresholds
    oof: pd.DataFrame
    oof_breasts: pd.DataFrame | None
    metrics: dict[str, Any]
    members: dict[str, dict[str, Any]]  # member name -> its metrics.json body (breast and image levels)

    stage = "ensemble"
    title = "Ensemble of runs"

    def headline(self) -> dict[str, str]:
        return {"runs averaged": str(len(self.members)), **run_headline(self.metrics)}


def _member_metrics(runs: RunSet) -> dict[str, dict[str, Any]]:
    out = {}
    for name, root in zip(runs.names, runs.roots, strict=True):
        path = root / "metrics.json"
        out[name] = json.loads(path.read_text()) if path.is_file() else {}
    return out


def run_ensemble(config: EnsembleConfig) -> EnsembleResult:
    """Average the runs' out-of-fold predictions (refusing other folds) and score the average."""
    runs = open_run_set(config.runs)
    members = [open_run(root) for root in runs.roots]
    shared = shared_preprocess(members)
    images, breasts = averaged_predictions(runs)
    first = members[0].spec
    rule = ThresholdRule(
        getattr(first.recipe, "threshold_method", "best_f1"), getattr(first.recipe, "target_sensitivity", 0.9)
    )
    metrics = evaluate_predictions(
        images,
        None,
        config.n_boot,
        first.seed,
        label=runs.label,
        breast_preds=breasts,
        rule=rule,
    )
    member_metrics = _member_metrics(runs)
    folds = member_metrics[runs.names[0]].get("folds")
    if folds:
        metrics["folds"] = folds
    views = {m.spec.view_mode for m in members}
    sizes = {m.spec.image_size for m in members}
    spec = RunSpec(
        kind="ensemble",
        backbone="ensemble: "
        + " + ".join(f"{n} ({m.model_name})" for n, m in zip(runs.names, members, strict=True)),
        folds=first.folds,
        seed=first.seed,
        view_mode=views.pop() if len(views) == 1 else "mixed",
        image_size=sizes.pop() if len(sizes) == 1 else None,
        max_views=max(m.spec.max_views for m in members),
        label_column=runs.label,
        thresholds=thresholds_of(metrics),
        preprocess=shared,
        members=tuple(str(root.resolve()) for root in runs.roots),
        facts={
            "members": list(runs.names),
            "threshold_method": rule.method,
            "target_sensitivity": rule.target_sensitivity,
            "n_images": len(images),
        },
    )
    values = spec.to_dict()
    return EnsembleResult(config, values, images, breasts, metrics, member_metrics)


def members_section(result: EnsembleResult) -> Section:
    """Each member's out-of-fold metrics next to the ensemble's, on the same images."""
    rows = []
    for name, body in {**result.members, "ensemble": result.metrics}.items():
        for level in ("breast", "image"):
            if isinstance(body.get(level), dict):
                rows.append(
                    {"run": name, "level": level, **{m: fmt_ci(body[level].get(m)) for m in MEMBER_METRICS}}
                )
    return Section(
        "Members",
        [
            paragraph(
                "The ensemble averages the members' out-of-fold probabilities image by image; each member's "
                "row is its own run's metrics.json on the same images and folds. For paired tests between "
                "the members, run `mammo-insight compare` on them.",
                "note",
            ),
            table(pd.DataFrame(rows), caption="value (95% interval, women resampled)"),
        ],
    )


def write_ensemble(result: EnsembleResult, out: Path) -> Path:
    """OUT/oof_predictions.csv, metrics.json, config.json, then the manifest, then index.html (returned)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out / "oof_predictions.csv", result.oof)
    if result.oof_breasts is not None:
        write_csv_atomic(out / "oof_breast_predictions.csv", result.oof_breasts)
    save_metrics_json(out / "metrics.json", result.metrics)
    save_run_config(out, result.values)
    finish_stage(
        out,
        result,
        {"runs": [str(r) for r in result.config.runs], "n_boot": result.config.n_boot},
        seed=result.values["seed"],
        inputs={
            f"oof_{name}": Path(root) / "oof_predictions.csv"
            for name, root in zip(result.values["members"], result.values[MEMBERS_KEY], strict=True)
        },
        render=lambda: render_run_report(
            out, title=f"Ensemble of {len(result.members)} runs", extra=[members_section(result)]
        ),
    )
    return out / "index.html"
