"""`evaluate`: external validation of a trained run on another image cache.

Every fold model of the run scores the cache and the fold probabilities are averaged
(``ensemble_predict`` of the run, of any kind: ``runs.open.open_run``). The operating thresholds are the ones the run tuned on its own
out-of-fold predictions, never re-tuned on the external data (that would be optimistic).

OUT/oof_predictions.csv (fold -1: mean of folds), metrics.json, config.json, manifest.json, index.html;
with ``shift_check`` also shift.json: the dataset-shift check where the run's training cache meets this one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mammo_insight.cohort.folds import train_only_mask
from mammo_insight.errors import MammoInsightError
from mammo_insight.files import write_csv_atomic
from mammo_insight.fusion.shift import shift_check, shift_headline
from mammo_insight.imaging.cache import CONFIG_FILE, INDEX_FILE, read_cache_config, read_cache_index
from mammo_insight.manifest import file_sha256
from mammo_insight.metrics import evaluate_predictions, save_metrics_json
from mammo_insight.nets.device import resolve_device
from mammo_insight.runs.base import Run
from mammo_insight.runs.data import CACHE_ROOT
from mammo_insight.runs.open import open_run
from mammo_insight.runs.run_io import save_run_config
from mammo_insight.runs.run_report import SHIFT_FILE, render_run_report, run_headline
from mammo_insight.stages.base import StageResult, finish_stage
from mammo_insight.training.sources import HOME_SOURCE, SOURCE_COLUMN, source_films

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    """Which run scores which cache, and where."""

    run: Path
    cache: Path
    device: str = "auto"
    batch_size: int = 32
    allow_overlap: bool = False  # score a cache sharing women with the training data, labelled internal
    shift_check: bool = False  # probe "training cache or this one?" on the fold models' features


@dataclass(frozen=True, eq=False)
class EvaluateResult(StageResult):
    """The averaged predictions of the run's fold models on the cache and their metrics (run thresholds)."""

    config: EvaluateConfig
    predictions: pd.DataFrame  # one row per image, fold -1, prob = mean of the fold models
    metrics: dict[str, Any]  # the metrics.json body
    run_config: dict[str, Any]  # what OUT/config.json records: the run's config plus what was evaluated
    folds: tuple[int, ...]
    device: str
    title: str
    seed: int | None = None
    inputs: dict[str, Path] = field(default_factory=dict)
    overlap: dict[str, int] = field(default_factory=dict)  # shared with the run's training data
    shift: dict[str, Any] | None = None  # the dataset-shift check between the training and this cache

    stage = "evaluate"

    def headline(self) -> dict[str, str]:
        validation = {"validation": INTERNAL} if self.overlap else {}
        return {**validation, **run_headline(self.metrics, levels=("breast",)), **shift_headline(self.shift)}


INTERNAL = "internal, not external"


def training_overlap(run: Run, table: pd.DataFrame, cache_dir: Path | None = None) -> dict[str, int]:
    """Women and images of `table` that the run trained or validated on (its out-of-fold table, or the
    --external-cache it trained on when `cache_dir` is one); {} if none.

    Ids are compared as text: two datasets that reuse the same ids for different women look shared too.
    """
    trained = _external_training_cache(run, table, cache_dir) if cache_dir is not None else {}
    if trained:
        return trained
    if not (run.root / "oof_predictions.csv").is_file():
        log.warning("%s has no oof_predictions.csv: its overlap with this cache cannot be checked", run.root)
        return {}
    seen = run.oof()
    women = set(table["patient_id"].astype(str)) & set(seen["patient_id"].astype(str))
    images = set(table["image_id"].astype(str)) & set(seen["image_id"].astype(str))
    if not women and not images:
        return {}
    return {
        "shared_women": len(women),
        "women": int(table["patient_id"].nunique()),
        "shared_images": len(images),
        "images": len(table),
    }


