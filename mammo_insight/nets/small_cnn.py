"""``small_cnn``: a few conv blocks trained from scratch, the CMMD study's baseline, registered with timm.

Registered in timm's model registry (as timm's own families register themselves), so ``--model
small_cnn`` goes through the same factory, normalisation, parameter groups and Grad-CAM tracing as any
timm backbone. Each block is conv3x3-BN-ReLU twice then a 2x2 max-pool, so the smallest input is
2 ** (blocks) pixels a side. There are no pretrained weights: it is the from-scratch reference.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from timm.models import register_model
from torch import nn

from mammo_insight.errors import MammoInsightError

# timm reads the model's pretrained config (input size, mean/std) from the module's default_cfgs
default_cfgs = {
    "small_cnn": {
        "input_size": (1, 224, 224),
        "mean": (0.5,),
        "std": (0.25,),
        "num_classes": 0,
        "classifier": "head",
        "first_conv": "stages.0.0",
    }
}


def _block(in_chans: int, out_chans: int) -> nn.Sequential:
    """Two conv3x3-BN-ReLU then a 2x2 max-pool (ReLU not in place: Grad-CAM hooks read its input)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(),
        nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Conv blocks of growing width, global average pooling, an optional linear head (timm's interface:
    ``num_features``, ``forward_features`` giving the NCHW map, ``group_matcher``, ``reset_classifier``)."""

    def __init__(
        self, in_chans: int = 1, num_classes: int = 0, widths: tuple[int, ...] = (32, 64, 128, 256), **_: Any
    ):
        super().__init__()
        chans = [in_chans, *widths]
        self.stages = nn.Sequential(*(_block(a, b) for a, b in itertools.pairwise(chans)))
        self.num_features = self.head_hidden_size = widths[-1]
        self.num_classes = num_classes
        self.head = nn.Linear(widths[-1], num_classes) if num_classes else nn.Identity()
        for (
            module
        ) in self.modules():  # He init keeps activations near the batch-norm's initial running stats,
            if isinstance(module, nn.Conv2d):  # so an evaluation after a few steps is not thrown off by them
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^stages\.0\.", "blocks": r"^stages\.(\d+)"}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def small_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """Four conv blocks (32, 64, 128, 256 channels), about 1.2 M parameters; from scratch only."""
    if pretrained:
        raise MammoInsightError("small_cnn has no pretrained weights: it is the from-scratch baseline")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return SmallCNN(**kwargs)
