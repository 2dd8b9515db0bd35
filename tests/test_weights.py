"""--weights FILE through timm's public pretrained API: the stem folded to one channel, the classifier dropped,
a file that does not fit the backbone a clear error listing what did not load."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.factory import build_classifier, create_backbone


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory):
    """The state dict of a 3-channel, 1000-class timm model (as timm or torchvision ship it)."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pth"
    state = model.state_dict()
    torch.save(state, path)
    return path, state


def test_weights_load_into_the_one_channel_backbone(rgb_weights):
    path, state = rgb_weights
    backbone = create_backbone("test_resnet", path)
    got = backbone.state_dict()
    stem = "conv1.0.weight"
    assert got[stem].shape[1] == 1
    torch.testing.assert_close(got[stem], timm.models.adapt_input_conv(1, state[stem]))
    for key, value in got.items():
        if key != stem:
            assert torch.equal(value, state[key]), key
    assert not any(k.startswith("fc.") for k in got)  # the 1000-class head is not part of the backbone


def test_weights_reach_the_classifier_and_change_its_output(rgb_weights):
    path, _ = rgb_weights
    torch.manual_seed(5)
    plain = build_classifier("test_resnet").eval()
    torch.manual_seed(5)
    loaded = build_classifier("test_resnet", weights=path).eval()
    x = torch.rand(1, 1, 48, 32)
    with torch.inference_mode():
        assert not torch.allclose(plain(x), loaded(x))


def test_a_file_of_another_architecture_is_an_error_listing_what_did_not_load(tmp_path):
    other = timm.create_model("test_efficientnet", pretrained=False)
    path = tmp_path / "efficientnet.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(MammoInsightError) as info:
        create_backbone("test_resnet", path)
    message = str(info.value)
    assert "does not load into test_resnet" in message and "\n" not in message
    assert "have another shape in the file" in message and "bn1.weight" in message
    assert (
        "conv1.0.weight" not in message.split("another shape")[1].split(";")[0]
    )  # the stem is adapted, not refused


def test_missing_body_tensors_are_listed(rgb_weights, tmp_path):
    _, state = rgb_weights
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    partial["extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(MammoInsightError) as info:
        create_backbone("test_resnet", path)
    message = str(info.value)
    assert "not in the file" in message and "layer4.0.conv1.weight" in message and "extra.weight" in message


def test_unexpected_tensors_are_reported(rgb_weights, tmp_path, caplog):
    _, state = rgb_weights
    path = tmp_path / "extra.pth"
    torch.save({**state, "aux_head.weight": torch.zeros(2)}, path)
    with caplog.at_level(logging.WARNING, logger="mammo_insight.nets.factory"):
        create_backbone("test_resnet", path)
    assert "aux_head.weight" in caplog.text and "fc.weight" not in caplog.text


def test_wrapped_checkpoints_load_and_missing_files_are_errors(rgb_weights, tmp_path):
    _, state = rgb_weights
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    backbone = create_backbone("test_resnet", path)
    assert torch.equal(backbone.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    with pytest.raises(MammoInsightError, match="does not exist"):
        create_backbone("test_resnet", tmp_path / "nope.pth")


def test_the_factory_imports_no_private_timm_module():
    from pathlib import Path

    from mammo_insight.nets import factory, weights

    for module in (factory, weights):
        assert "timm.models._" not in Path(module.__file__).read_text()
