"""Every backbone the seed studies used builds offline (pretrained=False) and takes a training step on
1-channel images at the smallest size it accepts; a smaller input is a clear error naming that size."""

from __future__ import annotations

import pytest
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.factory import build_classifier, minimum_input_side
from mammo_insight.runs.open import open_run
from mammo_insight.runs.run_io import save_fold_model, save_run_config

SLOW = pytest.mark.slow  # over about 1.5 s on one CPU thread (vgg16: 10 s, its 134 M parameters)
STUDY_MODELS = [
    "small_cnn",
    "efficientnet_b0",
    pytest.param("densenet121", marks=SLOW),
    pytest.param("resnet50", marks=SLOW),
    pytest.param("resnet101", marks=SLOW),
    pytest.param("vit_small_patch16_224", marks=SLOW),
    pytest.param("convnext_tiny", marks=SLOW),
    pytest.param("convnextv2_tiny", marks=SLOW),
    pytest.param("tf_efficientnetv2_s", marks=SLOW),
    pytest.param("vgg16", marks=SLOW),
    pytest.param("inception_v3", marks=SLOW),
]
MIN_SIDE = 16  # the smallest image_size the training config accepts


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
def test_study_backbones_take_a_training_step_at_their_minimum_size(name):
    """The head is sized from the features the backbone really pools (vgg16: 4096, not its num_features
    512), one AdamW step moves the head and the stem, and one pixel less than the minimum is refused."""
    side = minimum_input_side(name, start=MIN_SIDE)
    torch.manual_seed(0)
    model = build_classifier(name, img_size=(side, side)).eval()
    x = torch.rand(2, 1, side, side)
    with torch.no_grad():
        assert model.head.in_features == model.embedding_dim == model.embed(x).shape[1]
    model.train()
    before = [p.detach().clone() for p in (model.head.weight, next(model.backbone.parameters()))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    logits = model(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0]))
    loss.backward()
    optimizer.step()
    assert logits.shape == (2,) and torch.isfinite(loss)
    assert all(
        not torch.equal(b, p)
        for b, p in zip(before, (model.head.weight, next(model.backbone.parameters())), strict=True)
    )
    if side > MIN_SIDE:
        with pytest.raises(
            MammoInsightError, match=f"{name} needs an input of at least {side}x{side} pixels"
        ):
            build_classifier(name, img_size=(side - 1, side))


def test_too_small_an_input_names_the_minimum_found_by_trying():
    """small_cnn halves the image four times: 16 pixels is its floor, found by forwards, not a table."""
    assert minimum_input_side("small_cnn", start=1) == 16
    with pytest.raises(
        MammoInsightError, match="small_cnn needs an input of at least 16x16 pixels, the images are 8x12"
    ):
        build_classifier("small_cnn", img_size=(8, 12))
    assert build_classifier("small_cnn", "multi", img_size=(16, 16)).embedding_dim == 2 * 256


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
    again = open_run(tmp_path).model(0)
    x, mask = torch.rand(1, 2, 1, 64, 48), torch.tensor([[True, False]])
    with torch.inference_mode():
        assert torch.allclose(model.eval()(x, mask), again(x, mask))
