"""CAM mechanics: target layers found for several timm families, ViT tokens, multi-view, hooks released."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.explain.cam import METHODS, CamExplainer, LogitTarget, ToGrid, find_target_layer
from mammo_insight.nets.factory import (
    MultiViewClassifier,
    build_classifier,
    create_backbone,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet18", "layer4"),
        ("efficientnet_b0", "bn2"),
        ("densenet121", "features"),
        ("convnext_atto", "norm_pre"),
        ("test_resnet", "layer4"),
        ("test_efficientnet", "bn2"),
        ("small_cnn", "stages"),  # the from-scratch baseline: its last block's pooled map
    ],
)
def test_cnn_target_layer_is_the_final_feature_map(name, expected):
    backbone = create_backbone(name)
    target = find_target_layer(backbone, (64, 48))
    assert target.name == expected and target.layout == "nchw"
    # the chosen module's output is exactly what forward_features returns
    seen = []
    handle = target.module.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        feats = backbone.forward_features(torch.zeros(1, 1, 64, 48))
    handle.remove()
    assert torch.equal(seen[-1], feats)


def test_vit_uses_last_block_norm1_and_drops_the_class_token():
    backbone = create_backbone("test_vit")
    target = find_target_layer(backbone)
    assert target.name == f"blocks.{len(backbone.blocks) - 1}.norm1"
    assert target.layout == "tokens" and target.num_prefix_tokens == backbone.num_prefix_tokens == 1
    grid = ToGrid(target)
    grid.input_hw = (160, 160)
    tokens = torch.arange(1 + 100, dtype=torch.float32).view(1, 101, 1).expand(1, 101, 4)
    out = grid(tokens)
    assert out.shape == (1, 4, 10, 10)
    assert (
        out[0, 0, 0, 0] == 1 and out[0, 0, 0, 1] == 2 and out[0, 0, 1, 0] == 11
    )  # row-major patches, no cls


def test_vit_cam_has_the_input_shape():
    model = build_classifier("test_vit")
    with CamExplainer(model, "gradcampp") as cam:
        result = cam(torch.rand(2, 1, 160, 160))
    assert result.maps.shape == (2, 160, 160) and result.logits.shape == (2,)


def test_logit_target_returns_the_logit():
    out = torch.tensor([0.3, -1.2])
    assert LogitTarget()(out[1]).item() == pytest.approx(-1.2)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_single_view_maps_and_logits_match_the_model(method):
    torch.manual_seed(0)
    model = build_classifier("test_resnet")
    x = torch.rand(3, 1, 64, 48)
    with CamExplainer(model, method, (64, 48)) as cam:
        result = cam(x)
    assert result.maps.shape == (3, 64, 48)
    assert np.all(result.maps >= 0) and np.all(result.maps <= 1 + 1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(result.logits, model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_hooks_are_released_after_the_with_block():
    model = build_classifier("test_resnet")
    with CamExplainer(model, "gradcam", (64, 48)) as cam:
        assert len(cam.target.module._forward_hooks) > 0
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_multi_view_explains_each_view_against_its_breast_logit():
    torch.manual_seed(0)
    model = build_classifier("test_resnet", "multi")
    assert isinstance(model, MultiViewClassifier)
    x = torch.rand(2, 3, 1, 64, 48)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    with CamExplainer(model, "gradcam", (64, 48)) as cam:
        result = cam(x, mask)
    assert result.maps.shape == (2, 3, 64, 48)
    with torch.no_grad():
        np.testing.assert_allclose(result.logits, model(x, mask).numpy(), rtol=1e-4, atol=1e-5)
    # the masked-out view cannot change the breast's logit, so it gets no gradient: a zero map
    assert result.maps[0, 2].max() == 0


def test_bad_inputs_raise_clear_errors():
    model = build_classifier("test_resnet")
    with pytest.raises(MammoInsightError, match="unknown CAM method"):
        CamExplainer(model, "nope")
    with pytest.raises(MammoInsightError, match="no layer named"):
        CamExplainer(model, "gradcam", (64, 48), layer="backbone.nowhere")
    with (
        CamExplainer(model, "gradcam", (64, 48)) as cam,
        pytest.raises(MammoInsightError, match="single-view"),
    ):
        cam(torch.rand(1, 2, 1, 64, 48))


def test_named_layer_gives_a_finer_map_source():
    model = build_classifier("test_resnet")
    x = torch.rand(1, 1, 64, 48)
    with CamExplainer(model, "gradcam", (64, 48), layer="backbone.layer2") as cam:
        assert cam.target.name == "backbone.layer2"
        assert cam(x).maps.shape == (1, 64, 48)
        fine = cam.grid_shape
    with CamExplainer(model, "gradcam", (64, 48)) as cam:
        cam(x)
        coarse = cam.grid_shape
    assert fine[0] > coarse[0] and fine[1] > coarse[1]  # layer2's grid has more cells than layer4's


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_cutting_the_graph_at_the_target_layer_changes_nothing(name, method):
    """Our speed-up (frozen weights, graph rooted at the target layer) gives pytorch-grad-cam's exact maps."""
    torch.manual_seed(0)
    model = build_classifier(name)
    x = torch.rand(2, 1, 64, 48)
    with CamExplainer(model, method, (64, 48)) as cam:
        ours = cam(x).maps
        layer = cam.target.module
    with METHODS[method](model=model, target_layers=[layer]) as plain:
        reference = plain(input_tensor=x, targets=[LogitTarget(), LogitTarget()])
    assert ours.max() > 0 and ours.std() > 0.01
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())