def _external_training_cache(run: Run, table: pd.DataFrame, cache: Path) -> dict[str, int]:
    """The overlap when `table` came from one of the run's --external-cache caches (every fold trained on it)."""
    for entry in run.spec.facts.get("external_caches") or []:
        same_path = Path(entry["cache"]).resolve() == cache.resolve()
        same_index = file_sha256(cache / INDEX_FILE) == entry["cache_index_sha256"]
        if same_path or same_index:
            seen = table
            if run.spec.facts.get("external_positives_only"):
                seen = table[pd.to_numeric(table[run.label_column]) == 1]
            return {
                "shared_women": int(seen["patient_id"].nunique()),
                "women": int(table["patient_id"].nunique()),
                "shared_images": len(seen),
                "images": len(table),
            }
    return {}


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Score the cache's labelled, non-augmented images with every fold model (mean) at the run's thresholds."""
    device = resolve_device(config.device)  # a device that is absent fails before any work
    run_dir, cache_dir = Path(config.run), Path(config.cache)
    run = open_run(run_dir)
    label = run.label_column
    index = read_cache_index(cache_dir)
    if label not in index:
        raise MammoInsightError(f"{cache_dir / INDEX_FILE} has no column {label!r} to validate against")
    usable = index[label].notna() & ~train_only_mask(index)  # augmented copies are never test images
    table = index[usable].reset_index(drop=True)
    if table.empty:
        raise MammoInsightError(f"{cache_dir / INDEX_FILE} has no ok row with a {label} label")
    overlap = training_overlap(run, table, cache_dir)
    if overlap and not config.allow_overlap:
        raise MammoInsightError(
            f"{cache_dir} is not external to {run_dir}: {overlap['shared_women']} of its {overlap['women']} "
            f"women and {overlap['shared_images']} of its {overlap['images']} images are in the run's "
            "training data; use a cache of other women, or --allow-overlap to score it labelled "
            f"'{INTERNAL}'"
        )
    preds, _ = run.ensemble_predict(cache_dir, table, device, config.batch_size)
    preds.insert(preds.columns.get_loc("patient_id") + 1, "fold", -1)
    metrics = evaluate_predictions(preds, run.thresholds() or None, seed=run.seed, label=label)
    values = {
        **run.spec.to_dict(),
        "evaluated_run": str(run_dir),
        "cache": str(cache_dir),
        "folds_averaged": list(run.folds),
        "cache_index_sha256": file_sha256(cache_dir / INDEX_FILE),
        "n_images": len(table),
        "training_overlap": overlap,
    }
    if overlap:
        metrics["validation"] = INTERNAL
        metrics["training_overlap"] = overlap
    shift = evaluation_shift(run, cache_dir, table, device, config.batch_size) if config.shift_check else None
    dataset = (read_cache_config(cache_dir) if (cache_dir / CONFIG_FILE).is_file() else {}).get("dataset")
    where = f"{dataset} ({cache_dir})" if dataset else str(cache_dir)
    return EvaluateResult(
        config=config,
        predictions=preds,
        metrics=metrics,
        run_config=values,
        folds=run.folds,
        device=str(device),
        title=(
            f"Internal validation ({INTERNAL}: {overlap['shared_women']} of {overlap['women']} women were "
            f"in training): {run.model_name} on {where}"
            if overlap
            else f"External validation: {run.model_name} on {where}"
        ),
        seed=run.seed,
        inputs={"cache_index": cache_dir / INDEX_FILE, "run_config": run_dir / "config.json"},
        overlap=overlap,
        shift=shift,
    )


EVALUATED = "evaluated"


def evaluation_shift(
    run: Run, cache_dir: Path, table: pd.DataFrame, device: Any, batch_size: int
) -> dict[str, Any]:
    """The shift check where the run's training cache ("home", scored out of fold) meets this one.

    The evaluated films were never trained on, so here neither side's scores are optimistic.
    """
    run.refuse_ensemble("evaluate --shift-check")
    home_cache = Path(str(run.spec.cache or ""))
    if not (home_cache / INDEX_FILE).is_file():
        raise MammoInsightError(
            f"--shift-check compares with the run's training cache, and {home_cache} (config.json 'cache') "
            "is gone"
        )
    folds = run.oof().drop_duplicates("image_id").set_index("image_id")["fold"]
    index = read_cache_index(home_cache)
    home = index[index["image_id"].astype(str).isin(folds.index)].assign(**{SOURCE_COLUMN: HOME_SOURCE})
    other = table.assign(
        **{c: f"{EVALUATED}:" + table[c].astype(str) for c in ("patient_id", "breast_id", "image_id")},
        **{SOURCE_COLUMN: EVALUATED, CACHE_ROOT: str(cache_dir)},
    )
    both = pd.concat([home, other], ignore_index=True)
    fold = both["image_id"].astype(str).map(folds).fillna(-1).astype(int)
    films, features = source_films(run, home_cache, both, fold, device=device, batch_size=batch_size)
    note = (
        f"home: the run's training cache {home_cache}, each film scored by the fold model that never saw its "
        f"woman; {EVALUATED}: this cache, each woman scored by one fold model (none trained on her)."
    )
    return shift_check(
        films,
        features,
        run.threshold("image"),
        external_scored="never trained on",
        note=note,
        seed=run.seed,
    )


def write_evaluate(result: EvaluateResult, out: str | Path) -> Path:
    """OUT/oof_predictions.csv, metrics.json, config.json, then the manifest, then index.html (returned)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out / "oof_predictions.csv", result.predictions)
    save_metrics_json(out / "metrics.json", result.metrics)
    save_run_config(out, result.run_config)
    if result.shift is not None:
        save_metrics_json(out / SHIFT_FILE, result.shift)
    finish_stage(
        out,
        result,
        {
            "run": str(result.config.run),
            "cache": str(result.config.cache),
            "device": result.device,
            "batch_size": result.config.batch_size,
        },
        seed=result.seed,
        inputs=result.inputs,
        render=lambda: render_run_report(out, title=result.title),
    )
    return out / "index.html"
