"""The training configuration: one dataclass with defaults, overridable by a TOML file and CLI flags.

The resolved config is written to RUN/config.json, so a run can be rebuilt and resumed from it.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_insight.errors import MammoInsightError
from mammo_insight.models.device import is_device_name


@dataclass
class AugmentConfig:
    """Training-time augmentation; every transform is off at 0 (or False)."""

    hflip: float = 0.5
    vflip: float = 0.0
    rotate_degrees: float = 10.0
    brightness: float = 0.1
    contrast: float = 0.1
    noise_std: float = 0.0
    erase_p: float = 0.0  # random patch erasure ("destructive patching")
    erase_scale: tuple[float, float] = (0.02, 0.1)


@dataclass
class TrainConfig:
    """Everything a training run depends on. Field names are the TOML keys (augment is a table)."""

    model: str = "efficientnet_b0"
    view_mode: str = "single"  # single (per image) | multi (per breast)
    image_size: tuple[int, int] | None = None  # (H, W); None: the cache's size
    folds: int = 5
    epochs: int = 10
    seed: int = 0
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    dropout: float = 0.0
    schedule: str = "cosine"  # cosine | plateau (ReduceLROnPlateau on the monitored metric) | none
    monitor: str = "pf1"  # pf1 | auc | loss: selects the fold checkpoint and drives plateau/early stop
    early_stopping_patience: int = 0  # 0: off
    # imbalance remedies
    loss: str = "bce"  # bce | focal
    focal_gamma: float = 2.0
    focal_alpha: float | None = 0.25
    pos_weight: float | str | None = None  # a number, "auto" (negatives/positives) or None
    sampler: str = "none"  # none | balanced
    target_pos_ratio: float = 0.5  # positive fraction per epoch with the balanced sampler
    undersample_negatives: float | None = None  # keep this fraction of negatives each epoch (sampler none)
    oversample_positives: int = 1  # repeat each positive this many times per epoch
    positive_label: float = 1.0  # soft positive labels, e.g. 0.9
    warmup_epochs: int = 0  # phase 1: balanced subset; then the full data at real prevalence
    warmup_pos_ratio: float = 0.5
    # transfer learning, by timm's parameter groups (models/unfreeze.py)
    freeze_epochs: int = 0  # backbone frozen (head only) for this many epochs,
    unfreeze_stages: int = 1  # then its groups opened top-down in this many steps, one per epoch
    trainable_groups: int = 0  # only the last N groups of the backbone ever train (0: all)
    group_level: str = "coarse"  # coarse (stem, stages) | fine (blocks): timm's group_matcher
    unfreeze_lr_scale: float = 1.0  # LR factor of groups frozen at the first epoch (e.g. 0.1)
    layer_decay: float = 1.0  # layer-wise LR decay: each group gets lr * layer_decay ** (groups above it)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # multi-view
    max_views: int = 4
    # engine
    device: str = "auto"  # auto | cpu | cuda | cuda:N (models/device.resolve_device)
    precision: str = "auto"  # auto (bf16/16-mixed on GPU, 32 on CPU) | 32-true | 16-mixed | bf16-mixed
    channels_last: bool = True  # GPU only
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # e.g. ddp
    num_workers: int = 0
    cpu_threads: int | None = None  # torch intra-op threads on the CPU (1 is fastest on a shared machine)
    weights: str | None = None  # local pretrained weights file
    pretrained: bool = False  # ImageNet weights: pip-shipped (extra `pretrained`) or timm's cache/hub
    normalize: bool = True  # (x - mean) / std with the backbone's pretrained mean/std (1 channel: averages)
    init_patch_run: str | None = None  # a patch-train folder: fold k starts from its fold-k patch model
    threshold_method: str = (
        "best_f1"  # best_f1 | prevalence: the operating threshold tuned on OOF predictions
    )
    label_column: str = "cancer"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    checks = {
        "view_mode": config.view_mode in {"single", "multi"},
        "schedule": config.schedule in {"cosine", "plateau", "none"},
        "monitor": config.monitor in {"pf1", "auc", "loss"},
        "loss": config.loss in {"bce", "focal"},
        "sampler": config.sampler in {"none", "balanced"},
        "device": is_device_name(config.device),
        "threshold_method": config.threshold_method in {"best_f1", "prevalence"},
        "folds": config.folds >= 2,
        "epochs": config.epochs >= 1,
        "target_pos_ratio": 0 < config.target_pos_ratio < 1,
        "positive_label": 0 < config.positive_label <= 1,
        "oversample_positives": config.oversample_positives >= 1,
        "batch_size": config.batch_size >= 1,
        "lr": config.lr > 0,
        "dropout": 0 <= config.dropout < 1,
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
        "pretrained": not (config.pretrained and config.weights),
        "init_patch_run": config.init_patch_run is None
        or (config.view_mode == "single" and not config.pretrained and not config.weights),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise MammoInsightError(
            "invalid training option(s): " + ", ".join(f"{name}={getattr(config, name)!r}" for name in bad)
        )
