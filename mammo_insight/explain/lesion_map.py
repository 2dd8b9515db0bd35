"""Lesion maps as explanations: a patch run's maps (``runs.tiles.slide``) checked against the lesions.

A map lives on the cache canvas and goes back to the original mammogram through the same
``CacheGeometry.heatmap_to_original`` as Grad-CAM, and is checked by the same ``checks.map_checks``
(pointing game, energy inside, chance levels, the random-weight twin).

``PatchRunMaps`` brings a `patch-train` run's fold models into `explain`, so each gallery film's lesion
map (from the fold model that never saw that woman) stands beside its Grad-CAM.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Self

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammo_insight.cohort.folds import fold_mismatch
from mammo_insight.errors import MammoInsightError
from mammo_insight.explain import checks, mapping
from mammo_insight.explain.cam import CamResult
from mammo_insight.imaging import annotations
from mammo_insight.imaging.geometry import CacheGeometry
from mammo_insight.runs.base import prob_logit
from mammo_insight.runs.patch import build_patch_model, load_patch_model, read_patch_config
from mammo_insight.runs.patch_run import PatchRun
from mammo_insight.runs.tiles import LesionMap, slide


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


class LesionMapExplainer:
    """A patch run's model (a fold model or its random twin) as explain's map maker: each film's lesion map.

    It answers like ``cam.CamExplainer`` (maps on the model input canvas, the model's logit of each film,
    the map's grid), so explain checks and draws a patch run's maps exactly as it does a CNN's CAMs; the
    film's logit is that of its film score, the map's max.
    """

    def __init__(self, run: PatchRun, model: nn.Module, device: torch.device):
        self.run, self.model, self.device = run, model, device
        self.target = SimpleNamespace(name=f"lesion map (patch {run.spec.input_size}, stride {run.stride})")
        self.grid_shape: tuple[int, int] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: sliding sets no hooks."""

    def __call__(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> CamResult:
        maps = [self.run.slide(self.model, image[0].cpu().numpy(), self.device) for image in images]
        h, w = images.shape[-2:]
        self.grid_shape = (-(-h // self.run.stride), -(-w // self.run.stride))
        return CamResult(np.stack([m.heatmap for m in maps]), prob_logit([m.score for m in maps]))
