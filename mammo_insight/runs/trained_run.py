"""`CnnRun`: a whole-image run folder written by `train`, opened.

A run folder (see :mod:`mammo_insight.runs.run_io` for the files) holds one model per fold. Each fold
model reads the whole film resized to the run's image size (one image, or a breast's stacked views for a
multi-view run); ``ensemble_predict`` averages every fold model's probability, since no fold model saw new
images and none is preferred. Readers open any run with ``runs.open.open_run``; ``CnnRun.open`` refuses a
folder of another kind, so a patch run can never be read as a whole-image one.
"""

from __future__ import annotations

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
from mammo_insight.runs.base import Predictions, RunFolder, saved_folds
from mammo_insight.runs.data import CacheImageDataset
from mammo_insight.runs.predict import Reading, predict_cache
from mammo_insight.runs.spec import RunSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CnnRun(RunFolder):
    """A `train` folder: ``spec`` (config.json), ``folds`` (those with a saved model, ascending)."""

    @classmethod
    def open(cls, run_dir: str | Path, spec: RunSpec | None = None) -> CnnRun:
        """Open RUN: a cnn run's config.json, and at least one fold with a model."""
        root = Path(run_dir)
        spec = spec or RunSpec.read(root)
        if spec.kind != "cnn":
            raise MammoInsightError(
                f"{root} is a {spec.kind} run, not a whole-image (cnn) run: open it with runs.open.open_run"
            )
        return cls(root, spec, saved_folds(root))

    def score(
        self,
        model: nn.Module,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        fold: int | None = None,
    ) -> Predictions:
        """(image predictions, breast predictions or None) of one of this run's models on cache rows, read as
        the run reads its input (view mode, image size, views per breast, label column); a whole-image
        model scores alike whatever its ``fold``."""
        return predict_cache(
            model,
            cache_dir,
            rows,
            Reading(self.view_mode, self.image_size, self.max_views, self.label_column),
            batch_size=batch_size,
            device=device,
        )

    @torch.inference_mode()
    def embed(
        self,
        model: nn.Module,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        *,
        device: Any = "cpu",
        batch_size: int = 32,
        workers: int = 0,
    ) -> np.ndarray:
        """(n, D + 1): each image's embedding by the model (a multi-view model sees it as a one-view stack),
        then the model's own logit on it (its head is linear on the embedding)."""
        dataset = CacheImageDataset(cache_dir, rows, labels=np.zeros(len(rows)), size=self.image_size)
        out = []
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers):
            x = batch["image"].to(device)
            emb = model.embed(x.unsqueeze(1)) if self.multi_view else model.embed(x)
            out.append(torch.cat([emb, model.head(emb)], dim=1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
