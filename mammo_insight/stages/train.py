"""`train`: k-fold CNN training on an image cache, writing a run directory.

The per-fold work (Lightning: checkpoints, resume, early stopping, mixed precision, DDP) lives in
mammo_insight.training.loop and writes RUN/folds/fold_<k>/ as each fold finishes, so an interrupted
run resumes. This stage then writes the run-level files: out-of-fold predictions, history, thresholds,
metrics with intervals, the baselines every model is judged against, the manifest, and the report.
With ``external_caches`` (``--external-cache``) other caches' rows train only (training/sources.py) and
RUN/shift.json holds the dataset-shift check where the sources meet (fusion/shift.py).

    from mammo_insight.stages import train
    result = train.run_train(train.TrainStageConfig(cache=Path("cache"), out=Path("runs/r18"),
                                                    options=TrainConfig(model="resnet18", epochs=4)))
    train.write_train(result, Path("runs/r18"))        # result.metrics, result.oof; renders its headline in Jupyter
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.cohort.folds import folds_record
from mammo_insight.files import write_csv_atomic
from mammo_insight.fusion.shift import shift_check, shift_headline
from mammo_insight.imaging.cache import INDEX_FILE, load_cache_image
from mammo_insight.metrics import (
    ThresholdRule,
    aggregate_to_breast,
    evaluate_predictions,
    save_metrics_json,
    thresholds_of,
)
from mammo_insight.metrics.baselines import PIXEL_SIZE, downsample, evaluate_baselines
from mammo_insight.nets.device import resolve_device
from mammo_insight.runs import run_figures
from mammo_insight.runs.config import TrainConfig
from mammo_insight.runs.predict import cache_features
from mammo_insight.runs.run_io import save_run_config
from mammo_insight.runs.run_report import SHIFT_FILE, render_run_report, run_headline
from mammo_insight.runs.spec import RunSpec
from mammo_insight.runs.trained_run import CnnRun
from mammo_insight.stages.base import StageResult, finish_stage, working_folder
from mammo_insight.training.loop import FoldOutputs, train_folds
from mammo_insight.training.sources import source_films

log = logging.getLogger(__name__)
HISTORY_COLUMNS = ["fold", "epoch", "split", "loss", "pf1", "roc_auc", "balanced_accuracy", "lr"]


@dataclass(frozen=True)
class TrainStageConfig:
    """The cache to train on, the run folder (rerun the same config to resume it), and the training options."""

    cache: Path
    out: Path
    options: TrainConfig = field(default_factory=TrainConfig)
    external_caches: tuple[Path, ...] = ()  # train-only rows from other caches, never validated or scored
    external_positives_only: bool = False  # of those, only the positives (the studies' recipe)


@dataclass(frozen=True)
class TrainResult(StageResult):
    """Every fold's out-of-fold predictions joined, with metrics and baselines."""

    config: TrainStageConfig
    values: dict[str, Any]  # config.json: every option plus what the run depends on
    oof: pd.DataFrame  # one row per scored image: fold, prob, label, metadata
    oof_breasts: pd.DataFrame | None  # multi-view runs: the model's own breast-level output
    history: pd.DataFrame
    metrics: dict[str, Any]
    baselines: dict[str, Any]
    shift: dict[str, Any] | None = None  # the dataset-shift check of a run with external caches
    writer: bool = True  # False on a DDP worker rank: its processes trained, global rank 0 writes the run
    stage = "train"
    title = "CNN training"

    @classmethod
    def of_worker_rank(cls, config: TrainStageConfig) -> TrainResult:
        """What a DDP worker rank holds once the folds are trained: nothing to write or show."""
        empty = pd.DataFrame()
        return cls(config, {}, empty, None, empty, {}, {}, writer=False)

    @property
    def out(self) -> Path:
        return self.config.out

    def headline(self) -> dict[str, str]:
        if not self.writer:
            return {}
        return {**run_headline(self.metrics), **shift_headline(self.shift)}

    def figures(self) -> list[tuple[Callable[[], Any], str]]:
        label = self.values["label_column"]
        oof = self.oof if label == "cancer" else self.oof.drop(columns=["cancer"], errors="ignore")
        labelled = oof[oof[label].notna()].rename(columns={label: "cancer"})
        levels = {"image": labelled, "breast": aggregate_to_breast(labelled, "mean")}
        return [(lambda: run_figures.roc_pr_curves(levels), "Out-of-fold ROC and precision-recall curves")]


def cache_pixels(cache_dir: Path, table: pd.DataFrame, size: tuple[int, int] = PIXEL_SIZE) -> np.ndarray:
    """The cached images of `table`'s rows, downsampled for the pixel baseline: (n, h, w) float32."""
    h, w = size
    rows = [downsample(load_cache_image(cache_dir, row)[None], size)[0] for row in table.to_dict("records")]
    return np.stack(rows).reshape(len(rows), h, w) if rows else np.zeros((0, h, w), np.float32)


