"""`Run`: what every kind of run offers its readers, and `RunFolder`, the part every kind shares.

A reader (evaluate, embed, explain, predict, ensemble, compare, the shift check) asks a run for its spec,
its folds, its out-of-fold predictions, its thresholds, its preprocessing, its fold models, and how those
models score, embed and (for explain) map a film. Each kind answers in its own way: a cnn run's model
reads the whole (resized) film; a patch run slides its patch model over the film's tissue (film score:
the map's max; embedding: the mean of the tiles' features); an ensemble averages its members.
``runs.open.open_run`` returns the right kind for a folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.cache import CONFIG_FILE
from mammo_insight.imaging.pipeline import PreprocessConfig
from mammo_insight.metrics import thresholds_of
from mammo_insight.runs.run_io import fold_model_path, load_oof, load_weights
from mammo_insight.runs.spec import RunSpec

log = logging.getLogger(__name__)
Predictions = tuple[pd.DataFrame, pd.DataFrame | None]  # (image rows, breast rows or None)
PROB_EPS = 1e-7  # how far from 0 and 1 a probability is clipped before its logit


def prob_logit(prob: float | np.ndarray) -> np.ndarray:
    """The logit of probabilities, clipped PROB_EPS from 0 and 1 so that a certain score stays finite."""
    p = np.clip(np.asarray(prob, dtype=np.float64), PROB_EPS, 1 - PROB_EPS)
    return np.log(p / (1 - p))


class Run(Protocol):
    """Every kind of run, as its readers see it."""

    root: Path
    spec: RunSpec
    folds: tuple[int, ...]

    def thresholds(self) -> dict[str, float]: ...
    def threshold(self, level: str) -> float: ...
    def preprocess(self) -> dict[str, Any]: ...
    def preprocess_config(self) -> PreprocessConfig: ...
    def oof(self) -> pd.DataFrame: ...
    def model(self, fold: int, device: str | torch.device = "cpu") -> nn.Module: ...
    def models(self, device: str | torch.device = "cpu") -> Iterator[tuple[int, nn.Module]]: ...
    def refuse_ensemble(self, what: str) -> None: ...

    def score(
        self,
        model: nn.Module,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        *,
        device: Any,
        batch_size: int,
        fold: int | None = None,
    ) -> Predictions:
        """One fold model's predictions on cache rows, read as the run reads its input; ``fold``, the
        model's fold, for what the run recorded per fold (a patch run's learned pooling)."""

    def ensemble_predict(
        self, cache_dir: str | Path, rows: pd.DataFrame, device: Any = "cpu", batch_size: int = 32
    ) -> Predictions:
        """Every fold model's predictions on cache rows, averaged (no fold model saw new images)."""

    def embed(
        self,
        model: nn.Module,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        *,
        device: Any,
        batch_size: int,
        workers: int = 0,
    ) -> np.ndarray:
        """(n, D + 1) per image row: one fold model's embedding of the film, then its logit of the film."""


