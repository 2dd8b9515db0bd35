"""`TrainedRun`: a training run folder opened, the one way every stage reads what `train` wrote.

A run folder (see :mod:`mammo_insight.runs.run_io` for the files) holds one model per fold. Evaluate,
embed, explain and predict all open it with ``TrainedRun.open(run_dir)`` and ask it for its config, its
folds, a fold's model (the only code in the package that loads fold models), its tuned thresholds, the
preprocessing its images went through, and the ensemble of its fold models on a cache
(``ensemble_predict``: every fold model scores the rows and the probabilities are averaged, since no
fold model saw those images and none is preferred). A folder written by `ensemble` opens as an
``runs.ensemble.EnsembleRun``, whose fold models average its member runs' fold models.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.cache import CONFIG_FILE
from mammo_insight.imaging.pipeline import PreprocessConfig
from mammo_insight.metrics import thresholds_of
from mammo_insight.nets.factory import build_classifier
from mammo_insight.runs.predict import predict_cache
from mammo_insight.runs.run_io import fold_model_path, load_oof, load_run_config, load_weights

log = logging.getLogger(__name__)


def _fold_of(path: Path) -> int | None:
    try:
        return int(path.parent.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class TrainedRun:
    """A run folder: ``config`` (config.json), ``folds`` (those with a saved model, ascending)."""

    root: Path
    config: Mapping[str, Any] = field(repr=False)
    folds: tuple[int, ...]

    @classmethod
    def open(cls, run_dir: str | Path) -> TrainedRun:
        """Open RUN: its config.json must exist and at least one fold must have a model."""
        root = Path(run_dir)
        config = load_run_config(root)
        if "ensemble_of" in config:  # written by `ensemble`: its fold models are the members'
            from mammo_insight.runs.ensemble import EnsembleRun

            return EnsembleRun.from_folder(root, config)
        found = (_fold_of(p) for p in (root / "folds").glob("fold_*/model.pt"))
        folds = tuple(sorted(k for k in found if k is not None))
        if not folds:
            raise MammoInsightError(f"{root} has no trained fold model (folds/fold_<k>/model.pt)")
        if "model" not in config:
            raise MammoInsightError(f"{root / 'config.json'} names no 'model'")
        return cls(root, config, folds)

    # what the run was trained as
    @property
    def model_name(self) -> str:
        return str(self.config["model"])

    @property
    def view_mode(self) -> str:
        return str(self.config.get("view_mode", "single"))

    @property
    def multi_view(self) -> bool:
        return self.view_mode == "multi"

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the model input, or None when config.json does not record it."""
        size = self.config.get("image_size")
        return (int(size[0]), int(size[1])) if size else None

    @property
    def normalization(self) -> tuple[float, float] | None:
        """(mean, std) the run's models normalise their input with; None for runs made before it existed."""
        mean, std = self.config.get("input_mean"), self.config.get("input_std")
        return (float(mean), float(std)) if mean is not None and std is not None else None

    @property
    def pool(self) -> str:
        """How its models pool the feature map; runs made before the option used the backbone's average."""
        return str(self.config.get("pool", "avg"))

    @property
    def max_views(self) -> int:
        return int(self.config.get("max_views", 4))

    @property
    def label_column(self) -> str:
        return str(self.config.get("label_column", "cancer"))

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    def refuse_ensemble(self, what: str) -> None:
        """Stop `what` (embed, explain, CAMs) on an ensemble folder, which has no single model's layers."""

    # decisions
    def thresholds(self) -> dict[str, float]:
        """Level -> operating threshold tuned on the out-of-fold predictions (metrics.json, else config.json)."""
        path = self.root / "metrics.json"
        found = thresholds_of(json.loads(path.read_text())) if path.is_file() else {}
        return dict(found or self.config.get("thresholds") or {})

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
        settings = self.config.get("preprocess")
        cache = self.config.get("cache")
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
        """The eval-mode classifier of one fold, rebuilt from config.json and its state dict (weights_only)."""
        path = fold_model_path(self.root, fold)
        if fold not in self.folds or not path.is_file():
            raise MammoInsightError(
                f"{self.root}: fold {fold} has no model ({path} missing); folds with a model: "
                f"{list(self.folds)}"
            )
        model = build_classifier(
            self.model_name,
            self.view_mode,
            img_size=self.image_size,
            normalization=self.normalization,
            pool=self.pool,
        )
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

    def score(
        self,
        model: nn.Module,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """(image predictions, breast predictions or None) of one of this run's models on cache rows, read as
        the run reads its input (view mode, image size, views per breast, label column)."""
        return predict_cache(
            model,
            cache_dir,
            rows,
            self.view_mode,
            image_size=self.image_size,
            batch_size=batch_size,
            max_views=self.max_views,
            device=device,
            label_column=self.label_column,
        )

    def ensemble_predict(
        self,
        cache_dir: str | Path,
        rows: pd.DataFrame,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """(image predictions, breast predictions or None) of cache rows: the mean of every fold model's probability.

        Multi-view runs score breasts (the image rows carry their breast's probability). Rows without the
        run's label column get it empty.
        """
        label = self.label_column
        rows = rows.assign(**{label: np.nan}) if label not in rows else rows
        image_probs, breast_probs = [], []
        images = breasts = None
        for fold, model in self.models(device):
            log.info("fold %d model scores %d images of %s", fold, len(rows), cache_dir)
            images, breasts = self.score(model, cache_dir, rows, device=device, batch_size=batch_size)
            image_probs.append(images["prob"].to_numpy())
            if breasts is not None:
                breast_probs.append(breasts["prob"].to_numpy())
        images["prob"] = np.mean(image_probs, axis=0)
        if breasts is not None:
            breasts["prob"] = np.mean(breast_probs, axis=0)
        return images, breasts
