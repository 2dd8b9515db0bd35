"""Class activation maps of the malignancy logit, for any timm backbone, single- or multi-view.

The mechanics (hooks, forward/backward, per-method channel weights) are pytorch-grad-cam's; this
module only supplies what it cannot know about our models:

- the target layer, found with one forward-hook pass over ``backbone.forward_features``: the last
  module whose output *is* the final feature map (resnet ``layer4``, efficientnet ``bn2``, densenet
  ``features``, convnext ``norm_pre``). ViTs (token outputs) use ``blocks[-1].norm1``, the usual choice
  because after the last block only the class token reaches the head, so the patch tokens of the final
  norm get no gradient;
- a reshape transform to an NCHW grid for token (ViT: prefix tokens dropped via timm's
  ``num_prefix_tokens``) and channels-last (swin) feature maps;
- the target: our classifiers return one logit per item (shape (B,)), which grad-cam's
  ``ClassifierOutputTarget`` (made for (B, classes)) does not fit, so the target is the logit itself;
- multi-view: every view of every breast goes through the shared backbone as one flat batch
  (B*V images); the CAM of a view is taken against its own breast's logit while the breast's other
  views stay as they are (breasts of a batch do not interact: the model is in eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from torch import nn

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.factory import MultiViewClassifier


class SignedEigenCAM(EigenCAM):
    """EigenCAM with the sign of the first principal component fixed and a thin SVD.

    The principal direction's sign is arbitrary, so plain EigenCAM may return the complement of the
    salient region; as in Seg-Eigen-CAM (Chung & Ying 2025, eq. 13) the projection is flipped when its
    most negative value outweighs its most positive. The thin SVD gives the same first component and
    avoids a channels x channels matrix per image.
    """

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
        maps = []
        for act in np.nan_to_num(np.asarray(activations, dtype=np.float32)):
            flat = act.reshape(act.shape[0], -1).T
            flat = flat - flat.mean(axis=0)
            _, _, vt = np.linalg.svd(flat, full_matrices=False)
            proj = flat @ vt[0]
            if abs(proj.min()) > abs(proj.max()):
                proj = -proj
            maps.append(proj.reshape(act.shape[1:]))
        return np.float32(maps)


METHODS = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "eigencam": SignedEigenCAM}


class LogitTarget:
    """The grad-cam target for a one-logit classifier: the logit itself (a 0-d tensor per item)."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output.reshape(-1)[0] if output.ndim else output


@dataclass
class TargetLayer:
    """Where the CAM is taken and how its output becomes an NCHW map.

    layout: 'nchw' (CNNs), 'nhwc' (channels-last, e.g. swin) or 'tokens' (ViT, (B, N, C)).
    """

    name: str
    module: nn.Module
    layout: str
    num_prefix_tokens: int = 0
    patch_embed: nn.Module | None = field(default=None, repr=False)


class ToGrid:
    """Reshape transform: the target layer's output -> (B, C, h, w). ``input_hw`` is set per call."""

    def __init__(self, target: TargetLayer):
        self.target = target
        self.input_hw: tuple[int, int] | None = None

    def grid(self, n_tokens: int) -> tuple[int, int]:
        pe = self.target.patch_embed
        if pe is not None and self.input_hw is not None:
            if hasattr(pe, "dynamic_feat_size"):
                gh, gw = pe.dynamic_feat_size(self.input_hw)
            else:
                ph, pw = pe.patch_size
                gh, gw = self.input_hw[0] // ph, self.input_hw[1] // pw
            if gh * gw == n_tokens:
                return int(gh), int(gw)
        side = round(n_tokens**0.5)
        if side * side != n_tokens:
            raise MammoInsightError(
                f"cannot arrange {n_tokens} tokens of layer {self.target.name} into a grid"
            )
        return side, side

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.target.layout == "nhwc":
            return tensor.permute(0, 3, 1, 2)
        tokens = tensor[:, self.target.num_prefix_tokens :, :]
        gh, gw = self.grid(tokens.shape[1])
        return tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2)


