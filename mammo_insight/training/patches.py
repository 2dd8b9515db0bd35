"""Patch sampling and the patch classifier's training: lesion-centred and background patches cut from the
cache, one classifier per fold trained on the same engine as `train` (training/engine.py: Lightning,
atomic checkpoints, resume after a kill, seeding, device policy, mixed precision, DDP).

See :mod:`mammo_insight.runs.patch` for what a patch run is and how its models are read back.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mammo_insight.cohort.folds import assign_folds
from mammo_insight.errors import MammoInsightError
from mammo_insight.files import write_csv_atomic
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.runs.config import PatchConfig
from mammo_insight.runs.data import Transform, item_key, seeded_transform
from mammo_insight.runs.patch import build_patch_model, cut_patches, tissue_mask
from mammo_insight.runs.run_io import save_fold_model, save_run_config
from mammo_insight.training.augment import patch_augment
from mammo_insight.training.engine import (
    check_resumable,
    classifier_module,
    cpu_threads,
    fit_fold,
    fit_folds,
    lightning_device,
    make_loaders,
)
from mammo_insight.training.sampling import soft_labels

log = logging.getLogger(__name__)
PATCH_COLUMNS = ["image_id", "patient_id", "fold", "cx", "cy", "label", "kind"]


def sample_patches(
    cache_dir: Path, table: pd.DataFrame, lesions: pd.DataFrame, config: PatchConfig
) -> tuple[pd.DataFrame, np.ndarray]:
    """(patch table, patches) for the rows of ``table`` (cache index rows with a ``fold`` column)."""
    rng = np.random.default_rng(config.seed)
    size = config.patch_size
    lesions_of = annotations.by_image(lesions)
    n_lesions = sum(len(lesions_of.get(str(i), ())) for i in table["image_id"])
    if n_lesions == 0:
        raise MammoInsightError(
            f"{cache_dir}: no annotated lesion on any trainable image; the patch classifier learns from "
            "lesion annotations (circles, boxes or masks in annotations.parquet)"
        )
    n_background = int(np.ceil(config.background_ratio * config.lesion_patches * n_lesions))
    per_image = np.full(len(table), n_background // len(table))
    per_image[rng.permutation(len(table))[: n_background % len(table)]] += 1
    rows, pixels = [], []
    for row, n_bg in zip(table.to_dict("records"), per_image, strict=True):
        image = load_cache_image(cache_dir, row)
        own = lesions_of.get(str(row["image_id"]))
        centres, kinds = [], []
        if own is not None:
            for lesion in own.itertuples():
                shift = rng.uniform(-config.jitter, config.jitter, size=(config.lesion_patches, 2)) * size
                centres.extend(np.array([lesion.cache_x, lesion.cache_y]) + shift)
                kinds += ["lesion"] * config.lesion_patches
        allowed = tissue_mask(image, config.tissue_level)
        if own is not None:
            allowed &= ~annotations.cache_lesion_mask(own, image.shape, cache_dir, tolerance=size / 2)
        ys, xs = np.nonzero(allowed)
        if len(xs) and n_bg:
            pick = rng.choice(len(xs), size=int(n_bg), replace=len(xs) < n_bg)
            centres.extend(np.stack([xs[pick], ys[pick]], axis=1).astype(float))
            kinds += ["background"] * int(n_bg)
        if not centres:
            continue
        xy = np.asarray(centres, dtype=np.float64)
        pixels.append(cut_patches(image, xy[:, 0], xy[:, 1], size))
        for (cx, cy), kind in zip(xy, kinds, strict=True):
            rows.append(
                {
                    "image_id": str(row["image_id"]),
                    "patient_id": str(row["patient_id"]),
                    "fold": int(row["fold"]),
                    "cx": float(cx),
                    "cy": float(cy),
                    "label": 1.0 if kind == "lesion" else 0.0,
                    "kind": kind,
                }
            )
    return pd.DataFrame(rows, columns=PATCH_COLUMNS), np.concatenate(pixels).astype(np.float32)


def patch_folds(table: pd.DataFrame, config: PatchConfig) -> pd.DataFrame:
    """The training table with the whole-image folds (same function, table, k and seed as `train`)."""
    return table.assign(fold=assign_folds(table, config.folds, config.seed, config.label_column).to_numpy())


class PatchDataset(Dataset):
    """Cut patches -> {"image": 1xPxP, "label", "row"}; keys are an index or (index, augmentation seed),
    so an item's augmentation depends only on (seed, epoch, item), as for the cache datasets."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, transform: Transform | None = None):
        self.pixels = pixels
        self.labels = np.asarray(labels, dtype=np.float32)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = item_key(key)
        image = torch.from_numpy(self.pixels[i]).unsqueeze(0)
        return {
            "image": seeded_transform(self.transform, image, seed).contiguous(),
            "label": torch.tensor(self.labels[i]),
            "row": torch.tensor(i),
        }


def train_patch_folds(
    out_dir: Path, values: dict[str, Any], patches: pd.DataFrame, pixels: np.ndarray, config: PatchConfig
) -> bool:
    """One patch classifier per fold on the shared engine (training/engine.py), resuming an interrupted run.

    Writes ``values`` to PATCHRUN/config.json first (a rerun with other settings is refused), then per fold
    folds/fold_<k>/model.pt and history.csv (its presence marks the fold done); Lightning's checkpoints
    live in checkpoints/fold_<k>/ until then. Returns False on a DDP rank other than 0.
    """
    check_resumable(out_dir, values, PatchConfig())
    save_run_config(out_dir, values)

    def done(fold: int) -> bool:
        fold_dir = out_dir / "folds" / f"fold_{fold}"
        return (fold_dir / "history.csv").is_file() and (fold_dir / "model.pt").is_file()

    with cpu_threads(config):
        return fit_folds(
            config.folds,
            done,
            lambda fold: train_patch_fold(out_dir, patches, pixels, config, fold),
            out_dir / "checkpoints",
        )


def train_patch_fold(
    out_dir: Path, patches: pd.DataFrame, pixels: np.ndarray, config: PatchConfig, fold: int
) -> bool:
    """Fold ``fold``'s patch classifier, trained on the other folds' patches and validated on its own."""
    train = (patches["fold"] != fold).to_numpy()
    pl.seed_everything(config.seed + fold, workers=True, verbose=False)
    accelerator, _ = lightning_device(config)
    hard = patches.loc[train, "label"].to_numpy(np.float32)
    train_ds = PatchDataset(
        pixels[train], soft_labels(hard, config.positive_label), patch_augment(config.augment)
    )
    val_ds = PatchDataset(pixels[~train], patches.loc[~train, "label"].to_numpy(np.float32))
    loaders = make_loaders(train_ds, val_ds, hard, config, accelerator=accelerator)
    module = classifier_module(build_patch_model(config), config, hard, accelerator)
    ckpt_dir = out_dir / "checkpoints" / f"fold_{fold}"
    fit = fit_fold(module, loaders, config, ckpt_dir, seed=config.seed + fold, fold=fold)
    if fit is None:
        return False
    save_fold_model(out_dir, fold, fit.model)
    write_csv_atomic(out_dir / "folds" / f"fold_{fold}" / "history.csv", fit.history)  # marks it done
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("fold %d: trained on %d patches", fold, int(train.sum()))
    return True