def frozen_features(cache_dir: Path, table: pd.DataFrame, spec: RunSpec) -> np.ndarray | None:
    """The pooled features of the run's pretrained backbone before any training (None without one).

    The backbone is loaded exactly as the folds start (``spec.build_model(initial=True)``: same weights,
    normalisation, input size), so the frozen-feature baseline is what those weights give with a linear
    model on top and nothing learned.
    """
    recipe = spec.recipe
    if not (recipe.pretrained or recipe.weights):
        return None
    log.info("frozen-feature baseline: %d images through the pretrained %s", len(table), spec.backbone)
    device = resolve_device(recipe.device)
    return cache_features(
        spec.build_model(initial=True).to(device),
        cache_dir,
        table,
        image_size=spec.image_size,
        batch_size=recipe.batch_size,
        device=device,
    )


def _results(folds: FoldOutputs) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    oof = pd.concat(folds.images, ignore_index=True)
    breasts = [b for b in folds.breasts if b is not None]
    history = pd.concat(folds.history, ignore_index=True).reindex(columns=HISTORY_COLUMNS)
    return oof, (pd.concat(breasts, ignore_index=True) if breasts else None), history


def run_train(config: TrainStageConfig) -> TrainResult:
    """Train every fold (resuming what an interrupted run left); on a DDP worker rank an empty result."""
    folds = train_folds(
        config.cache,
        config.out,
        config.options,
        external_caches=config.external_caches,
        external_positives_only=config.external_positives_only,
    )
    if folds is None:
        return TrainResult.of_worker_rank(config)
    oof, oof_breasts, history = _results(folds)
    spec = RunSpec.from_dict(folds.values)
    label, seed = spec.label_column, spec.seed
    # thresholds tuned per level on these out-of-fold predictions; metrics.json says they are optimistic
    metrics = evaluate_predictions(
        oof,
        None,
        seed=seed,
        label=label,
        rule=ThresholdRule(spec.recipe.threshold_method, spec.recipe.target_sensitivity),
    )
    thresholds = thresholds_of(metrics)
    spec = spec.with_thresholds(thresholds)
    metrics["folds"] = folds_record(folds.table["patient_id"], folds.table[label], folds.folds, seed=seed)
    scored = folds.table.assign(fold=folds.folds)[folds.table["image_id"].isin(oof["image_id"])]
    baselines = evaluate_baselines(
        scored,
        cache_pixels(config.cache, scored),
        seed=seed,
        label=label,
        features=frozen_features(config.cache, scored, spec),
    )
    shift = dataset_shift(config, folds, spec) if config.external_caches else None
    return TrainResult(config, spec.to_dict(), oof, oof_breasts, history, metrics, baselines, shift)


def dataset_shift(config: TrainStageConfig, folds: FoldOutputs, spec: RunSpec) -> dict[str, Any]:
    """Where the home and the external caches meet: can the fold models tell the sources apart?"""
    run = CnnRun.open(config.out, spec)
    device = resolve_device(spec.recipe.device)
    films, features = source_films(
        run, config.cache, folds.table, folds.folds, device=device, batch_size=spec.recipe.batch_size
    )
    log.info(
        "dataset-shift check: %d home and %d external films",
        (films["source"] == "home").sum(),
        (films["source"] != "home").sum(),
    )
    note = (
        "External films train in every fold and are never validated: none is in oof_predictions.csv or the "
        "metrics above, which are the home dataset's alone. Here each external woman is scored by one fold "
        "model (all of them trained on her), so external figures are optimistic; home films are scored out "
        "of fold."
    )
    return shift_check(films, features, spec.thresholds["image"], note=note, seed=spec.seed)


def write_train(result: TrainResult, out: Path) -> Path:
    """The run-level files into the run folder, then the manifest, then RUN/index.html; returns the page.

    A DDP worker rank writes nothing: global rank 0 writes the run.
    """
    out = working_folder(result.out, out, "train")
    if not result.writer:
        return out / "index.html"
    write_csv_atomic(out / "oof_predictions.csv", result.oof)
    if result.oof_breasts is not None:
        write_csv_atomic(out / "oof_breast_predictions.csv", result.oof_breasts)
    write_csv_atomic(out / "history.csv", result.history)
    save_run_config(out, result.values)
    save_metrics_json(out / "metrics.json", result.metrics)
    save_metrics_json(out / "baselines.json", result.baselines)
    if result.shift is not None:
        save_metrics_json(out / SHIFT_FILE, result.shift)
    values = {k: v for k, v in result.values.items() if k != "versions"}
    finish_stage(
        out,
        result,
        values,
        seed=result.values["seed"],
        inputs={
            "cache_index": result.config.cache / INDEX_FILE,
            **{
                f"external_cache_index_{k}": p / INDEX_FILE
                for k, p in enumerate(result.config.external_caches, 1)
            },
        },
        render=lambda: render_run_report(out),
    )
    log.info("run written to %s", out)
    return out / "index.html"


def train_run(cache: str | Path, out: str | Path, options: TrainConfig | None = None) -> Path:
    """Train and write a run folder in one call, as the CLI does; returns the folder."""
    write_train(run_train(TrainStageConfig(Path(cache), Path(out), options or TrainConfig())), Path(out))
    return Path(out)
