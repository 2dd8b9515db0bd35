"""Torch datasets over the image cache: one image per item (single view) or one breast per item.

Items carry a label and a row index back into the table, so predictions map to image_id,
breast_id and patient_id. Augmentation is seeded per item (see ``EpochSampler``): the same
(seed, epoch, index) always gives the same augmented image, whatever the worker layout, which
is what makes a resumed training end where an uninterrupted one ends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mammo_insight.imaging.cache import load_cache_image

Transform = Callable[[torch.Tensor], torch.Tensor]
VIEW_ORDER = {"CC": 0, "MLO": 1}
# A row from another cache (training on several sources) names its cache here; cache_path is relative to it.
CACHE_ROOT = "cache_root"


def breast_table(table: pd.DataFrame, max_views: int, label_column: str = "cancer") -> pd.DataFrame:
    """One row per breast: its image rows (CC first, then MLO, then the rest; at most max_views), label, patient."""
    ordered = table.assign(_order=table["view"].map(VIEW_ORDER).fillna(len(VIEW_ORDER)))
    ordered = ordered.sort_values(["breast_id", "_order", "image_id"], kind="stable")
    rows = ordered.reset_index().groupby("breast_id", sort=False)
    out = pd.DataFrame(
        {
            "patient_id": rows["patient_id"].first(),
            "rows": rows["index"].agg(lambda s: list(s)[:max_views]),
            label_column: rows[label_column].max(),  # a breast is positive when any of its images is
        }
    )
    return out.reset_index()


def seeded_transform(transform: Transform | None, image: torch.Tensor, item_seed: int | None) -> torch.Tensor:
    """``transform(image)`` drawn from torch's generator seeded by the item's seed (None: no augmentation)."""
    if transform is None or item_seed is None:
        return image
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only (what the transforms draw from): torch.manual_seed would also queue a
        # seeding of every lazy CUDA/XPU/MTIA device, recording a stack trace each time (ms per item)
        torch.default_generator.manual_seed(item_seed)
        return transform(image)


def item_key(key: int | tuple[int, int]) -> tuple[int, int | None]:
    """(index, augmentation seed or None) from a sampler key (``EpochSampler`` yields pairs)."""
    return (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)


class CacheImageDataset(Dataset):
    """One cached image -> (tensor 1xHxW, label, row). Keys are an index or (index, augmentation seed).

    Images are read from `cache_dir`, or from the row's own ``cache_root`` when the table has that column.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        table: pd.DataFrame,
        transform: Transform | None = None,
        label_column: str = "cancer",
        *,
        labels: np.ndarray | None = None,
        size: tuple[int, int] | None = None,
    ):
        self.cache_dir = Path(cache_dir)
        self.size = tuple(size) if size is not None else None
        self.table = table.reset_index(drop=True)
        self.paths = self.table["cache_path"].tolist()
        self.roots = (
            [Path(r) if isinstance(r, str) else self.cache_dir for r in self.table[CACHE_ROOT]]
            if CACHE_ROOT in self.table
            else None
        )
        self.labels = (
            np.asarray(labels, dtype=np.float32)
            if labels is not None
            else self.table[label_column].fillna(0).to_numpy(np.float32)
        )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.table)

    def image(self, i: int) -> torch.Tensor:
        root = self.cache_dir if self.roots is None else self.roots[i]
        image = torch.from_numpy(load_cache_image(root, self.paths[i])).unsqueeze(0)
        if self.size is not None and tuple(image.shape[-2:]) != self.size:
            image = torch.nn.functional.interpolate(
                image[None], size=self.size, mode="bilinear", antialias=True, align_corners=False
            )[0]
        return image

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = item_key(key)
        return {
            "image": seeded_transform(self.transform, self.image(i), seed),
            "label": torch.tensor(self.labels[i]),
            "row": torch.tensor(i),
        }


class CacheBreastDataset(Dataset):
    """One breast -> (views Vx1xHxW zero-padded to max_views, mask V, label, row).

    A breast with one view, or more views than max_views, works: absent slots are masked.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        table: pd.DataFrame,
        transform: Transform | None = None,
        label_column: str = "cancer",
        *,
        max_views: int = 4,
        labels: np.ndarray | None = None,
        size: tuple[int, int] | None = None,
    ):
        self.images = CacheImageDataset(cache_dir, table, None, label_column, size=size)
        self.breasts = breast_table(self.images.table, max_views, label_column)
        self.labels = (
            np.asarray(labels, dtype=np.float32)
            if labels is not None
            else self.breasts[label_column].fillna(0).to_numpy(np.float32)
        )
        self.transform = transform
        self.max_views = max_views

    def __len__(self) -> int:
        return len(self.breasts)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = item_key(key)
        rows = self.breasts.at[i, "rows"]
        views = [
            seeded_transform(self.transform, self.images.image(r), None if seed is None else seed + k)
            for k, r in enumerate(rows)
        ]
        stack = torch.zeros((self.max_views, *views[0].shape), dtype=views[0].dtype)
        stack[: len(views)] = torch.stack(views)
        mask = torch.zeros(self.max_views, dtype=torch.bool)
        mask[: len(views)] = True
        return {"image": stack, "mask": mask, "label": torch.tensor(self.labels[i]), "row": torch.tensor(i)}
