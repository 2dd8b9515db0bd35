"""The patch classifier: lesion-centred and background patches cut from the cache, one small CNN per fold.

Why patches: a whole-image CNN fine-tuned on a few hundred films sees one label per film; a patch model
sees every annotated lesion several times (jittered) against many background crops of the same films,
and its scores slid over a film are a lesion map that can be checked against the annotations directly
(the first stage of the NYU screening classifier's recipe).

Sampling (cache pixels, one seeded generator): for each annotated lesion ``lesion_patches`` centres at
its centre plus a uniform jitter of up to ``jitter`` x ``patch_size`` on each axis (label 1); then
``background_ratio`` times as many background centres (label 0), spread evenly over all images (normal
and abnormal), drawn from breast tissue (cache pixel above ``tissue_level``) at least half a patch away
from every lesion, so that a background patch never holds a lesion's centre. Patches are cut with zero
padding where they cross the canvas edge, exactly like the padding the cache already has.

Folds are the whole-image folds: ``cohort.folds.assign_folds`` on the same training table (the ok cache
rows with a label), the same k and seed, so a woman's patches validate in the fold where her films do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.cache import recorded_image_size
from mammo_insight.runs.config import PatchConfig
from mammo_insight.runs.spec import RunSpec

log = logging.getLogger(__name__)


def tissue_mask(image: np.ndarray, level: float) -> np.ndarray:
    """Breast tissue in a cache image: above ``level`` (the cache is 0 outside the breast and in padding)."""
    return np.asarray(image) > level


def cut_patches(image: np.ndarray, cx: np.ndarray, cy: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size) float32 patches centred at (cx, cy) cache pixels; zero where they leave the canvas."""
    half = size // 2
    padded = np.pad(np.asarray(image, dtype=np.float32), size, mode="constant")
    x0 = np.rint(np.asarray(cx, dtype=np.float64)).astype(int) - half + size
    y0 = np.rint(np.asarray(cy, dtype=np.float64)).astype(int) - half + size
    x0 = np.clip(x0, 0, padded.shape[1] - size)
    y0 = np.clip(y0, 0, padded.shape[0] - size)
    return (
        np.stack([padded[y : y + size, x : x + size] for x, y in zip(x0, y0, strict=True)])
        if len(x0)
        else np.zeros((0, size, size), np.float32)
    )


def build_patch_model(config: PatchConfig) -> nn.Module:
    """A patch classifier as a fold starts it (the recipe's pretrained weights, if any)."""
    return RunSpec.patch(config, image_size=None).build_model(initial=True)


