"""`train_folds`: k-fold whole-image training on a cache, writing each fold's folder.

Per fold, the shared engine (training/engine.py: Lightning's Trainer) owns the loop: checkpoint and
resume (RUN/checkpoints/fold_<k>/last.ckpt), early stopping, mixed precision, DDP. The chosen checkpoint is exported
with ``run_io.save_fold_model`` and scores the fold's validation patients (out-of-fold predictions).
A fold whose predictions exist is skipped, and an unfinished fold resumes from its last checkpoint,
so rerunning an interrupted command finishes the run. A finished fold's Lightning checkpoints (weights
plus optimizer state, about three times the model) are deleted: folds/fold_<k>/model.pt is what stays.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd

from mammo_insight.cohort.folds import assign_folds, fold_split
from mammo_insight.files import write_csv_atomic
from mammo_insight.imaging.cache import CONFIG_FILE, INDEX_FILE
from mammo_insight.imaging.pipeline import PreprocessConfig
from mammo_insight.manifest import file_sha256, package_versions
from mammo_insight.runs.config import TrainConfig
from mammo_insight.runs.data import CacheBreastDataset, CacheImageDataset
from mammo_insight.runs.patch import check_patch_run, init_from_patch_run, patch_scale_mismatch
from mammo_insight.runs.predict import Reading, predict_cache
from mammo_insight.runs.run_io import save_fold_model, save_run_config
from mammo_insight.runs.spec import RunSpec
from mammo_insight.training.augment import build_augment
from mammo_insight.training.engine import (
    check_resumable,
    classifier_module,
    cpu_threads,
    fit_fold,
    fit_folds,
    lightning_device,
    make_loaders,
)
from mammo_insight.training.lightning_module import ClassifierModule
from mammo_insight.training.sampling import soft_labels
from mammo_insight.training.sources import SOURCE_COLUMN, external_name, load_sources

log = logging.getLogger(__name__)


def resolved_config(config: TrainConfig, cache_dir: Path, table: pd.DataFrame) -> dict[str, Any]:
    """config.json: the run's spec (every option plus the image size, normalisation, cache copy) and what
    the run depends on (cache hash, versions, counts)."""
    cache_config = cache_dir / CONFIG_FILE
    preprocess = json.loads(cache_config.read_text()) if cache_config.is_file() else None
    size = config.image_size
    if size is None:  # the cache's config.json says how it was made; the index only for old caches
        size = (
            PreprocessConfig.from_dict(preprocess).size
            if preprocess
            else (int(table["out_height"].iloc[0]), int(table["out_width"].iloc[0]))
        )
    facts = {
        "cache_index_sha256": file_sha256(cache_dir / INDEX_FILE),
        "versions": package_versions(),
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()),
    }
    # the cache's config.json copied verbatim, so predict can preprocess new images the same way once the
    # cache is gone
    spec = RunSpec.cnn(config, image_size=size, preprocess=preprocess, cache=str(cache_dir), facts=facts)
    return spec.to_dict()


def _datasets(
    cache_dir: Path, train: pd.DataFrame, val: pd.DataFrame, config: TrainConfig, *, size: tuple[int, int]
) -> tuple[Any, Any]:
    augment = build_augment(config.augment)
    if config.view_mode == "single":
        train_ds = CacheImageDataset(cache_dir, train, augment, config.label_column, size=size)
        val_ds = CacheImageDataset(cache_dir, val, None, config.label_column, size=size)
    else:
        train_ds = CacheBreastDataset(
            cache_dir, train, augment, config.label_column, max_views=config.max_views, size=size
        )
        val_ds = CacheBreastDataset(
            cache_dir, val, None, config.label_column, max_views=config.max_views, size=size
        )
    return train_ds, val_ds


def make_module(
    config: TrainConfig, size: tuple[int, int], hard_labels: np.ndarray, accelerator: str
) -> ClassifierModule:
    """The whole-image classifier in its LightningModule (engine.classifier_module: loss, channels_last)."""
    model = RunSpec.cnn(config, image_size=size).build_model(initial=True)
    return classifier_module(model, config, hard_labels, accelerator)


def train_fold(
    cache_dir: Path,
    out_dir: Path,
    table: pd.DataFrame,
    folds: pd.Series,
    *,
    fold: int,
    config: TrainConfig,
    size: tuple[int, int],
) -> bool:
    """Train one fold on the engine (resuming from its last checkpoint), export its chosen model, score its
    validation rows into folds/fold_<k>/oof.csv. False on a DDP rank other than 0."""
    train_idx, val_idx = fold_split(table, folds, fold)
    train, val = table.loc[train_idx], table.loc[val_idx]
    log.info("fold %d: %d training and %d validation images", fold, len(train), len(val))
    pl.seed_everything(config.seed + fold, workers=True, verbose=False)
    accelerator, _ = lightning_device(config)
    train_ds, val_ds = _datasets(cache_dir, train, val, config, size=size)
    hard = train_ds.labels.copy()
    train_ds.labels = soft_labels(hard, config.positive_label)
    loaders = make_loaders(train_ds, val_ds, hard, config, accelerator=accelerator)
    module = make_module(config, size, hard, accelerator)
    if config.init_patch_run:
        init_from_patch_run(module.model, Path(config.init_patch_run), fold)
    ckpt_dir = out_dir / "checkpoints" / f"fold_{fold}"
    fit = fit_fold(module, loaders, config, ckpt_dir, seed=config.seed + fold, fold=fold)
    if fit is None:
        return False
    save_fold_model(out_dir, fold, fit.model)
    images, breasts = predict_cache(
        fit.model.to(fit.device),
        cache_dir,
        val,
        Reading(config.view_mode, size, config.max_views, config.label_column),
        batch_size=config.batch_size,
        device=fit.device,
    )
    fold_dir = out_dir / "folds" / f"fold_{fold}"
    write_csv_atomic(fold_dir / "history.csv", fit.history)
    for frame in (images, breasts):
        if frame is not None:
            frame.insert(frame.columns.get_loc("patient_id") + 1, "fold", fold)
    if breasts is not None:
        write_csv_atomic(fold_dir / "oof_breast.csv", breasts)
    write_csv_atomic(fold_dir / "oof.csv", images)  # written last: its presence marks the fold done
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # a done fold is never resumed
    return True


def _read_fold(fold_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    ids = {"image_id": str, "breast_id": str, "patient_id": str}
    images = pd.read_csv(fold_dir / "oof.csv", dtype=ids)
    breast_path = fold_dir / "oof_breast.csv"
    return images, pd.read_csv(breast_path, dtype=ids) if breast_path.is_file() else None


@dataclass(frozen=True)
class FoldOutputs:
    """What the folds left: each fold's out-of-fold rows and history, the table and folds they came from."""

    table: pd.DataFrame
    folds: pd.Series
    values: dict[str, Any]
    images: list[pd.DataFrame]
    breasts: list[pd.DataFrame | None]
    history: list[pd.DataFrame]


