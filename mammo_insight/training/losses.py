"""Losses for rare positives: BCE with pos_weight, and focal loss (torchvision's implementation)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017): down-weights easy negatives, which dominate at 2% prevalence."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25):
        super().__init__()
        self.gamma = gamma
        self.alpha = -1.0 if alpha is None else alpha  # torchvision: alpha < 0 means no weighting

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, alpha=self.alpha, gamma=self.gamma, reduction="mean")


def build_loss(
    kind: str, pos_weight: float | None = None, gamma: float = 2.0, alpha: float | None = 0.25
) -> nn.Module:
    if kind == "focal":
        return FocalLoss(gamma, alpha)
    weight = None if pos_weight is None else torch.tensor(float(pos_weight))
    return nn.BCEWithLogitsLoss(pos_weight=weight)
