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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammo_insight.cohort.folds import assign_folds
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import load_cache_image, recorded_image_size
from mammo_insight.models.factory import build_classifier, input_normalization
from mammo_insight.models.run_io import save_torch
from mammo_insight.sizes import SEED_MAX

log = logging.getLogger(__name__)
PATCH_COLUMNS = ["image_id", "patient_id", "fold", "cx", "cy", "label", "kind"]


@dataclass(frozen=True)
class PatchConfig:
    """How patches are sampled and the patch classifier trained (written to PATCHRUN/config.json)."""

    patch_size: int = 32  # cache pixels, square
    lesion_patches: int = 4  # jittered patches per annotated lesion
    jitter: float = 0.25  # of the patch size, each axis
    background_ratio: float = 3.0  # background patches per lesion patch
    tissue_level: float = 0.05  # cache intensity above which a pixel is breast tissue
    model: str = "resnet10t"
    pretrained: bool = False
    weights: str | None = None
    normalize: bool = True  # the backbone's pretrained mean/std, as `train` does
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    folds: int = 5
    seed: int = 0
    label_column: str = "cancer"
    device: str = "auto"
    map_stride: int = 0  # lesion-map stride in cache pixels; 0: a quarter of the patch size

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in {
                "patch_size": 8 <= self.patch_size <= 4096,
                "lesion_patches": 1 <= self.lesion_patches <= 10_000,
                "jitter": 0 <= self.jitter <= 0.5,
                "background_ratio": 0 < self.background_ratio <= 1000,  # NaN and inf fail these too
                "tissue_level": 0 <= self.tissue_level < 1,
                "lr": 0 < self.lr <= 10,
                "weight_decay": 0 <= self.weight_decay <= 10,
                "seed": 0 <= self.seed <= SEED_MAX,
                "epochs": self.epochs >= 1,
                "batch_size": self.batch_size >= 1,
                "folds": self.folds >= 2,
                "map_stride": self.map_stride >= 0,
            }.items()
            if not ok
        ]
        if problems:
            raise MammoInsightError(f"patch options out of range: {', '.join(problems)}")

    @property
    def stride(self) -> int:
        return self.map_stride or max(1, self.patch_size // 4)

    @property
    def normalization(self) -> tuple[float, float] | None:
        return input_normalization(self.model) if self.normalize else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        np.stack([padded[y : y + size, x : x + size] for x, y in zip(x0, y0)])
        if len(x0)
        else np.zeros((0, size, size), np.float32)
    )


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


def build_patch_model(config: PatchConfig) -> nn.Module:
    return build_classifier(
        config.model,
        weights=config.weights,
        pretrained=config.pretrained,
        img_size=(config.patch_size, config.patch_size),
        normalization=config.normalization,
    )


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


def save_patch_model(model: nn.Module, path: Path) -> None:
    from mammo_insight.files import atomic_write

    atomic_write(path, lambda tmp: save_torch(model.state_dict(), tmp))


def load_patch_model(path: Path, config: PatchConfig, device: torch.device) -> nn.Module:
    model = build_classifier(
        config.model, img_size=(config.patch_size, config.patch_size), normalization=config.normalization
    )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def _recorded_config(patch_run: Path) -> dict[str, Any]:
    """PATCHRUN/config.json as written by `patch-train`, or a one-line error naming the file."""
    import json

    config_file = Path(patch_run) / "config.json"
    if not config_file.is_file():
        raise MammoInsightError(f"{config_file} not found: is {patch_run} a folder written by `patch-train`?")
    return json.loads(config_file.read_text())


def patch_run_cache(patch_run: Path) -> Path:
    """The cache a patch run was trained on, as its config.json records it."""
    recorded = _recorded_config(patch_run)
    if not recorded.get("cache"):
        raise MammoInsightError(
            f"{Path(patch_run) / 'config.json'} names no cache: give the cache explicitly"
        )
    return Path(recorded["cache"])


def read_patch_config(patch_run: Path) -> PatchConfig:
    """The PatchConfig a patch run was trained with (what its fold models need to be rebuilt and slid)."""
    from dataclasses import fields

    recorded = _recorded_config(patch_run)
    return PatchConfig(**{f.name: recorded[f.name] for f in fields(PatchConfig) if f.name in recorded})


def check_patch_run(
    patch_run: Path, *, model_name: str, normalize: bool, folds: int, seed: int, label: str
) -> None:
    """Refuse, before any fold trains, a patch run that is not this run's twin.

    Another model or normalisation cannot load; other folds, seed or label would hand fold k a patch
    model that trained on fold k's women.
    """
    recorded = _recorded_config(patch_run)
    if recorded.get("model") != model_name or bool(recorded.get("normalize", True)) != normalize:
        raise MammoInsightError(
            f"{patch_run} holds {recorded.get('model')} patch models (normalize={recorded.get('normalize')}); "
            f"this run builds {model_name} (normalize={normalize}): use the same model"
        )
    wanted = {"folds": folds, "seed": seed, "label_column": label}
    differ = [f"{k} {recorded.get(k)!r} there, {v!r} here" for k, v in wanted.items() if recorded.get(k) != v]
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
    Runs recorded before ``cache_size`` are compared through the cache they name, when it is still there.
    """
    recorded = _recorded_config(patch_run)
    theirs = recorded.get("cache_size")
    if theirs is None and recorded.get("cache"):
        theirs = recorded_image_size(recorded["cache"])
    mine = recorded_image_size(cache_dir)
    if theirs is None or mine is None or list(theirs) == list(mine):
        return None
    return (
        f"{patch_run} was trained on {theirs[0]}x{theirs[1]} cache images, {cache_dir} holds "
        f"{mine[0]}x{mine[1]}: its {recorded.get('patch_size')}-pixel patches would cover another "
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
