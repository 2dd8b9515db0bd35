"""Every backbone the seed studies used builds offline (pretrained=False) and scores a 1-channel image."""

from __future__ import annotations

import pytest
import torch

from mammo_insight.models.factory import build_classifier
from mammo_insight.models.run_io import save_fold_model, save_run_config
from mammo_insight.models.trained_run import TrainedRun

STUDY_MODELS = ["efficientnet_b0", "densenet121", "resnet50", "resnet101", "vit_small_patch16_224", "convnext_tiny",
                "convnextv2_tiny", "tf_efficientnetv2_s"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(name: str, view_mode: str = "single") -> None:
    model = build_classifier(name, view_mode, img_size=(64, 48)).eval()
    with torch.inference_mode():
        if view_mode == "single":
            out = model(torch.rand(2, 1, 64, 48))
        else:
            out = model(torch.rand(2, 3, 1, 64, 48), torch.tensor([[True, True, False], [True, False, False]]))
    assert out.shape == (2,) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_study_backbones_build_and_forward_one_channel(name):
    _check(name, "single")


def test_multi_view_pools_over_present_views_only():
    _check("efficientnet_b0", "multi")


def test_vit_run_rebuilds_at_its_image_size(tmp_path):
    """A fixed-size model (ViT) comes back from the run directory at the size it was trained at."""
    model = build_classifier("vit_small_patch16_224", "multi", img_size=(64, 48))
    save_run_config(tmp_path, {"model": "vit_small_patch16_224", "view_mode": "multi", "image_size": [64, 48]})
    save_fold_model(tmp_path, 0, model)
    again = TrainedRun.open(tmp_path).model(0)
    x, mask = torch.rand(1, 2, 1, 64, 48), torch.tensor([[True, False]])
    with torch.inference_mode():
        assert torch.allclose(model.eval()(x, mask), again(x, mask))