def _in_channels(backbone: nn.Module) -> int:
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return 1


def _default_input_size(backbone: nn.Module) -> tuple[int, int]:
    pe = getattr(backbone, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    return (int(size[0]), int(size[1])) if size is not None else (64, 64)


def _trace(
    backbone: nn.Module, input_size: tuple[int, int]
) -> tuple[torch.Tensor, list[tuple[str, nn.Module, object]]]:
    """Run forward_features once; return its output and (name, module, output) in completion order."""
    if not hasattr(backbone, "forward_features"):
        raise MammoInsightError(
            f"{type(backbone).__name__} has no forward_features: not a timm backbone, "
            "name the CAM layer explicitly"
        )
    records: list[tuple[str, nn.Module, object]] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: records.append((name, mod, out)))
        for name, m in backbone.named_modules()
        if name
    ]
    try:
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            param = next(backbone.parameters())
            x = torch.zeros(1, _in_channels(backbone), *input_size, dtype=param.dtype, device=param.device)
            feats = backbone.forward_features(x)
        backbone.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return feats, records


def find_target_layer(
    backbone: nn.Module, input_size: tuple[int, int] | None = None, prefix: str = ""
) -> TargetLayer:
    """The layer whose activations Grad-CAM should use, found by tracing one forward pass (see module doc)."""
    input_size = tuple(input_size) if input_size is not None else _default_input_size(backbone)
    feats, records = _trace(backbone, input_size)
    n_features = int(getattr(backbone, "num_features", feats.shape[1]))
    if feats.ndim == 3:
        blocks = getattr(backbone, "blocks", None)
        if blocks is None or len(blocks) == 0:
            raise MammoInsightError(
                f"{type(backbone).__name__}: token features without `blocks`; name the CAM layer explicitly"
            )
        last = len(blocks) - 1
        module = getattr(blocks[last], "norm1", blocks[last])
        name = f"blocks.{last}.norm1" if module is not blocks[last] else f"blocks.{last}"
        prefix_tokens = int(
            getattr(backbone, "num_prefix_tokens", 1 if hasattr(backbone, "cls_token") else 0)
        )
        return TargetLayer(
            prefix + name, module, "tokens", prefix_tokens, getattr(backbone, "patch_embed", None)
        )
    if feats.ndim != 4:
        raise MammoInsightError(
            f"{type(backbone).__name__}: feature map of shape {tuple(feats.shape)} is neither NCHW nor tokens"
        )
    layout = "nhwc" if feats.shape[1] != n_features and feats.shape[-1] == n_features else "nchw"
    same = [r for r in records if r[2] is feats]
    if not same:  # forward_features ended in a functional op: take the last module of the same shape
        same = [r for r in records if isinstance(r[2], torch.Tensor) and r[2].shape == feats.shape]
    if not same:
        raise MammoInsightError(
            f"{type(backbone).__name__}: no module outputs the final feature map; "
            "name the CAM layer explicitly"
        )
    name, module, _ = same[-1]
    return TargetLayer(prefix + name, module, layout)


def named_target_layer(model: nn.Module, name: str, input_size: tuple[int, int]) -> TargetLayer:
    """A user-chosen layer (e.g. 'backbone.layer3' for a finer map), with the layout of the backbone's features."""
    try:
        module = model.get_submodule(name)
    except AttributeError as exc:
        raise MammoInsightError(f"the model has no layer named {name!r}") from exc
    auto = find_target_layer(model.backbone, input_size, prefix="backbone.")
    return TargetLayer(name, module, auto.layout, auto.num_prefix_tokens, auto.patch_embed)


