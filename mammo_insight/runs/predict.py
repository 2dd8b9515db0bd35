"""Score cache images with a trained classifier: image rows (and breast rows for multi-view models)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from mammo_insight.runs.data import CacheBreastDataset, CacheImageDataset

# Carried into prediction files so subgroup tables can be built from them.
CONTEXT_COLUMNS = ["view", "laterality", "age", "density", "site_id", "machine_id"]
ID_COLUMNS = ["image_id", "breast_id", "patient_id"]


@torch.inference_mode()
def _probs(model: nn.Module, loader: DataLoader, device: torch.device) -> np.ndarray:
    model.eval()
    out = []
    for batch in loader:
        image = batch["image"].to(device, non_blocking=True)
        logits = model(image, batch["mask"].to(device)) if "mask" in batch else model(image)
        out.append(torch.sigmoid(logits.float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    """How a run's models read a cache: one image or a breast's views, at what size, and the label column."""

    view_mode: str = "single"
    image_size: tuple[int, int] | None = None  # None: the cache's own size
    max_views: int = 4
    label_column: str = "cancer"


def predict_cache(
    model: nn.Module,
    cache_dir: str | Path,
    table: pd.DataFrame,
    reading: Reading,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(image predictions, breast predictions or None).

    Multi-view models score breasts; each image row then carries its breast's probability, so
    image-level consumers still work.
    """
    device = torch.device(device)
    label_column, size = reading.label_column, reading.image_size
    table = table.reset_index(drop=True)
    keep = [c for c in ID_COLUMNS + CONTEXT_COLUMNS if c in table] + [label_column]
    images = table[keep].copy()
    if reading.view_mode == "single":
        ds = CacheImageDataset(cache_dir, table, label_column=label_column, size=size)
        images["prob"] = _probs(model, DataLoader(ds, batch_size), device)
        return images, None
    ds = CacheBreastDataset(
        cache_dir, table, label_column=label_column, max_views=reading.max_views, size=size
    )
    breasts = ds.breasts[["breast_id", "patient_id", label_column]].copy()
    breasts["prob"] = _probs(model, DataLoader(ds, batch_size), device)
    images["prob"] = images["breast_id"].map(breasts.set_index("breast_id")["prob"])
    return images, breasts


@torch.inference_mode()
def cache_features(
    model: nn.Module,
    cache_dir: str | Path,
    table: pd.DataFrame,
    *,
    image_size: tuple[int, int] | None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(n, D): a single-view classifier's pooled features (``embed``) of every row's cached image."""
    device = torch.device(device)
    model.eval()
    ds = CacheImageDataset(
        cache_dir, table.reset_index(drop=True), size=image_size, labels=np.zeros(len(table))
    )
    out = [model.embed(batch["image"].to(device)).float().cpu() for batch in DataLoader(ds, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.embedding_dim), np.float32)
