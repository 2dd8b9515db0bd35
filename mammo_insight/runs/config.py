"""The training configuration: one frozen dataclass with defaults, overridable by a TOML file and CLI flags.

The resolved config is written to RUN/config.json, so a run can be rebuilt and resumed from it.
``PatchConfig`` (patch-train) is a ``TrainConfig`` with the patch recipe's defaults and the sampling
options added: both train on the same engine (training/engine.py) and pass the same validator.
How an option is declared, type-checked and range-checked lives in runs/options.py.
"""

from __future__ import annotations

import dataclasses
import operator
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.device import is_device_name
from mammo_insight.runs.options import (
    COUNT,
    MAX_IMAGE_SIDE,
    OPEN_UNIT,
    UNIT,
    Between,
    fits,
    option,
    out_of_range,
    toml_value,
    type_name,
)
from mammo_insight.sizes import SEED_MAX


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (the ``[augment]`` table); every transform is off at 0 (or False)."""

    hflip: float = option(0.5, "probability of a horizontal flip", UNIT)
    vflip: float = option(0.0, "probability of a vertical flip", UNIT)
    rotate_degrees: float = option(10.0, "rotation drawn from +-this many degrees", Between(0, 180))
    brightness: float = option(0.1, "brightness jitter (torchvision ColorJitter)", UNIT)
    contrast: float = option(0.1, "contrast jitter (torchvision ColorJitter)", UNIT)
    noise_std: float = option(0.0, "standard deviation of added Gaussian noise (image in [0, 1])", UNIT)
    zoom: float = option(0.0, "zoom drawn from 1 +- zoom (0.1: 90% to 110%)", Between(0, 1, hi_open=True))
    shift: float = option(0.0, "shift drawn from +-this fraction of the width and height", UNIT)
    erase_p: float = option(0.0, "probability of blanking one random box (random erasing)", UNIT)
    erase_scale: tuple[float, float] = option(
        (0.02, 0.1), "area range of that box, as fractions of the image", Between(0, 1, lo_open=True)
    )
    patch_drop_rate: float = option(
        0.0, "destructive patching: each cell of a patch_size grid is blanked with this probability", UNIT
    )
    patch_size: int = option(
        16, "side in pixels of the grid cells patch_drop_rate drops", Between(1, MAX_IMAGE_SIDE)
    )

    def __post_init__(self) -> None:
        if isinstance(self.erase_scale, list):  # config.json holds a list
            object.__setattr__(self, "erase_scale", tuple(self.erase_scale))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Field names are the TOML keys (augment is a table).

    Frozen: a changed setting is a new config (``dataclasses.replace``), validated on construction.
    """

    model: str = option("efficientnet_b0", "any timm model name, or small_cnn (from scratch)")
    view_mode: str = option("single", "single (one image per item) | multi (one breast per item)")
    image_size: tuple[int, int] | None = option(
        None, "(H, W) the images are resized to; none: the cache's size", Between(16, MAX_IMAGE_SIDE)
    )
    folds: int = option(5, "patient-grouped cross-validation folds", Between(2, 1000))
    epochs: int = option(10, "epochs per fold", Between(1, COUNT.hi))
    seed: int = option(0, "seed of folds, sampling, augmentation and initialisation", Between(0, SEED_MAX))
    batch_size: int = option(16, "images (single) or breasts (multi) per batch", Between(1, 65536))
    lr: float = option(3e-4, "AdamW learning rate", Between(0, 10, lo_open=True))
    weight_decay: float = option(1e-4, "AdamW weight decay", Between(0, 10))
    dropout: float = option(0.0, "dropout before the classifier head", Between(0, 1, hi_open=True))
    pool: str = option(
        "avg",
        "how the backbone's feature map becomes one vector (nets/pooling.py): avg (the backbone's global "
        "average) | max | gem (generalized mean, learned exponent) | attention (gated attention-MIL over the "
        "cells)",
    )
    schedule: str = option("cosine", "cosine | plateau (ReduceLROnPlateau on the monitored metric) | none")
    monitor: str = option(
        "pf1",
        "pf1 | auc | loss | balanced_accuracy (at 0.5): selects the fold checkpoint, drives plateau and early stop",
    )
    early_stopping_patience: int = option(0, "epochs without improvement before a fold stops; 0: off", COUNT)
    select_epoch: str = option(
        "best",
        "best (the monitored epoch: chosen on the fold it then scores, so its OOF figures lean optimistic) "
        "| last (the final epoch: no choice made on the scored fold)",
    )
    # imbalance remedies
    loss: str = option("bce", "bce | focal")
    focal_gamma: float = option(2.0, "focal loss gamma", Between(0, 10))
    focal_alpha: float | None = option(0.25, "focal loss alpha (weight of positives); none: unweighted", UNIT)
    pos_weight: float | str | None = option(
        None,
        'BCE weight of positives: a number, "auto" (negatives/positives) or none',
        Between(0, 1e6, lo_open=True),
    )
    sampler: str = option("none", "none | balanced (draw with replacement at target_pos_ratio)")
    target_pos_ratio: float = option(0.5, "positive fraction per epoch with the balanced sampler", OPEN_UNIT)
    undersample_negatives: float | None = option(
        None,
        "keep this fraction of negatives each epoch (sampler none); none: all",
        Between(0, 1, lo_open=True),
    )
    oversample_positives: int = option(1, "repeat each positive this many times per epoch", Between(1, 1000))
    positive_label: float = option(
        1.0, "label of positives (soft labels, e.g. 0.9)", Between(0, 1, lo_open=True)
    )
    warmup_epochs: int = option(
        0, "first epochs on a balanced subset drawn per breast, then the full data at real prevalence", COUNT
    )
    warmup_pos_ratio: float = option(0.5, "positive share (of breasts) in the warm-up subset", OPEN_UNIT)
    # transfer learning, by timm's parameter groups (nets/unfreeze.py)
    freeze_epochs: int = option(
        0,
        "epochs with the backbone frozen (head only); = epochs: only the head (and pool) ever trains",
        COUNT,
    )
    unfreeze_stages: int = option(
        1, "then the backbone's groups open top-down in this many steps, one per epoch", Between(1, 1000)
    )
    trainable_groups: int = option(
        0, "only the last N groups of the backbone ever train; 0: all", Between(0, 1000)
    )
    group_level: str = option("coarse", "coarse (stem, stages) | fine (blocks): timm's group_matcher")
    unfreeze_lr_scale: float = option(
        1.0, "LR factor of groups frozen at the first epoch (e.g. 0.1)", Between(0, 100, lo_open=True)
    )
    layer_decay: float = option(
        1.0,
        "layer-wise LR decay: each group gets lr * layer_decay ** (groups above it)",
        Between(0, 1, lo_open=True),
    )
    frozen_bn: str = option(
        "update",
        "update (BatchNorm layers of frozen groups still adapt their running statistics) | keep (they "
        "keep the pretrained statistics: eval mode while frozen)",
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"doc": "the [augment] table"})
    # multi-view
    max_views: int = option(
        4, "views per breast a multi-view model reads (extra views left out)", Between(1, 64)
    )
    # engine
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    precision: str = option(
        "auto", "auto (bf16/16-mixed on GPU, 32 on CPU) | 32-true | 16-mixed | bf16-mixed"
    )
    channels_last: bool = option(True, "channels_last memory layout (GPU, single view)")
    devices: int | str = option("auto", "Lightning devices (GPUs per node)", Between(1, 1024))
    num_nodes: int = option(1, "Lightning nodes", Between(1, 100_000))
    strategy: str = option("auto", "Lightning strategy, e.g. ddp")
    num_workers: int = option(0, "data loader worker processes", Between(0, 1024))
    cpu_threads: int | None = option(
        None, "torch intra-op threads on the CPU (1 is fastest on a shared machine)", Between(1, 1024)
    )
    weights: str | None = option(None, "local pretrained weights file")
    pretrained: bool = option(False, "ImageNet weights: pip-shipped (extra `pretrained`) or timm's cache/hub")
    normalize: bool = option(True, "(x - mean) / std with the backbone's pretrained mean and std")
    init_patch_run: str | None = option(
        None,
        "a patch-train folder: fold k starts from its fold-k patch model (single view, no other weights)",
    )
    threshold_method: str = option(
        "best_f1",
        "best_f1 | prevalence | sensitivity: how the operating threshold is tuned on OOF predictions",
    )
    target_sensitivity: float = option(
        0.9, "with threshold_method sensitivity: the highest cut reaching it", Between(0, 1, lo_open=True)
    )
    label_column: str = option("cancer", "cache index column holding the 0/1 label")

    def __post_init__(self) -> None:  # config.json gives lists and an [augment] dict: the declared types
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", _augment_of(type(self), self.augment, "[augment]"))
        if isinstance(self.image_size, list):
            object.__setattr__(self, "image_size", tuple(self.image_size))
        validate_config(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _redefault(name: str, default: Any, why: str) -> Any:
    """A TrainConfig option with another default in a specialisation (its documentation kept, `why` added)."""
    doc = TrainConfig.__dataclass_fields__[name].metadata["doc"]
    return option(default, f"{doc} ({why})")


PATCH_AUGMENT = AugmentConfig(hflip=0.5, vflip=0.5, rotate_degrees=0.0, brightness=0.0, contrast=0.0)


@dataclass(frozen=True)
class PatchConfig(TrainConfig):
    """patch-train's settings (PATCHRUN/config.json): the training options, read by the same engine, with the
    patch recipe's defaults where they differ, and how patches are sampled."""

    model: str = _redefault("model", "resnet10t", "patch-train: resnet10t")
    epochs: int = _redefault("epochs", 8, "patch-train: 8")
    batch_size: int = _redefault("batch_size", 64, "patch-train: 64 patches")
    lr: float = _redefault("lr", 1e-3, "patch-train: 1e-3")
    select_epoch: str = _redefault("select_epoch", "last", "patch-train: last")
    pos_weight: float | str | None = _redefault("pos_weight", "auto", "patch-train: auto, balanced BCE")
    augment: AugmentConfig = field(
        default_factory=lambda: PATCH_AUGMENT,
        metadata={"doc": "the [augment] table (patch-train: flips only; the patch dataset adds a transpose)"},
    )
    patch_size: int = option(32, "patch side in cache pixels, square")
    lesion_patches: int = option(4, "jittered patches per annotated lesion")
    jitter: float = option(0.25, "centre jitter, fraction of the patch side per axis")
    background_ratio: float = option(3.0, "background patches per lesion patch")
    tissue_level: float = option(0.05, "cache intensity above which a pixel is breast tissue")
    map_stride: int = option(0, "lesion-map stride in cache pixels; 0: a quarter of the patch size")

    @property
    def stride(self) -> int:
        return self.map_stride or max(1, self.patch_size // 4)

    @property
    def normalization(self) -> tuple[float, float] | None:
        from mammo_insight.nets.factory import input_normalization  # timm: not at CLI start-up

        return input_normalization(self.model) if self.normalize else None


def option_rows() -> list[tuple[str, str, str, str]]:
    """(TOML key, type, default, meaning) of every training option, ``augment.*`` for the [augment] table."""
    rows = []
    for cls, prefix in ((TrainConfig, ""), (AugmentConfig, "augment.")):
        # the fields' declared defaults, not an instance: validating one would import torch at `--help`
        for f in dataclasses.fields(cls):
            if f.name == "augment":
                continue
            rows.append((prefix + f.name, str(f.type), toml_value(f.default), f.metadata["doc"]))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_epilog() -> str:
    """``train --help``'s list of the TOML keys with their defaults and ranges, one line each."""
    ranges = option_ranges()
    return "\n".join(
        [
            "Options of the --config TOML file (top-level keys or a [train] table; augment.* is the [augment] table):"
        ]
        + [
            f"{key} = {default}: {doc}" + (f" [{ranges[key]}]" if key in ranges else "")
            for key, _, default, doc in option_rows()
        ]
    )


def option_ranges() -> dict[str, Between]:
    """TOML key -> the documented range of every numeric option (``augment.*`` for the [augment] table)."""
    ranges = {}
    for cls, prefix in ((TrainConfig, ""), (AugmentConfig, "augment.")):
        for f in dataclasses.fields(cls):
            if f.metadata.get("between") is not None:
                ranges[prefix + f.name] = f.metadata["between"]
    return ranges


def options_table() -> str:
    """The Markdown table of every TOML key with its default (the README's copy is checked against it)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {_cell(t)} | `{d}` | {_cell(m)} |" for k, t, d, m in option_rows()]
    return "\n".join(lines) + "\n"


def _coerce(cls: type, values: dict[str, Any], source: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise MammoInsightError(
            f"{source}: unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = dict(values)
    if issubclass(cls, TrainConfig) and isinstance(kwargs.get("augment"), dict):
        kwargs["augment"] = _augment_of(cls, kwargs["augment"], f"{source} [augment]")
    for key in ("image_size", "erase_scale"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    hints = typing.get_type_hints(cls)
    wrong = [
        f"{k} = {v!r} (expected {type_name(hints[k])})" for k, v in kwargs.items() if not fits(v, hints[k])
    ]
    if wrong:
        raise MammoInsightError(f"{source}: wrong type for training option(s) {'; '.join(wrong)}")
    return cls(**kwargs)


def _augment_of(cls: type[TrainConfig], values: dict[str, Any], source: str) -> AugmentConfig:
    """An [augment] table over the augmentation defaults of ``cls`` (a patch run's are flips only)."""
    _coerce(AugmentConfig, values, source)  # names and types checked as given
    return dataclasses.replace(cls.__dataclass_fields__["augment"].default_factory(), **values)


def load_config(
    path: str | Path | None = None, *, kind: type[TrainConfig] = TrainConfig, **overrides: Any
) -> TrainConfig:
    """Defaults <- TOML file <- overrides (CLI flags; None means 'not given'); ``kind``: TrainConfig or
    PatchConfig (whose file may hold its keys in a [patch] table)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MammoInsightError(f"config file {path} does not exist")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MammoInsightError(f"config file {path} is not valid TOML: {exc}") from exc
        except RecursionError:
            raise MammoInsightError(f"config file {path} nests tables or arrays too deeply to read") from None
        values = values.get("patch" if kind is PatchConfig else "train", values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _coerce(kind, values, str(path or "config"))


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from RUN/config.json (keys that are not options are ignored)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return _coerce(TrainConfig, {k: v for k, v in values.items() if k in names}, "config.json")


def validate_config(config: TrainConfig) -> None:
    """The one validator of training settings (a PatchConfig's too): a one-line error naming every bad option."""
    checks = {**_train_checks(config), **(_patch_checks(config) if isinstance(config, PatchConfig) else {})}
    bad = [f"{name}={operator.attrgetter(name)(config)!r}" for name, ok in checks.items() if not ok]
    bad += out_of_range(config, option_ranges())
    if bad:
        raise MammoInsightError("invalid training option(s): " + ", ".join(bad))


def _patch_checks(config: PatchConfig) -> dict[str, bool]:
    """A patch model scores one patch: one view at the patch size, average pooling (what readers rebuild)."""
    return {
        "patch_size": 8 <= config.patch_size <= MAX_IMAGE_SIDE,
        "lesion_patches": 1 <= config.lesion_patches <= 10_000,
        "jitter": 0 <= config.jitter <= 0.5,
        "background_ratio": 0 < config.background_ratio <= 1000,  # NaN and inf fail this too
        "tissue_level": 0 <= config.tissue_level < 1,
        "map_stride": config.map_stride >= 0,
        "view_mode": config.view_mode == "single",
        "image_size": config.image_size is None,
        "pool": config.pool == "avg",
        "init_patch_run": config.init_patch_run is None,
    }


def _train_checks(config: TrainConfig) -> dict[str, bool]:
    from mammo_insight.metrics.core import THRESHOLD_METHODS  # here: the CLI imports this module at start-up
    from mammo_insight.nets.pooling import POOLS  # and this one imports torch

    return {
        "view_mode": config.view_mode in {"single", "multi"},
        "schedule": config.schedule in {"cosine", "plateau", "none"},
        "monitor": config.monitor in {"pf1", "auc", "loss", "balanced_accuracy"},
        "select_epoch": config.select_epoch in {"best", "last"},
        "loss": config.loss in {"bce", "focal"},
        "sampler": config.sampler in {"none", "balanced"},
        "device": is_device_name(config.device),
        "threshold_method": config.threshold_method in THRESHOLD_METHODS,
        "pool": config.pool in POOLS,
        "label_column": bool(config.label_column),
        "group_level": config.group_level in {"coarse", "fine"},
        "frozen_bn": config.frozen_bn in {"update", "keep"},
        "pretrained": not (config.pretrained and config.weights),
        "augment.erase_scale": config.augment.erase_scale[0] <= config.augment.erase_scale[1],
        "init_patch_run": config.init_patch_run is None
        or (config.view_mode == "single" and not config.pretrained and not config.weights),
    }