class _FlatViews(nn.Module):
    """A multi-view classifier seen as a model of a flat batch of views: (B*V, 1, H, W) -> (B,) logits."""

    def __init__(self, model: MultiViewClassifier):
        super().__init__()
        self.model = model
        self.n_views = 1
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = x.view(-1, self.n_views, *x.shape[1:])
        return self.model(views, self.mask)


def _cut_graph(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    """Start the autograd graph at the target layer.

    With the weights frozen during a CAM call, nothing before the target layer records a graph (the
    forward there costs what inference costs) and the backward pass stops at the target layer instead
    of running down to the stem computing weight gradients nobody uses: about half the time of a
    plain Grad-CAM. The clone keeps later in-place ops legal.
    """
    if torch.is_grad_enabled() and not output.requires_grad:
        return output.detach().requires_grad_(True).clone()
    return output


@dataclass
class CamResult:
    """maps: (B, H, W) single-view or (B, V, H, W) multi-view, each in [0, 1]; logits: (B,)."""

    maps: np.ndarray
    logits: np.ndarray


class CamExplainer:
    """CAMs of the malignancy logit. Use as a context manager so the hooks are released.

    >>> with CamExplainer(model, "gradcam", input_size=(512, 256)) as cam:
    ...     result = cam(images)          # (B, 1, H, W), or (B, V, 1, H, W) with mask for multi-view
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "gradcam",
        input_size: tuple[int, int] | None = None,
        layer: str | None = None,
    ):
        if method not in METHODS:
            raise MammoInsightError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
        self.model = model.eval()
        self.method = method
        self.multi_view = isinstance(model, MultiViewClassifier)
        size = tuple(input_size) if input_size is not None else _default_input_size(model.backbone)
        self.target = (
            named_target_layer(model, layer, size)
            if layer
            else find_target_layer(model.backbone, size, prefix="backbone.")
        )
        self._grid = ToGrid(self.target) if self.target.layout != "nchw" else None
        self._wrapped = _FlatViews(model) if self.multi_view else model
        # registered before grad-cam's own hooks so they see the re-rooted output (see _cut_graph)
        self._cut = self.target.module.register_forward_hook(_cut_graph)
        self._cam = METHODS[method](
            model=self._wrapped, target_layers=[self.target.module], reshape_transform=self._grid
        )
        self.grid_shape: tuple[int, int] | None = None  # the CAM's own resolution, known after a call

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the forward hooks from the model (it can then be used or explained again)."""
        self._cam.activations_and_grads.release()
        self._cut.remove()

    def __call__(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> CamResult:
        device = next(self.model.parameters()).device
        images = images.to(device)
        if self._grid is not None:
            self._grid.input_hw = tuple(images.shape[-2:])
        if self.multi_view:
            if images.ndim != 5:
                raise MammoInsightError(
                    f"a multi-view model needs (B, V, 1, H, W) images, got {tuple(images.shape)}"
                )
            b, v = images.shape[:2]
            self._wrapped.n_views = v
            self._wrapped.mask = (mask if mask is not None else torch.ones(b, v, dtype=torch.bool)).to(device)
            flat = images.flatten(0, 1)
        else:
            if images.ndim != 4:
                raise MammoInsightError(
                    f"a single-view model needs (B, 1, H, W) images, got {tuple(images.shape)}"
                )
            b = images.shape[0]
            flat = images
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            for p in params:
                p.requires_grad_(False)
            with torch.enable_grad():
                maps = self._cam(input_tensor=flat, targets=[LogitTarget() for _ in range(b)])
        finally:
            for p in params:
                p.requires_grad_(True)
        logits = self._cam.outputs.detach().float().cpu().numpy().reshape(b)
        acts = self._cam.activations_and_grads.activations
        if acts:
            self.grid_shape = tuple(int(v) for v in acts[0].shape[-2:])
        self._cam.activations_and_grads.clear()
        if self.multi_view:
            maps = maps.reshape(b, v, *maps.shape[1:])
        return CamResult(np.asarray(maps, dtype=np.float32), logits)
