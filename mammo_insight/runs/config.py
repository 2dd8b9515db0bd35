"""The training configuration: one dataclass with defaults, overridable by a TOML file and CLI flags.

The resolved config is written to RUN/config.json, so a run can be rebuilt and resumed from it.
"""

from __future__ import annotations

import dataclasses
import operator
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.device import is_device_name
from mammo_insight.nets.pooling import POOLS


def option(default: Any, doc: str) -> Any:
    """A config field with its documentation: `options_table` and ``train --help`` are generated from it."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class AugmentConfig:
    """Training-time augmentation (the ``[augment]`` table); every transform is off at 0 (or False)."""

    hflip: float = option(0.5, "probability of a horizontal flip")
    vflip: float = option(0.0, "probability of a vertical flip")
    rotate_degrees: float = option(10.0, "rotation drawn from +-this many degrees")
    brightness: float = option(0.1, "brightness jitter (torchvision ColorJitter)")
    contrast: float = option(0.1, "contrast jitter (torchvision ColorJitter)")
    noise_std: float = option(0.0, "standard deviation of added Gaussian noise (image in [0, 1])")
    zoom: float = option(0.0, "zoom drawn from 1 +- zoom (0.1: 90% to 110%)")
    shift: float = option(0.0, "shift drawn from +-this fraction of the width and height")
    erase_p: float = option(0.0, "probability of blanking one random box (random erasing)")
    erase_scale: tuple[float, float] = option(
        (0.02, 0.1), "area range of that box, as fractions of the image"
    )
    patch_drop_rate: float = option(
        0.0, "destructive patching: each cell of a patch_size grid is blanked with this probability"
    )
    patch_size: int = option(16, "side in pixels of the grid cells patch_drop_rate drops")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Field names are the TOML keys (augment is a table)."""

    model: str = option("efficientnet_b0", "any timm model name, or small_cnn (from scratch)")
    view_mode: str = option("single", "single (one image per item) | multi (one breast per item)")
    image_size: tuple[int, int] | None = option(
        None, "(H, W) the images are resized to; none: the cache's size"
    )
    folds: int = option(5, "patient-grouped cross-validation folds")
    epochs: int = option(10, "epochs per fold")
    seed: int = option(0, "seed of folds, sampling, augmentation and initialisation")
    batch_size: int = option(16, "images (single) or breasts (multi) per batch")
    lr: float = option(3e-4, "AdamW learning rate")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    dropout: float = option(0.0, "dropout before the classifier head")
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
    early_stopping_patience: int = option(0, "epochs without improvement before a fold stops; 0: off")
    select_epoch: str = option(
        "best",
        "best (the monitored epoch: chosen on the fold it then scores, so its OOF figures lean optimistic) "
        "| last (the final epoch: no choice made on the scored fold)",
    )
    # imbalance remedies
    loss: str = option("bce", "bce | focal")
    focal_gamma: float = option(2.0, "focal loss gamma")
    focal_alpha: float | None = option(0.25, "focal loss alpha (weight of positives); none: unweighted")
    pos_weight: float | str | None = option(
        None, 'BCE weight of positives: a number, "auto" (negatives/positives) or none'
    )
    sampler: str = option("none", "none | balanced (draw with replacement at target_pos_ratio)")
    target_pos_ratio: float = option(0.5, "positive fraction per epoch with the balanced sampler")
    undersample_negatives: float | None = option(
        None, "keep this fraction of negatives each epoch (sampler none); none: all"
    )
    oversample_positives: int = option(1, "repeat each positive this many times per epoch")
    positive_label: float = option(1.0, "label of positives (soft labels, e.g. 0.9)")
    warmup_epochs: int = option(
        0, "first epochs on a balanced subset drawn per breast, then the full data at real prevalence"
    )
    warmup_pos_ratio: float = option(0.5, "positive share (of breasts) in the warm-up subset")
    # transfer learning, by timm's parameter groups (nets/unfreeze.py)
    freeze_epochs: int = option(
        0, "epochs with the backbone frozen (head only); = epochs: only the head (and pool) ever trains"
    )
    unfreeze_stages: int = option(
        1, "then the backbone's groups open top-down in this many steps, one per epoch"
    )
    trainable_groups: int = option(0, "only the last N groups of the backbone ever train; 0: all")
    group_level: str = option("coarse", "coarse (stem, stages) | fine (blocks): timm's group_matcher")
    unfreeze_lr_scale: float = option(1.0, "LR factor of groups frozen at the first epoch (e.g. 0.1)")
    layer_decay: float = option(
        1.0, "layer-wise LR decay: each group gets lr * layer_decay ** (groups above it)"
    )
    frozen_bn: str = option(
        "update",
        "update (BatchNorm layers of frozen groups still adapt their running statistics) | keep (they "
        "keep the pretrained statistics: eval mode while frozen)",
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"doc": "the [augment] table"})
    # multi-view
    max_views: int = option(4, "views per breast a multi-view model reads (extra views left out)")
    # engine
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    precision: str = option(
        "auto", "auto (bf16/16-mixed on GPU, 32 on CPU) | 32-true | 16-mixed | bf16-mixed"
    )
    channels_last: bool = option(True, "channels_last memory layout (GPU, single view)")
    devices: int | str = option("auto", "Lightning devices (GPUs per node)")
    num_nodes: int = option(1, "Lightning nodes")
    strategy: str = option("auto", "Lightning strategy, e.g. ddp")
    num_workers: int = option(0, "data loader worker processes")
    cpu_threads: int | None = option(
        None, "torch intra-op threads on the CPU (1 is fastest on a shared machine)"
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
    target_sensitivity: float = option(0.9, "with threshold_method sensitivity: the highest cut reaching it")
    label_column: str = option("cancer", "cache index column holding the 0/1 label")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
                "patch_size": self.patch_size >= 8,
                "lesion_patches": self.lesion_patches >= 1,
                "jitter": 0 <= self.jitter <= 0.5,
                "background_ratio": self.background_ratio > 0,
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
        from mammo_insight.nets.factory import input_normalization  # here: the CLI imports this module

        return input_normalization(self.model) if self.normalize else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _toml_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def option_rows() -> list[tuple[str, str, str, str]]:
    """(TOML key, type, default, meaning) of every training option, ``augment.*`` for the [augment] table."""
    rows = []
    for cls, prefix in ((TrainConfig, ""), (AugmentConfig, "augment.")):
        defaults = cls()
        for f in dataclasses.fields(cls):
            if f.name == "augment":
                continue
            rows.append(
                (prefix + f.name, str(f.type), _toml_value(getattr(defaults, f.name)), f.metadata["doc"])
            )
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_epilog() -> str:
    """``train --help``'s list of the TOML keys with their defaults, one line each."""
    return "\n".join(
        [
            "Options of the --config TOML file (top-level keys or a [train] table; augment.* is the [augment] table):"
        ]
        + [f"{key} = {default}: {doc}" for key, _, default, doc in option_rows()]
    )


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
    if cls is TrainConfig and isinstance(kwargs.get("augment"), dict):
        kwargs["augment"] = _coerce(AugmentConfig, kwargs["augment"], f"{source} [augment]")
    for key in ("image_size", "erase_scale"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    hints = typing.get_type_hints(cls)
    wrong = [
        f"{k} = {v!r} (expected {_type_name(hints[k])})" for k, v in kwargs.items() if not _fits(v, hints[k])
    ]
    if wrong:
        raise MammoInsightError(f"{source}: wrong type for training option(s) {'; '.join(wrong)}")
    return cls(**kwargs)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits an option's annotation (an int fits a float; a bool fits only bool)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and len(value) == len(args) and all(map(_fits, value, args))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "a table of options"
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults <- TOML file <- overrides (CLI flags; None means 'not given')."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MammoInsightError(f"config file {path} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise MammoInsightError(f"config file {path} is not valid TOML: {exc}") from exc
        values = values.get("train", values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = _coerce(TrainConfig, values, str(path or "config"))
    validate_config(config)
    return config


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from RUN/config.json (keys that are not options are ignored)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return _coerce(TrainConfig, {k: v for k, v in values.items() if k in names}, "config.json")


def validate_config(config: TrainConfig) -> None:
    from mammo_insight.metrics.core import THRESHOLD_METHODS  # here: the CLI imports this module at start-up

    checks = {
        "view_mode": config.view_mode in {"single", "multi"},
        "schedule": config.schedule in {"cosine", "plateau", "none"},
        "monitor": config.monitor in {"pf1", "auc", "loss", "balanced_accuracy"},
        "select_epoch": config.select_epoch in {"best", "last"},
        "loss": config.loss in {"bce", "focal"},
        "sampler": config.sampler in {"none", "balanced"},
        "device": is_device_name(config.device),
        "threshold_method": config.threshold_method in THRESHOLD_METHODS,
        "target_sensitivity": 0 < config.target_sensitivity <= 1,
        "folds": config.folds >= 2,
        "epochs": config.epochs >= 1,
        "target_pos_ratio": 0 < config.target_pos_ratio < 1,
        "positive_label": 0 < config.positive_label <= 1,
        "oversample_positives": config.oversample_positives >= 1,
        "batch_size": config.batch_size >= 1,
        "lr": config.lr > 0,
        "dropout": 0 <= config.dropout < 1,
        "pool": config.pool in POOLS,
        "image_size": config.image_size is None or min(config.image_size) >= 16,
        "max_views": config.max_views >= 1,
        "num_workers": config.num_workers >= 0,
        "label_column": bool(config.label_column),
        "group_level": config.group_level in {"coarse", "fine"},
        "freeze_epochs": config.freeze_epochs >= 0,
        "unfreeze_stages": config.unfreeze_stages >= 1,
        "trainable_groups": config.trainable_groups >= 0,
        "unfreeze_lr_scale": config.unfreeze_lr_scale > 0,
        "layer_decay": 0 < config.layer_decay <= 1,
        "frozen_bn": config.frozen_bn in {"update", "keep"},
        "pretrained": not (config.pretrained and config.weights),
        "augment.zoom": 0 <= config.augment.zoom < 1,
        "augment.shift": 0 <= config.augment.shift <= 1,
        "augment.patch_drop_rate": 0 <= config.augment.patch_drop_rate <= 1,
        "augment.patch_size": config.augment.patch_size >= 1,
        "init_patch_run": config.init_patch_run is None
        or (config.view_mode == "single" and not config.pretrained and not config.weights),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise MammoInsightError(
            "invalid training option(s): "
            + ", ".join(f"{name}={operator.attrgetter(name)(config)!r}" for name in bad)
        )