def train_folds(
    cache_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    external_caches: Sequence[str | Path] = (),
    external_positives_only: bool = False,
) -> FoldOutputs | None:
    """Train every fold (resuming what an interrupted run left, skipping finished folds).

    `external_caches`: more caches whose rows only train (see `load_sources`). Returns None on a DDP rank
    other than 0: it trains every fold with rank 0, which writes the files.
    """
    config = config or TrainConfig()
    cache_dir, out_dir = Path(cache_dir), Path(out_dir)
    with cpu_threads(config):
        external = [Path(p) for p in external_caches]
        table = load_sources(cache_dir, external, config.label_column, positives_only=external_positives_only)
        values = resolved_config(config, cache_dir, table)
        if external:
            values["external_positives_only"] = external_positives_only
            values["external_caches"] = [
                {
                    "name": external_name(k),
                    "cache": str(path),
                    "cache_index_sha256": file_sha256(path / INDEX_FILE),
                    "n_images": int((table[SOURCE_COLUMN] == external_name(k)).sum()),
                }
                for k, path in enumerate(external, start=1)
            ]
        return _train_folds(cache_dir, out_dir, config, table, values)


def _train_folds(
    cache_dir: Path, out_dir: Path, config: TrainConfig, table: pd.DataFrame, values: dict[str, Any]
) -> FoldOutputs | None:
    size = tuple(values["image_size"])
    check_resumable(out_dir, values, TrainConfig())
    if config.init_patch_run:
        check_patch_run(
            Path(config.init_patch_run),
            model_name=config.model,
            normalize=config.normalize,
            folds=config.folds,
            seed=config.seed,
            label=config.label_column,
        )
        scale = patch_scale_mismatch(Path(config.init_patch_run), cache_dir)
        if scale:
            log.warning("%s; fine-tuning starts from features learnt at another scale", scale)
    save_run_config(out_dir, values)
    folds = assign_folds(table, config.folds, config.seed, config.label_column)

    def done(fold: int) -> bool:
        fold_dir = out_dir / "folds" / f"fold_{fold}"
        return (fold_dir / "oof.csv").is_file() and (fold_dir / "model.pt").is_file()

    def train(fold: int) -> bool:
        return train_fold(cache_dir, out_dir, table, folds, fold=fold, config=config, size=size)

    if not fit_folds(config.folds, done, train, out_dir / "checkpoints"):
        return None
    images, breasts, history = [], [], []
    for fold in range(config.folds):
        fold_dir = out_dir / "folds" / f"fold_{fold}"
        image_rows, breast_rows = _read_fold(fold_dir)
        images.append(image_rows)
        breasts.append(breast_rows)
        history.append(pd.read_csv(fold_dir / "history.csv"))
    return FoldOutputs(table, folds, values, images, breasts, history)
