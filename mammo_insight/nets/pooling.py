"""How a whole-image model turns its backbone's feature map into the one vector its head scores.

A lesion fills a few cells of a mammogram's feature map; timm's global average (``avg``, the default)
dilutes it by the many cells of normal tissue. The other pools weight the cells that stand out:

- ``max``: each channel's largest cell (what the maximum of a lesion map does with the patch score);
- ``gem``: generalized mean (Radenović et al. 2018), ((1/N) sum x^p)^(1/p) with p learned (starting at 3),
  between the mean (p = 1) and the max (p -> inf); cells are clamped at a small positive value first, as
  the paper does, since x^p needs x > 0 (timm 1.0 ships no GeM layer);
- ``attention``: gated attention-MIL (Ilse et al. 2018): each cell is an instance, a small network scores
  it, the softmax of the scores over the cells weights their features; the weights are a map of where
  the model looks.

Every pool but ``avg`` reads ``backbone.forward_features`` (the NCHW map) and returns (B, C); ``avg``
builds no module, so the state dicts of runs made before this option load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from mammo_insight.errors import MammoInsightError

POOLS = ("avg", "max", "gem", "attention")
ATTENTION_HIDDEN = 128  # Ilse et al.'s width of the attention network


class MaxPool(nn.Module):
    """Each channel's largest cell."""

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.amax(dim=(2, 3))


class GeMPool(nn.Module):
    """Generalized mean over the cells with one learnable exponent ``p`` shared by the channels."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp_min(1.0)  # below 1 it is no longer between the mean and the max
        return fmap.clamp_min(self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class GatedAttentionPool(nn.Module):
    """Gated attention-MIL: a_k = softmax_k(w . (tanh(V h_k) * sigmoid(U h_k))), output sum_k a_k h_k."""

    def __init__(self, n_features: int, hidden: int = ATTENTION_HIDDEN):
        super().__init__()
        self.value = nn.Linear(n_features, hidden)
        self.gate = nn.Linear(n_features, hidden)
        self.score = nn.Linear(hidden, 1)

    def weights(self, fmap: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, W) attention of each cell; every image's weights sum to 1. ``mask`` (B, H, W), bool: only
        its cells get weight (padding in a batch of bags of several sizes, see ``models.tile_mil``)."""
        b, _, h, w = fmap.shape
        cells = fmap.flatten(2).transpose(1, 2)  # (B, N, C)
        scores = self.score(torch.tanh(self.value(cells)) * torch.sigmoid(self.gate(cells))).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask.flatten(1), float("-inf"))
        return scores.softmax(dim=1).view(b, h, w)

    def forward(self, fmap: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.einsum("bchw,bhw->bc", fmap, self.weights(fmap, mask))


def build_pool(name: str, n_features: int) -> nn.Module | None:
    """The pooling module of option ``pool``; None for ``avg`` (the backbone's own global pooling)."""
    if name not in POOLS:
        raise MammoInsightError(f"pool must be one of {', '.join(POOLS)}, got {name!r}")
    if name == "avg":
        return None
    if name == "max":
        return MaxPool()
    if name == "gem":
        return GeMPool()
    return GatedAttentionPool(n_features)


def pooled_features(backbone: nn.Module, pool: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """(B, C) features of normalised images: the backbone's own pooling, or ``pool`` over its feature map."""
    return backbone(x) if pool is None else pool(backbone.forward_features(x))
