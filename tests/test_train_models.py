"""Every backbone the seed studies used builds offline (pretrained=False) and scores a 1-channel image."""

from __future__ import annotations

import pytest
import torch

from mammo_insight.models.factory import build_classifier
from mammo_insight.models.run_io import save_fold_model, save_run_config
from mammo_insight.models.trained_run import TrainedRun

STUDY_MODELS = [
    "efficientnet_b0",
    "densenet121",
    "resnet50",
    "resnet101",
    "vit_small_patch16_224",
    "convnext_tiny",
    "convnextv2_tiny",
    "tf_efficientnetv2_s",
]


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
            out = model(
                torch.rand(2, 3, 1, 64, 48), torch.tensor([[True, True, False], [True, False, False]])
            )
    assert out.shape == (2,) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_study_backbones_build_and_forward_one_channel(name):
    _check(name, "single")


def test_multi_view_pools_over_present_views_only():
    """The breast embedding is [mean, max] of the present views' backbone features, as the class documents:
    absent views change nothing, the order of views changes nothing, every present view counts."""
    _check("efficientnet_b0", "multi")
    torch.manual_seed(0)
    model = build_classifier("efficientnet_b0", "multi", img_size=(64, 48)).eval()
    x = torch.rand(2, 3, 1, 64, 48)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    with torch.inference_mode():
        out, embedding = model(x, mask), model.embed(x, mask)
        per_view = model.backbone(x.flatten(0, 1)).view(2, 3, -1)  # eval mode: each view scored on its own
        two = per_view[0, :2]
        assert torch.allclose(embedding[0], torch.cat([two.mean(0), two.amax(0)]), atol=1e-5)
        assert torch.allclose(embedding[1], torch.cat([per_view[1, 0], per_view[1, 0]]), atol=1e-5)
        assert torch.allclose(out, model.head(embedding).squeeze(-1), atol=1e-5)

        junk = x.clone()
        junk[0, 2], junk[1, 1:] = torch.rand(1, 64, 48), torch.rand(2, 1, 64, 48)  # only absent views
        assert torch.allclose(model(junk, mask), out, atol=1e-5)
        swapped = x[:, [1, 0, 2]]
        assert torch.allclose(model(swapped, mask)[0], out[0], atol=1e-5)  # pooling ignores order
        changed = x.clone()
        changed[0, 1] = torch.rand(1, 64, 48)  # a present view
        assert not torch.allclose(model.embed(changed, mask)[0], embedding[0])
        assert torch.allclose(
            model.embed(changed, mask)[1], embedding[1], atol=1e-5
        )  # other breasts untouched
        # without a mask every view counts
        full = model.embed(x)[0]
        assert torch.allclose(full, torch.cat([per_view[0].mean(0), per_view[0].amax(0)]), atol=1e-5)


def test_vit_run_rebuilds_at_its_image_size(tmp_path):
    """A fixed-size model (ViT) comes back from the run directory at the size it was trained at."""
    model = build_classifier("vit_small_patch16_224", "multi", img_size=(64, 48))
    save_run_config(
        tmp_path, {"model": "vit_small_patch16_224", "view_mode": "multi", "image_size": [64, 48]}
    )
    save_fold_model(tmp_path, 0, model)
    again = TrainedRun.open(tmp_path).model(0)
    x, mask = torch.rand(1, 2, 1, 64, 48), torch.tensor([[True, False]])
    with torch.inference_mode():
        assert torch.allclose(model.eval()(x, mask), again(x, mask))
