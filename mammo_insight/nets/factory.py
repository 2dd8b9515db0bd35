"""Build the single-view and multi-view classifiers from any timm backbone.

Input is one channel (mammograms are grey). Pretrained weights come from a local file (``weights``) or, with
``pretrained=True``, from a pip-shipped copy or timm's own cache and hub (nets/pretrained.py); both load
through timm's public pretrained API. Both models normalise their input with the backbone's pretrained
mean and std (`input_normalization`) inside ``embed``, so every stage that runs a model (train, evaluate,
embed, explain, predict) feeds it the same [0, 1] images and gets the same normalisation. Both expose
``embed`` (the pooled feature vector that embeddings and fusion use) and return one malignancy logit per
image or per breast. The pooling is the backbone's own global average, or with ``pool`` a head over its
feature map (nets/pooling.py). The head is sized from that vector as one forward pass of a blank image at the run's
size measures it (`feature_size`), which also turns an input too small for the backbone into an error
naming the smallest size it takes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets import small_cnn  # noqa: F401 - registers `small_cnn` with timm
from mammo_insight.nets.pooling import build_pool, pooled_features
from mammo_insight.nets.weights import backbone_from_file, load_pretrained

log = logging.getLogger(__name__)
PROBE_SIDE = 64  # the largest side of the blank image `feature_size` tries first


def has_fixed_input_size(name: str) -> bool:
    """True for timm models built for one input size (ViTs): they need ``img_size`` at creation."""
    try:
        return bool(timm.models.get_pretrained_cfg(name, allow_unregistered=True).fixed_input_size)
    except (RuntimeError, AttributeError):
        return False


def input_normalization(name: str) -> tuple[float, float]:
    """(mean, std) of the 1-channel input: the averages of the backbone's pretrained RGB mean and std.

    timm keeps them in the model's pretrained config; a grey image is the same value in R, G and B, and
    the stem folded by ``adapt_input_conv`` sums the RGB filters, so one average per statistic matches
    what the pretrained stem expects. Models without a config get ImageNet's.
    """
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    mean = getattr(cfg, "mean", None) or timm.data.IMAGENET_DEFAULT_MEAN
    std = getattr(cfg, "std", None) or timm.data.IMAGENET_DEFAULT_STD
    return float(sum(mean) / len(mean)), float(sum(std) / len(std))


def create_backbone(
    name: str,
    weights: str | Path | None = None,
    img_size: tuple[int, int] | None = None,
    *,
    pretrained: bool = False,
) -> nn.Module:
    """A timm feature extractor (num_classes=0) with 1-channel input.

    ``weights``: a local timm/torchvision state dict for the 3-channel model, loaded through timm's own
    pretrained path (see `nets.weights.backbone_from_file`). ``pretrained``: ImageNet weights from the pip-shipped copy when
    an installed package has them, else timm's cache or hub (a clear error offline). ``img_size`` (H, W) is
    passed to models with a fixed input size (ViTs) and ignored by the others, which take any size.
    """
    extra = {"img_size": tuple(img_size)} if img_size is not None and has_fixed_input_size(name) else {}
    if weights is not None and pretrained:
        raise MammoInsightError("give --weights FILE or --pretrained, not both")
    if weights is not None:
        return backbone_from_file(name, Path(weights), **extra)
    if not timm.is_model(name) and not name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        raise MammoInsightError(f"unknown timm model '{name}'")
    if pretrained:
        return load_pretrained(name, **extra)
    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=1, **extra)


def _blank_forward(
    backbone: nn.Module, size: tuple[int, int], *, feature_map: bool = False
) -> torch.Tensor | str:
    """The backbone's output (its ``forward_features`` map with ``feature_map``) for one blank 1-channel
    image of ``size`` (eval mode, no gradient, no batch-norm statistics moved), or the error text when
    that size is too small for it."""
    was_training = backbone.training
    backbone.eval()
    forward = backbone.forward_features if feature_map else backbone
    try:
        with torch.no_grad():
            return forward(torch.zeros(1, 1, *size))
    except (
        RuntimeError
    ) as exc:  # "Kernel size can't be greater than actual input size", "Output size is too small"
        return " ".join(str(exc).split())
    finally:
        backbone.train(was_training)


def minimum_input_side(name: str, *, start: int, limit: int = 1024) -> int | None:
    """The smallest square side ``name`` takes, found by trying forwards (no hand-kept table), or None
    when none up to ``limit`` works. The side doubles from ``start`` until one runs, then bisects."""
    fixed = has_fixed_input_size(name)
    shared = None if fixed else create_backbone(name)

    def runs(side: int) -> bool:
        try:  # a model built for one size (ViT) is rebuilt at each size tried
            backbone = create_backbone(name, img_size=(side, side)) if fixed else shared
        except (RuntimeError, ValueError, AssertionError):
            return False
        return not isinstance(_blank_forward(backbone, (side, side)), str)

    low = high = max(start, 1)
    while not runs(high):
        if high >= limit:
            return None
        low, high = high, min(2 * high, limit)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if runs(middle) else (middle, high)
    return high


def feature_size(
    backbone: nn.Module, name: str, img_size: tuple[int, int] | None, *, feature_map: bool = False
) -> int:
    """Length of the pooled feature vector the backbone produces, from one forward pass of a blank image.

    With ``feature_map``: the channels of its ``forward_features`` map, which must be NCHW (a pooling
    head reads its cells; a ViT's token sequence is refused).

    ``num_features`` is not it for every family (timm's vgg16 says 512 and pools to 4096 through its
    pre-logits MLP). The pass runs at ``img_size`` (else the model's pretrained input size), so an input
    too small for the backbone stops here, naming the smallest size it takes, not inside training. It
    first tries a crop of at most PROBE_SIDE a side (the pooled length does not depend on the size, and a
    backbone that takes a smaller input takes a larger one): a blank 512x512 pass costs resnet50 about 2 s
    on one CPU thread, each time a fold model is built.
    """
    size = tuple(img_size) if img_size is not None else _default_input_size(name)
    probe = size if has_fixed_input_size(name) else (min(size[0], PROBE_SIDE), min(size[1], PROBE_SIDE))
    out = _blank_forward(backbone, probe, feature_map=feature_map)
    if isinstance(out, str) and probe != size:  # too small a crop for this backbone: the real size decides
        out = _blank_forward(backbone, size, feature_map=feature_map)
    if not isinstance(out, str) and feature_map:
        if out.ndim != 4:
            raise MammoInsightError(
                f"model {name}'s forward_features gives a {out.ndim}-d output, not an NCHW feature map: "
                'pool it with pool = "avg"'
            )
        return int(out.shape[1])
    if not isinstance(out, str):
        return int(out.shape[-1])
    side = minimum_input_side(name, start=min(size))
    need = f"at least {side}x{side} pixels" if side else "a larger input"
    raise MammoInsightError(
        f"model {name} needs an input of {need}, the images are {size[0]}x{size[1]} "
        f"(preprocess --size or the image_size option): {out[:200]}"
    )


def _default_input_size(name: str) -> tuple[int, int]:
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    input_size = getattr(cfg, "input_size", None) or (3, 224, 224)
    return int(input_size[-2]), int(input_size[-1])


class InputNormalization(nn.Module):
    """(x - mean) / std on 1-channel images in [0, 1]; mean and std are rebuilt from the run's config.json,
    not stored in the state dict (fold models of runs made before normalisation keep loading)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={float(self.mean):.4g}, std={float(self.std):.4g}"


class _Classifier(nn.Module):
    """What both classifiers hold: the input normalization, the backbone, an optional feature-map pooling,
    dropout, and a linear head on an embedding ``views_pooled`` times the backbone's features wide."""

    views_pooled = 1

    def __init__(
        self,
        backbone: nn.Module,
        dropout: float = 0.0,
        normalization: tuple[float, float] = (0.0, 1.0),
        *,
        n_features: int,
        pool: nn.Module | None = None,
    ):
        super().__init__()
        self.normalize = InputNormalization(*normalization)
        self.backbone = backbone
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.embedding_dim = self.views_pooled * n_features
        self.head = nn.Linear(self.embedding_dim, 1)


class SingleViewClassifier(_Classifier):
    """One image -> one logit. ``embed`` gives the pooled backbone features."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.backbone, self.pool, self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x))).squeeze(-1)


class MultiViewClassifier(_Classifier):
    """A breast's views (CC, MLO, any extra) through one shared encoder, mean-and-max pooled.

    x: (B, V, 1, H, W); mask: (B, V) bool, True where a view exists. A breast with one view
    or three views works: absent views are masked out of the pooling.
    """

    views_pooled = 2  # the views' mean and their max, side by side

    def embed(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, v = x.shape[:2]
        if mask is None:
            mask = torch.ones(b, v, dtype=torch.bool, device=x.device)
        feats = pooled_features(self.backbone, self.pool, self.normalize(x.flatten(0, 1))).view(b, v, -1)
        m = mask.unsqueeze(-1).to(feats.dtype)
        mean = (feats * m).sum(1) / m.sum(1).clamp_min(1.0)
        maxed = feats.masked_fill(~mask.unsqueeze(-1), torch.finfo(feats.dtype).min).amax(1)
        return torch.cat([mean, maxed], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x, mask))).squeeze(-1)


def build_classifier(
    model_name: str,
    view_mode: str = "single",
    *,
    weights: str | Path | None = None,
    pretrained: bool = False,
    dropout: float = 0.0,
    img_size: tuple[int, int] | None = None,
    normalization: tuple[float, float] | None = None,
    pool: str = "avg",
) -> nn.Module:
    """The classifier a run config describes: view_mode 'single' (per image) or 'multi' (per breast).

    ``normalization``: (mean, std) of the input, None for none (runs made before it was recorded).
    ``pool``: how each image's feature map becomes one vector (nets/pooling.py; ``avg`` is the backbone's).
    """
    if view_mode not in {"single", "multi"}:
        raise MammoInsightError(f"view mode must be 'single' or 'multi', got {view_mode!r}")
    backbone = create_backbone(model_name, weights, img_size, pretrained=pretrained)
    norm = tuple(normalization) if normalization is not None else (0.0, 1.0)
    classifier = SingleViewClassifier if view_mode == "single" else MultiViewClassifier
    n_features = feature_size(backbone, model_name, img_size, feature_map=pool != "avg")
    return classifier(backbone, dropout, norm, n_features=n_features, pool=build_pool(pool, n_features))
