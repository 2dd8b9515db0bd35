"""Transfer-learning schedule by the backbone's own parameter groups (timm's ``group_matcher``).

timm gives every model family a ``group_matcher``: coarse groups are the stem and the stages (resnet:
stem, layer1..layer4; efficientnet: stem, its 7 block stages, the head conv), fine groups are single
blocks (a ViT's 12 blocks, a DenseNet's dense layers). Top-level children would not do: for
EfficientNet, ConvNeXt, DenseNet and ViT the body is one child, so unfreezing "by child" jumps from 0%
to 100% trainable.

The schedule, a function of the epoch only (so it survives a resume):
- the classifier head always trains;
- at most the last ``trainable_groups`` groups ever train (0: all of them);
- the backbone is frozen for ``freeze_epochs`` epochs, then opened top-down in ``unfreeze_stages``
  equal steps, one per epoch;
- each group's learning rate is lr x ``layer_decay`` ** (groups above it), and groups that were frozen
  at the first epoch get a further x ``unfreeze_lr_scale`` (a lower rate for features opened late).
All parameters stay in the optimizer; frozen ones get no gradient, which AdamW skips. A frozen group's
BatchNorm layers still update their running statistics in train mode unless ``frozen_bn = "keep"``
puts them in eval mode (the pretrained statistics stay: what small batches of another domain would
otherwise overwrite).
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

GROUP_LEVELS = ("coarse", "fine")


def backbone_groups(backbone: nn.Module, level: str = "coarse") -> list[list[nn.Parameter]]:
    """The backbone's parameters in timm's groups, bottom (stem) to top; empty groups left out."""
    params = dict(backbone.named_parameters())
    if hasattr(backbone, "group_matcher"):
        named = timm.models.group_parameters(backbone, backbone.group_matcher(coarse=level == "coarse"))
        groups = [[params[n] for n in names if n in params] for _, names in sorted(named.items())]
    else:  # not a timm model: its top-level children
        groups = [list(child.parameters()) for child in backbone.children()]
    groups = [g for g in groups if g]
    seen = {id(p) for g in groups for p in g}
    rest = [p for p in params.values() if id(p) not in seen]
    if rest:  # a parameter no matcher names trains with the top group
        groups[-1].extend(rest)
    return groups


def open_groups(epoch: int, n_groups: int, config: Any) -> int:
    """How many groups, counted from the top, train in ``epoch`` (0-based)."""
    most = min(config.trainable_groups or n_groups, n_groups)
    if epoch < config.freeze_epochs:
        return 0
    stages = max(config.unfreeze_stages, 1)
    step = min(epoch - config.freeze_epochs + 1, stages)
    return round(most * step / stages)


def apply_schedule(groups: list[list[nn.Parameter]], epoch: int, config: Any) -> None:
    """Set requires_grad of every backbone group for ``epoch``."""
    n_open = open_groups(epoch, len(groups), config)
    for i, group in enumerate(groups):
        for param in group:
            param.requires_grad_(i >= len(groups) - n_open)


def keep_frozen_bn_stats(backbone: nn.Module) -> None:
    """Put every BatchNorm layer whose parameters are all frozen in eval mode (call after train())."""
    for module in backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def lr_multipliers(n_groups: int, config: Any) -> list[float]:
    """The learning-rate factor of each group, bottom to top (see the module docstring)."""
    open_at_start = open_groups(0, n_groups, config)
    factors = []
    for i in range(n_groups):
        factor = config.layer_decay ** (n_groups - 1 - i)
        if i < n_groups - open_at_start:
            factor *= config.unfreeze_lr_scale
        factors.append(float(factor))
    return factors


def trainable_fraction(module: nn.Module) -> float:
    """Share of the module's parameter elements that train."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad) / max(total, 1)
