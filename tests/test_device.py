"""resolve_device: one policy for every command (auto picks CUDA when present; an absent device is an error)."""

from __future__ import annotations

import pytest
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.device import resolve_device
from mammo_insight.runs.config import load_config


def _cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_picks_cuda_when_present_else_the_cpu(monkeypatch):
    _cuda(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    _cuda(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_cpu_is_always_the_cpu(monkeypatch):
    _cuda(monkeypatch, 1)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_an_explicit_gpu_that_is_present_is_used(monkeypatch):
    _cuda(monkeypatch, 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_an_explicit_gpu_that_is_absent_is_a_clear_error_naming_it(monkeypatch, name):
    _cuda(monkeypatch, 0)
    with pytest.raises(MammoInsightError, match=f"--device {name} was asked for but torch sees no CUDA GPU"):
        resolve_device(name)


def test_a_gpu_index_beyond_the_count_is_an_error(monkeypatch):
    _cuda(monkeypatch, 2)
    with pytest.raises(MammoInsightError, match=r"--device cuda:2 .* 2 CUDA GPU\(s\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "mps", ""])
def test_an_unknown_name_is_an_error(name):
    with pytest.raises(MammoInsightError, match="--device must be"):
        resolve_device(name)


def test_training_uses_the_same_policy(monkeypatch):
    from mammo_insight.training.engine import lightning_device

    _cuda(monkeypatch, 0)
    assert lightning_device(load_config(None, device="auto")) == ("cpu", "32-true")
    with pytest.raises(MammoInsightError, match="--device cuda:1 was asked for"):
        lightning_device(load_config(None, device="cuda:1"))
    with pytest.raises(MammoInsightError, match="device='gpu'"):
        load_config(None, device="gpu")


def test_every_command_that_runs_a_model_accepts_device_with_default_auto():
    import inspect

    from mammo_insight.cli import embed, evaluate, explain, predict

    for module in (evaluate, embed, explain, predict):
        param = inspect.signature(module.command).parameters["device"]
        assert param.default == "auto", module.__name__
