"""Build the single-view and multi-view classifiers from any timm backbone.

Input is one channel (mammograms are grey). Pretrained weights come only from a local file
(``weights``); nothing is downloaded. Both models expose ``embed`` (the pooled feature vector
that embeddings and fusion use) and return one malignancy logit per image or per breast.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError


def has_fixed_input_size(name: str) -> bool:
    """True for timm models built for one input size (ViTs): they need ``img_size`` at creation."""
    try:
        return bool(timm.models.get_pretrained_cfg(name, allow_unregistered=True).fixed_input_size)
    except (RuntimeError, AttributeError):
        return False


def create_backbone(name: str, weights: str | Path | None = None,
                    img_size: tuple[int, int] | None = None) -> nn.Module:
    """A timm feature extractor (num_classes=0) with 1-channel input.

    ``weights``: a local timm/torchvision state dict for the 3-channel model; its first conv is
    folded to one channel by timm's own ``adapt_input_conv``. ``img_size`` (H, W) is passed to
    models with a fixed input size (ViTs) and ignored by the others, which take any size.
    """
    extra = {"img_size": tuple(img_size)} if img_size is not None and has_fixed_input_size(name) else {}
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=1, **extra)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown names
        raise MammoInsightError(f"unknown timm model '{name}': {exc}") from exc
    if weights is not None:
        load_local_weights(model, Path(weights))
    return model


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a local checkpoint into a 1-channel timm model, adapting the stem and dropping the head."""
    from timm.models._manipulate import adapt_input_conv

    if not path.is_file():
        raise MammoInsightError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    adapted = {}
    for key, value in state.items():
        if key not in own:
            continue
        if value.ndim == 4 and own[key].ndim == 4 and value.shape[1] != own[key].shape[1]:
            value = adapt_input_conv(own[key].shape[1], value)
        if value.shape == own[key].shape:
            adapted[key] = value
    if not adapted:
        raise MammoInsightError(f"weights file {path} has no tensor matching model {type(model).__name__}")
    model.load_state_dict(adapted, strict=False)


class SingleViewClassifier(nn.Module):
    """One image -> one logit. ``embed`` gives the pooled backbone features."""

    def __init__(self, backbone: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features, 1)

    @property
    def embedding_dim(self) -> int:
        return int(self.backbone.num_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x))).squeeze(-1)


class MultiViewClassifier(nn.Module):
    """A breast's views (CC, MLO, any extra) through one shared encoder, mean-and-max pooled.

    x: (B, V, 1, H, W); mask: (B, V) bool, True where a view exists. A breast with one view
    or three views works: absent views are masked out of the pooling.
    """

    def __init__(self, backbone: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * backbone.num_features, 1)

    @property
    def embedding_dim(self) -> int:
        return 2 * int(self.backbone.num_features)

    def embed(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, v = x.shape[:2]
        if mask is None:
            mask = torch.ones(b, v, dtype=torch.bool, device=x.device)
        feats = self.backbone(x.flatten(0, 1)).view(b, v, -1)
        m = mask.unsqueeze(-1).to(feats.dtype)
        mean = (feats * m).sum(1) / m.sum(1).clamp_min(1.0)
        maxed = feats.masked_fill(~mask.unsqueeze(-1), torch.finfo(feats.dtype).min).amax(1)
        return torch.cat([mean, maxed], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x, mask))).squeeze(-1)


def build_classifier(model_name: str, view_mode: str = "single", weights: str | Path | None = None,
                     dropout: float = 0.0, img_size: tuple[int, int] | None = None) -> nn.Module:
    """The classifier a run config describes: view_mode 'single' (per image) or 'multi' (per breast)."""
    backbone = create_backbone(model_name, weights, img_size)
    if view_mode == "single":
        return SingleViewClassifier(backbone, dropout)
    if view_mode == "multi":
        return MultiViewClassifier(backbone, dropout)
    raise MammoInsightError(f"view mode must be 'single' or 'multi', got {view_mode!r}")
