"""`PatchRun`: a `patch-train` folder opened as a run like any other.

Its fold models are patch classifiers (``spec.input_size`` is the patch); they read a film by sliding over
its breast tissue at the run's stride (``runs.tiles.slide``), on the film at the cache size the run was
trained on (``spec.image_size``; a film of another size is resized to it first, so a lesion keeps the
scale the patches had). What a reader gets:

- film score (``prob``): the maximum of the film's lesion map, as in its out-of-fold predictions;
  ``prob_learned`` beside it where the run fitted its learned pooling (``runs.map_pooling``): fold k's
  logistic regression, recorded in metrics.json, over the map statistics of fold k's model;
- embedding: the mean over the film's tissue tiles of the patch model's pooled backbone features
  (``runs.tiles.tile_features``), and as its logit the logit of the film score;
- breast rows: none of its own (readers take the mean of a breast's films, as for single-view runs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from mammo_insight.errors import MammoInsightError
from mammo_insight.runs.base import Predictions, RunFolder, prob_logit, saved_folds
from mammo_insight.runs.config import PatchConfig
from mammo_insight.runs.data import CacheImageDataset
from mammo_insight.runs.map_pooling import map_statistics, pooled_probability
from mammo_insight.runs.predict import CONTEXT_COLUMNS, ID_COLUMNS
from mammo_insight.runs.spec import RunSpec
from mammo_insight.runs.tiles import LesionMap, slide, tile_features

log = logging.getLogger(__name__)


def slide_film(model: nn.Module, image: np.ndarray, recipe: PatchConfig, device: torch.device) -> LesionMap:
    """One cache image's lesion map at the recipe's patch size, stride and tissue level: how patch-train
    scores its folds and how every reader of the run slides again."""
    return slide(
        model,
        image,
        patch_size=recipe.patch_size,
        stride=recipe.stride,
        tissue_level=recipe.tissue_level,
        device=device,
    )


@dataclass(frozen=True)
class PatchRun(RunFolder):
    """A `patch-train` folder; ``pooling``: fold -> its learned pooling fit (empty when none was recorded)."""

    pooling: dict[str, dict[str, Any]] | None = None

    @classmethod
    def open(cls, run_dir: str | Path, spec: RunSpec | None = None) -> PatchRun:
        root = Path(run_dir)
        spec = spec or RunSpec.read(root)
        if spec.kind != "patch":
            raise MammoInsightError(f"{root} is a {spec.kind} run, not a patch run")
        return cls(root, spec, saved_folds(root), _recorded_pooling(root))

    # how the run slides
    @property
    def stride(self) -> int:
        return int(self.spec.recipe.stride)

    def slide(self, model: nn.Module, image: np.ndarray, device: Any = "cpu") -> LesionMap:
        """One film's lesion map by one of the run's patch models (or a random twin)."""
        return slide_film(model, image, self.spec.recipe, torch.device(device))

    def films(self, cache_dir: str | Path, rows: pd.DataFrame) -> CacheImageDataset:
        """The rows' films as the run reads them: at its training cache size (resized when they differ)."""
        return CacheImageDataset(cache_dir, rows, labels=np.zeros(len(rows)), size=self.image_size)

    # readers' protocol
    @torch.inference_mode()
    def score(
        self,
        model: nn.Module,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        *,
        device: Any = "cpu",
        batch_size: int = 32,
        fold: int | None = None,
    ) -> Predictions:
        """Each film's score by one patch model: ``prob`` the max of its map, the map statistics, and with
        ``fold`` (the model's fold) ``prob_learned`` when that fold's pooling was recorded."""
        rows = rows.reset_index(drop=True)
        films = self.films(cache_dir, rows)
        keep = [c for c in ID_COLUMNS + CONTEXT_COLUMNS + [self.label_column] if c in rows]
        images = rows[keep].copy()
        maps = [self.slide(model, films.image(i)[0].numpy(), device) for i in range(len(rows))]
        stats = pd.DataFrame([map_statistics(m.cells) for m in maps], index=images.index)
        images["prob"] = [m.score for m in maps]
        fit = (self.pooling or {}).get(str(fold))
        if fit is not None and "centre" in fit:
            images["prob_learned"] = pooled_probability(stats, fit)
        return images, None

    @torch.inference_mode()
    def embed(
        self,
        model: nn.Module,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        *,
        device: Any = "cpu",
        batch_size: int = 256,
        workers: int = 0,
    ) -> np.ndarray:
        """(n, D + 1): the mean of each film's tissue-tile features, then the logit of its film score (the
        max over its tiles: the map's max). A film without tissue gets zeros and the logit of 0.
        ``batch_size`` tiles go through the model at a time; ``workers`` processes read the films."""
        recipe, device = self.spec.recipe, torch.device(device)
        films = DataLoader(self.films(cache_dir, rows), batch_size=None, num_workers=workers)
        out = np.zeros((len(rows), model.embedding_dim + 1), np.float32)
        for i, item in enumerate(films):
            features, logits = tile_features(
                model,
                item["image"][0].numpy(),
                patch_size=recipe.patch_size,
                stride=self.stride,
                tissue_level=recipe.tissue_level,
                device=device,
                batch_size=batch_size,
            )
            score = float(1 / (1 + np.exp(-logits.max()))) if len(logits) else 0.0
            if len(features):
                out[i, :-1] = features.mean(axis=0)
            out[i, -1] = prob_logit(score)
        return out


def _recorded_pooling(root: Path) -> dict[str, dict[str, Any]]:
    """metrics.json's learned pooling fits per fold ({} for a run that recorded none)."""
    path = root / "metrics.json"
    if not path.is_file():
        return {}
    recorded = json.loads(path.read_text()).get("learned_pooling") or {}
    return dict(recorded.get("coefficients") or {})