@torch.no_grad()
def score_patches(
    model: nn.Module, patches: np.ndarray, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """Probability of 'lesion' per patch."""
    model.eval()
    out = [
        torch.sigmoid(model(batch.to(device)).float()).cpu().numpy()
        for batch in patch_batches(patches, batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def patch_batches(patches: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """(n, P, P) patches as (B, 1, P, P) tensors, ``batch_size`` at a time: what a patch model takes."""
    for start in range(0, len(patches), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(patches[start : start + batch_size])).unsqueeze(1)


def load_patch_model(path: Path, config: PatchConfig, device: torch.device) -> nn.Module:
    model = RunSpec.patch(config, image_size=None).build_model()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def patch_spec(patch_run: Path) -> RunSpec:
    """PATCHRUN/config.json as a patch run's spec, or a one-line error naming the file."""
    config_file = Path(patch_run) / "config.json"
    if not config_file.is_file():
        raise MammoInsightError(f"{config_file} not found: is {patch_run} a folder written by `patch-train`?")
    spec = RunSpec.read(patch_run)
    if spec.kind != "patch":
        raise MammoInsightError(f"{patch_run} is a {spec.kind} run, not a folder written by `patch-train`")
    return spec


def patch_run_cache(patch_run: Path) -> Path:
    """The cache a patch run was trained on, as its config.json records it."""
    spec = patch_spec(patch_run)
    if not spec.cache:
        raise MammoInsightError(
            f"{Path(patch_run) / 'config.json'} names no cache: give the cache explicitly"
        )
    return Path(spec.cache)


def read_patch_config(patch_run: Path) -> PatchConfig:
    """The PatchConfig a patch run was trained with (what its fold models need to be rebuilt and slid)."""
    return patch_spec(patch_run).recipe


def check_patch_run(
    patch_run: Path, *, model_name: str, normalize: bool, folds: int, seed: int, label: str
) -> None:
    """Refuse, before any fold trains, a patch run that is not this run's twin.

    Another model or normalisation cannot load; other folds, seed or label would hand fold k a patch
    model that trained on fold k's women.
    """
    spec = patch_spec(patch_run)
    theirs_normalize = spec.normalization is not None
    if spec.backbone != model_name or theirs_normalize != normalize:
        raise MammoInsightError(
            f"{patch_run} holds {spec.backbone} patch models (normalize={theirs_normalize}); "
            f"this run builds {model_name} (normalize={normalize}): use the same model"
        )
    wanted = {
        "folds": (spec.folds, folds),
        "seed": (spec.seed, seed),
        "label_column": (spec.label_column, label),
    }
    differ = [f"{k} {there!r} there, {here!r} here" for k, (there, here) in wanted.items() if there != here]
    if differ:
        raise MammoInsightError(
            f"{patch_run} was trained on other folds ({'; '.join(differ)}): its fold models would have "
            "seen this run's validation women; use the same --folds, --seed and label"
        )
    missing = [k for k in range(folds) if not (patch_run / "folds" / f"fold_{k}" / "model.pt").is_file()]
    if missing:
        raise MammoInsightError(f"{patch_run} has no patch model for fold(s) {', '.join(map(str, missing))}")


def patch_scale_mismatch(patch_run: Path, cache_dir: Path) -> str | None:
    """Why ``patch_run``'s patches would have another scale on ``cache_dir``'s images, or None.

    A patch is a fixed number of cache pixels, so a lesion of the same size covers another share of
    it on a cache of another resolution: the patch classifier would be slid at a scale it never saw.
    (Runs recorded before ``cache_size`` are read through the cache they name, when it is still there:
    ``spec.upgrade``.)
    """
    spec = patch_spec(patch_run)
    theirs, mine = spec.image_size, recorded_image_size(cache_dir)
    if theirs is None or mine is None or list(theirs) == list(mine):
        return None
    return (
        f"{patch_run} was trained on {theirs[0]}x{theirs[1]} cache images, {cache_dir} holds "
        f"{mine[0]}x{mine[1]}: its {spec.input_size[0]}-pixel patches would cover another "
        "share of each lesion"
    )


def init_from_patch_run(model: nn.Module, patch_run: Path, fold: int) -> None:
    """Load fold ``fold``'s patch classifier (backbone and head) into a whole-image single-view model.

    The backbone is convolutional, so the weights learnt on patches apply to the whole image; the fold
    must be the same fold (the patch model of fold k never saw fold k's women, and the folds are shared).
    ``check_patch_run`` has refused another architecture; the load is strict, never partial, except for
    a pooling head (option ``pool``), which the patch model has not and which starts fresh: the patch
    head then scores the pooled cells (with ``attention``, the weighted mean of the cells' features).
    """
    weights = patch_run / "folds" / f"fold_{fold}" / "model.pt"
    missing, unexpected = model.load_state_dict(
        torch.load(weights, map_location="cpu", weights_only=True), strict=False
    )
    missing = [k for k in missing if not k.startswith("pool.")]
    if missing or unexpected:
        raise MammoInsightError(
            f"{weights} does not load into the whole-image model: missing {missing}, unexpected {unexpected}"
        )
    log.info("fold %d: initialised from the patch classifier %s", fold, weights)
