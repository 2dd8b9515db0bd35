"""Patch sampling and the patch classifier's training: lesion-centred and background patches cut from the cache.

See :mod:`mammo_insight.runs.patch` for what a patch run is and how its models are read back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammo_insight.cohort.folds import assign_folds
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.runs.patch import PatchConfig, build_patch_model, cut_patches, tissue_mask

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
    for row, n_bg in zip(table.to_dict("records"), per_image):
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
        for (cx, cy), kind in zip(xy, kinds):
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


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips and quarter turns: a lesion has no up or left."""
    out = batch
    if torch.rand(1, generator=generator).item() < 0.5:
        out = out.flip(-1)
    if torch.rand(1, generator=generator).item() < 0.5:
        out = out.flip(-2)
    if torch.rand(1, generator=generator).item() < 0.5:
        out = out.transpose(-1, -2)
    return out


def train_patch_model(
    patches: np.ndarray, labels: np.ndarray, config: PatchConfig, device: torch.device
) -> tuple[nn.Module, list[float]]:
    """One fold's patch classifier (BCE weighted negatives/positives, Adam, cosine); returns it and its losses."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_patch_model(config).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(patches).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.float32))
    n_pos = float(y.sum())
    pos_weight = torch.tensor((len(y) - n_pos) / max(n_pos, 1.0), device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * int(np.ceil(len(y) / config.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, steps))
    losses = []
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            batch = _augment(x[idx], generator).to(device)
            loss = loss_fn(model(batch), y[idx].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        losses.append(total / len(y))
    return model.eval(), losses


def save_patch_model(model: nn.Module, path: Path) -> None:
    from mammo_insight.files import atomic_write

    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))
