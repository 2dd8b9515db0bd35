"""Lesion maps: the patch classifier slid over the breast, an explanation by construction.

Patch centres lie on a grid of ``stride`` cache pixels; only centres on breast tissue are scored (the
rest of the map is 0, like a CAM outside the crop). Each score is painted over its stride x stride
cell, so the map lives on the cache canvas and goes back to the original mammogram through the same
``CacheGeometry.heatmap_to_original`` as Grad-CAM, and is checked by the same ``checks.map_checks``
(pointing game, energy inside, chance levels, the random-weight twin). Its maximum is also the
simplest whole-image score a patch model gives: max pooling over the breast.

``PatchRunMaps`` brings a `patch-train` run's fold models into `explain`, so each gallery film's lesion
map (from the fold model that never saw that woman) stands beside its Grad-CAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammo_insight.cohort.folds import fold_mismatch
from mammo_insight.errors import MammoInsightError
from mammo_insight.explain import checks, mapping
from mammo_insight.imaging import annotations
from mammo_insight.imaging.geometry import CacheGeometry
from mammo_insight.runs.patch import (
    build_patch_model,
    cut_patches,
    load_patch_model,
    patch_batches,
    read_patch_config,
    score_patches,
    tissue_mask,
)


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


def randomisation_rank_corr(lesion_map: LesionMap, random_map: LesionMap) -> float:
    """Spearman correlation of the two maps over the tissue cells only.

    Both maps are 0 off the tissue, so a correlation over the whole canvas rewards the shared support
    (0.80 on the synthetic films, 0.54-0.69 on mini-MIAS) rather than what the model learnt.
    """
    return checks.rank_correlation(lesion_map.cells, random_map.cells)


def lesion_map_record(
    lesion_map: LesionMap,
    random_map: LesionMap,
    lesion_rows: pd.DataFrame,
    geom: CacheGeometry,
    cache_dir: Path,
    *,
    stride: int,
    tolerance: float = 0.0,
) -> dict[str, float]:
    """The Grad-CAM checks of one lesion map (and its random twin) against the image's lesions."""
    full = geom.heatmap_to_original(lesion_map.heatmap)
    full_rand = geom.heatmap_to_original(random_map.heatmap)
    cell = float(0.5 * np.hypot(stride, stride) / np.sqrt(geom.scale_x * geom.scale_y))
    record = checks.map_checks(
        full,
        full_rand,
        annotations.lesion_masker(lesion_rows, geom, cache_dir),
        mapping.support_mask(geom),
        tolerance=tolerance,
        cell=cell,
    )
    record["rank_corr"] = randomisation_rank_corr(lesion_map, random_map)
    return record


class PatchRunMaps:
    """A `patch-train` run's fold models slid over the films `explain` shows, with a random-weight twin.

    Film of fold k, patch model of fold k: ``check_folds`` refuses a patch run whose folds differ from
    the explained run's, because its fold model could then have trained on that woman's lesions.
    """

    def __init__(self, patch_run: Path, device: torch.device, seed: int):
        self.root = Path(patch_run)
        self.config = read_patch_config(self.root)
        self.device = device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.random = build_patch_model(self.config).to(device).eval()
        self._fold: int | None = None
        self._model: nn.Module | None = None

    def check_folds(self, oof: pd.DataFrame, run_dir: Path) -> None:
        """Every image of ``oof`` must be validated in the same fold by the patch run, with a fold model."""
        path = self.root / "oof_predictions.csv"
        if not path.is_file():
            raise MammoInsightError(f"{path} not found: is {self.root} a folder written by `patch-train`?")
        theirs = pd.read_csv(path, dtype={"image_id": str, "patient_id": str})
        mine = oof[["patient_id", "image_id", "fold"]].drop_duplicates("image_id")
        mine = mine.astype({"patient_id": str, "image_id": str})
        problem = fold_mismatch(
            mine, theirs[theirs["image_id"].isin(mine["image_id"])], names=(str(run_dir), str(self.root))
        )
        if problem:
            raise MammoInsightError(
                f"{self.root} was trained on other folds than {run_dir} ({problem}): its fold models could have "
                "seen the women they would map; use a patch run with the same --folds, --seed and label"
            )
        missing = sorted(int(k) for k in mine["fold"].unique() if not self._weights(int(k)).is_file())
        if missing:
            raise MammoInsightError(
                f"{self.root} has no patch model for fold(s) {', '.join(map(str, missing))}"
            )

    def _weights(self, fold: int) -> Path:
        return self.root / "folds" / f"fold_{fold}" / "model.pt"

    def maps(self, fold: int, image: np.ndarray) -> tuple[LesionMap, LesionMap]:
        """(fold model's map, random twin's map) of one cache image."""
        if fold != self._fold:
            self._model = load_patch_model(self._weights(fold), self.config, self.device)
            self._fold = fold
        options = {
            "patch_size": self.config.patch_size,
            "stride": self.config.stride,
            "tissue_level": self.config.tissue_level,
            "device": self.device,
        }
        return slide(self._model, image, **options), slide(self.random, image, **options)
