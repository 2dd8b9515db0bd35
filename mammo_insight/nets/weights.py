"""Weights into a timm backbone: ImageNet (the pip-shipped copy, else timm's cache or hub) or a local file.

Both go through timm's public pretrained path, so a 3-channel RGB stem is folded to the one grey channel
and the classifier is dropped exactly as timm does it. A file that does not fit is refused with the keys
that are missing, unexpected or of another shape, never loaded partially.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.pretrained import offline_message, packaged_state_dict

log = logging.getLogger(__name__)


def load_pretrained(name: str, **kwargs: Any) -> nn.Module:
    """``name`` with ImageNet weights: the pip-shipped copy if installed, else timm's pretrained=True."""
    state = packaged_state_dict(name)
    if state is not None:
        return _load_state(name, state, f"the packaged ImageNet weights of {name}", **kwargs)
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0, in_chans=1, **kwargs)
    except Exception as exc:  # offline: huggingface_hub / urllib raise their own connection errors
        raise MammoInsightError(offline_message(name, exc)) from exc
    log.info("loaded timm's ImageNet weights of %s (stem folded to 1 channel)", name)
    return model


def _listed(keys: list[str], limit: int = 12) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _unexpected(name: str, own: dict, shapes: dict[str, tuple]) -> list[str]:
    """Tensors of the file the backbone has no place for, the pretrained classifier left aside."""
    classifier = timm.models.get_pretrained_cfg_value(name, "classifier") or ()
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    return sorted(k for k in set(shapes) - set(own) if not (heads and k.startswith(heads)))


def _stem_only(file_shape: tuple, own_shape: tuple) -> bool:
    """A conv weight that differs only in its input channels: timm folds it with adapt_input_conv."""
    return (
        len(file_shape) == len(own_shape) == 4
        and file_shape[:1] + file_shape[2:] == own_shape[:1] + own_shape[2:]
    )


def _refuse(source: str, name: str, own: dict, shapes: dict[str, tuple], *, load_error: str = "") -> None:
    """Raise the MammoInsightError listing what of the backbone did not load, if anything.

    Without ``load_error`` timm loaded the file (its filter and stem adaptation made the shapes fit), so only
    tensors absent from the file count; with it, tensors whose shape differs are listed too.
    """
    missing = sorted(k for k in own if k not in shapes and not k.endswith("num_batches_tracked"))
    differ = (
        []
        if not load_error
        else sorted(
            k
            for k in own
            if k in shapes
            and shapes[k] != tuple(own[k].shape)
            and not _stem_only(shapes[k], tuple(own[k].shape))
        )
    )
    if not missing and not differ and not load_error:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its {len(own)} tensors are not in the file ({_listed(missing)})")
    if differ:
        parts.append(f"{len(differ)} have another shape in the file ({_listed(differ)})")
    if not parts:
        parts.append(load_error)
    unexpected = _unexpected(name, own, shapes)
    if unexpected:
        parts.append(f"the file has {len(unexpected)} the model does not ({_listed(unexpected)})")
    raise MammoInsightError(
        f"{source} does not load into {name}: {'; '.join(parts)}; is it a checkpoint of another architecture?"
    )


def backbone_from_file(name: str, path: Path, **kwargs: Any) -> nn.Module:
    """The 1-channel feature extractor ``name`` with the weights of a local file, through timm's public API.

    The file is read by ``timm.models.load_state_dict`` (``weights_only=True``: a pickle that would run
    code is refused; safetensors, EMA and DDP-prefixed checkpoints work) and handed to
    ``timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(state_dict=...))``, so timm applies
    the model's own checkpoint filter (e.g. a ViT's position embedding resampled to ``img_size``), folds
    the RGB stem to one channel with ``timm.models.adapt_input_conv`` and drops the classifier. Every
    tensor of the backbone body must come from the file: one that does not is a MammoInsightError
    listing them (never a silent partial load); tensors of the file the model has no place for are
    logged.
    """
    if not path.is_file():
        raise MammoInsightError(f"weights file {path} does not exist")
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as exc:
        raise MammoInsightError(
            f"weights file {path} is not a plain state dict that loads with "
            f"torch.load(weights_only=True): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict) or not state:
        raise MammoInsightError(f"weights file {path} holds no state dict")
    return _load_state(name, state, f"weights file {path}", **kwargs)


def _load_state(name: str, state: dict, source: str, **kwargs: Any) -> nn.Module:
    """timm.create_model(pretrained=True) on ``state``, refusing a partial load (see `load_weights`)."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    try:
        model = timm.create_model(
            name,
            pretrained=True,
            pretrained_cfg_overlay={"state_dict": state},
            num_classes=0,
            in_chans=1,
            **kwargs,
        )
    except RuntimeError as exc:  # unknown name, or tensors of the wrong shape ("size mismatch for ...")
        if not timm.is_model(name):
            raise MammoInsightError(f"unknown timm model '{name}': {exc}") from exc
        plain = timm.create_model(name, pretrained=False, num_classes=0, in_chans=1, **kwargs).state_dict()
        _refuse(source, name, plain, shapes, load_error=" ".join(str(exc).split())[:300])
        raise  # _refuse always raises
    own = model.state_dict()
    _refuse(source, name, own, shapes)
    unexpected = _unexpected(name, own, shapes)
    if unexpected:
        log.warning(
            "%s: %d tensor(s) the %s backbone has no place for were ignored: %s",
            source,
            len(unexpected),
            name,
            _listed(unexpected),
        )
    log.info(
        "loaded %d tensors of %s from %s (classifier dropped, stem folded to 1 channel)",
        len(own),
        name,
        source,
    )
    return model