def fold_of(path: Path) -> int | None:
    try:
        return int(path.parent.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return None


def saved_folds(root: Path) -> tuple[int, ...]:
    """The folds with a saved model (folds/fold_<k>/model.pt), ascending; an error when there is none."""
    found = (fold_of(p) for p in (root / "folds").glob("fold_*/model.pt"))
    folds = tuple(sorted(k for k in found if k is not None))
    if not folds:
        raise MammoInsightError(f"{root} has no trained fold model (folds/fold_<k>/model.pt)")
    return folds


@dataclass(frozen=True)
class RunFolder:
    """A run folder: its spec (config.json) and the folds with a saved model."""

    root: Path
    spec: RunSpec
    folds: tuple[int, ...]

    # what the run is, from its spec
    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def model_name(self) -> str:
        return self.spec.backbone

    @property
    def view_mode(self) -> str:
        return self.spec.view_mode

    @property
    def multi_view(self) -> bool:
        return self.spec.multi_view

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the films the run reads."""
        return self.spec.image_size

    @property
    def normalization(self) -> tuple[float, float] | None:
        return self.spec.normalization

    @property
    def pool(self) -> str:
        return self.spec.pool

    @property
    def max_views(self) -> int:
        return self.spec.max_views

    @property
    def label_column(self) -> str:
        return self.spec.label_column

    @property
    def seed(self) -> int:
        return self.spec.seed

    def refuse_ensemble(self, what: str) -> None:
        """Stop `what` (embed, explain, CAMs) on an ensemble folder, which has no single model's layers."""

    # decisions
    def thresholds(self) -> dict[str, float]:
        """Level -> operating threshold tuned on the out-of-fold predictions (metrics.json, else config.json)."""
        path = self.root / "metrics.json"
        found = thresholds_of(json.loads(path.read_text())) if path.is_file() else {}
        return dict(found or self.spec.thresholds)

    def threshold(self, level: str) -> float:
        """One level's threshold; a clear error when the run has none (an unfinished run)."""
        thresholds = self.thresholds()
        if level not in thresholds:
            raise MammoInsightError(
                f"{self.root}: no {level}-level threshold in metrics.json or config.json; "
                "is the training run finished?"
            )
        return float(thresholds[level])

    # preprocessing
    def preprocess(self) -> dict[str, Any]:
        """How the run's images were made (its copy of the cache's config.json), as a dict.

        config.json ``preprocess``, else the training cache's config.json if it still exists, else the
        preprocess defaults at the run's image size (with a warning).
        """
        settings = self.spec.preprocess
        cache = self.spec.cache
        if not settings and cache and (Path(cache) / CONFIG_FILE).is_file():
            settings = json.loads((Path(cache) / CONFIG_FILE).read_text())
        if not settings:
            if self.image_size is None:
                raise MammoInsightError(
                    f"{self.root}/config.json records neither its preprocessing nor an image_size"
                )
            log.warning(
                "%s records no preprocessing and its training cache %s is gone: using the preprocess "
                "defaults at size %sx%s",
                self.root,
                cache,
                *self.image_size,
            )
            settings = {"size": list(self.image_size)}
        return dict(settings)

    def preprocess_config(self) -> PreprocessConfig:
        """`preprocess()` as the imaging pipeline's PreprocessConfig."""
        return PreprocessConfig.from_dict(self.preprocess())

    # models
    def model(self, fold: int, device: str | torch.device = "cpu") -> nn.Module:
        """The eval-mode network of one fold: ``spec.build_model()`` and its state dict (weights_only)."""
        path = fold_model_path(self.root, fold)
        if fold not in self.folds or not path.is_file():
            raise MammoInsightError(
                f"{self.root}: fold {fold} has no model ({path} missing); folds with a model: "
                f"{list(self.folds)}"
            )
        model = self.spec.build_model()
        model.load_state_dict(load_weights(path))
        return model.to(device).eval()

    def models(self, device: str | torch.device = "cpu") -> Iterator[tuple[int, nn.Module]]:
        """(fold, model) for every fold, one model in memory at a time."""
        for fold in self.folds:
            model = self.model(fold, device)
            yield fold, model
            del model

    def oof(self) -> pd.DataFrame:
        """The out-of-fold predictions; ``fold`` says which model never saw each patient."""
        return load_oof(self.root)

    def ensemble_predict(
        self,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> Predictions:
        """(image predictions, breast predictions or None) of cache rows: the mean of every fold model's
        scores (no fold model saw these images and none is preferred). Multi-view runs score breasts (the
        image rows carry their breast's probability); rows without the run's label column get it empty."""
        label = self.label_column
        rows = rows.assign(**{label: np.nan}) if label not in rows else rows
        parts = []
        for fold, model in self.models(device):
            log.info("%s: fold %d's model scores %d images of %s", self.root, fold, len(rows), cache_dir)
            parts.append(self.score(model, cache_dir, rows, device=device, batch_size=batch_size, fold=fold))
        return mean_predictions(parts)


def mean_predictions(parts: list[Predictions]) -> Predictions:
    """The mean of several scorings of the same rows: image probabilities (and every other ``prob*`` column
    that every part has; one some parts lack, such as a patch run's learned pooling recorded for some folds,
    is left out) row by row, breast probabilities breast by breast when every part has breasts."""
    shared = set.intersection(*(set(p[0].columns) for p in parts))
    images = parts[0][0][[c for c in parts[0][0] if c in shared or not c.startswith("prob")]].copy()
    for column in [c for c in images if c.startswith("prob")]:
        images[column] = np.mean([p[0][column].to_numpy() for p in parts], axis=0)
    if any(p[1] is None for p in parts):
        return images, None
    breasts = parts[0][1].copy()
    breasts["prob"] = np.mean([p[1]["prob"].to_numpy() for p in parts], axis=0)
    return images, breasts
