"""A patch run's view of a film: its patch model slid over the breast tissue of a cache image.

Patch centres lie on a grid of ``stride`` cache pixels; only centres on breast tissue are scored (the
rest of the map is 0, like a CAM outside the crop). Each score is painted over its stride x stride
cell, so the map lives on the cache canvas. Its maximum is the simplest whole-image score a patch model
gives (max pooling over the breast: a patch run's film score), and the pooled backbone features of the
same tissue tiles are its film embedding. ``explain.lesion_map`` checks these maps against lesions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mammo_insight.runs.patch import cut_patches, patch_batches, score_patches, tissue_mask


@dataclass(frozen=True)
class LesionMap:
    """One image's patch scores on the cache canvas, its max-pooled score and the scores of its cells."""

    heatmap: np.ndarray  # (out_height, out_width) float32, probability of 'lesion', 0 off tissue
    score: float  # max over the scored centres (0.0 when no centre lies on tissue)
    cells: np.ndarray  # the scores of the tissue cells, one per scored centre (the pooling's inputs)


def grid_centres(shape: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(cx, cy) of the cells of a stride grid covering the canvas, row by row (cell centres, cache pixels)."""
    ys = np.arange(-(-shape[0] // stride)) * stride + stride / 2 - 0.5
    xs = np.arange(-(-shape[1] // stride)) * stride + stride / 2 - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def tissue_centres(tissue: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cx, cy, on) of the stride grid's cells; ``on``: the cell's centre pixel lies on ``tissue``."""
    h, w = tissue.shape
    cx, cy = grid_centres((h, w), stride)
    on = tissue[np.clip(np.rint(cy).astype(int), 0, h - 1), np.clip(np.rint(cx).astype(int), 0, w - 1)]
    return cx, cy, on


def slide(
    model: nn.Module,
    image: np.ndarray,
    *,
    patch_size: int,
    stride: int,
    tissue_level: float,
    device: torch.device,
) -> LesionMap:
    """The patch model over every tissue cell of one cache image."""
    h, w = image.shape
    tissue = tissue_mask(image, tissue_level)
    cx, cy, on = tissue_centres(tissue, stride)
    grid = np.zeros(len(cx), dtype=np.float32)
    if on.any():
        grid[on] = score_patches(model, cut_patches(image, cx[on], cy[on], patch_size), device)
    rows, cols = -(-h // stride), -(-w // stride)
    heat = np.kron(grid.reshape(rows, cols), np.ones((stride, stride), np.float32))[:h, :w]
    cells = grid[on]
    return LesionMap(np.ascontiguousarray(heat * tissue), float(cells.max()) if on.any() else 0.0, cells)


@torch.no_grad()
def tile_features(
    model: nn.Module,
    image: np.ndarray,
    *,
    patch_size: int,
    stride: int,
    tissue_level: float,
    device: torch.device,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, C), logits (n,)) of the tissue tiles ``slide`` scores, in its order: the patch model's
    pooled backbone features of each tile cut on its own (the instances of a multiple-instance head) and
    its head's logit on them (their sigmoid is ``slide``'s cells)."""
    cx, cy, on = tissue_centres(tissue_mask(image, tissue_level), stride)
    tiles = cut_patches(image, cx[on], cy[on], patch_size)
    features, logits = [], []
    model.eval()
    for batch in patch_batches(tiles, batch_size):
        embedded = model.embed(batch.to(device))
        features.append(embedded.float().cpu().numpy())
        logits.append(model.head(embedded).squeeze(-1).float().cpu().numpy())
    if not features:
        return np.zeros((0, model.embedding_dim), np.float32), np.zeros(0, np.float32)
    return np.concatenate(features), np.concatenate(logits)
