"""The `pool` option: how a whole-image model turns its backbone's feature map into one vector."""

from __future__ import annotations

import json

import pytest
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.factory import build_classifier
from mammo_insight.nets.pooling import GatedAttentionPool, GeMPool, MaxPool
from mammo_insight.runs.config import TrainConfig, config_from_dict, load_config


def _one_hot_cell(value: float = 9.0) -> torch.Tensor:
    """A (1, 2, 3, 3) map of ones with channel 0 at ``value`` in one cell."""
    fmap = torch.ones(1, 2, 3, 3)
    fmap[0, 0, 1, 2] = value
    return fmap


def test_max_and_gem_weight_the_hot_cell_above_the_mean() -> None:
    fmap = _one_hot_cell()
    avg = fmap.mean(dim=(2, 3))
    assert torch.allclose(avg[0], torch.tensor([17 / 9, 1.0]))
    assert torch.allclose(MaxPool()(fmap)[0], torch.tensor([9.0, 1.0]))
    gem = GeMPool()(fmap)[0]  # p = 3: between the mean and the max on the hot channel, 1 on the flat one
    assert avg[0, 0] + 1 < gem[0] < 9.0 and torch.isclose(gem[1], torch.tensor(1.0))


def test_gem_with_p_one_is_the_mean_and_learns_p() -> None:
    fmap = torch.rand(2, 4, 5, 3)
    assert torch.allclose(GeMPool(p=1.0)(fmap), fmap.mean(dim=(2, 3)), atol=1e-6)
    pool = GeMPool()
    pool(_one_hot_cell()).sum().backward()
    assert pool.p.grad is not None and pool.p.grad != 0


def test_attention_weights_sum_to_one_and_pool_a_weighted_mean() -> None:
    torch.manual_seed(0)
    fmap = torch.rand(3, 8, 4, 2)
    pool = GatedAttentionPool(8, hidden=16)
    weights = pool.weights(fmap)
    assert weights.shape == (3, 4, 2) and torch.allclose(weights.sum(dim=(1, 2)), torch.ones(3))
    expected = (fmap * weights.unsqueeze(1)).sum(dim=(2, 3))
    assert torch.allclose(pool(fmap), expected, atol=1e-6)
    assert not torch.allclose(pool(fmap), fmap.mean(dim=(2, 3)), atol=1e-4)


def test_attention_learns_to_look_at_a_planted_lesion_cell() -> None:
    """Bags of noise cells, positives with one 'lesion' cell at a random place: after training the attention
    puts most of its weight on that cell (uniform would be 1/16)."""
    gen = torch.Generator().manual_seed(0)
    n, c, side = 64, 8, 4
    fmap = torch.rand(n, c, side, side, generator=gen)
    labels = (torch.arange(n) % 2).float()
    where = torch.randint(0, side * side, (n,), generator=gen)
    lesion = torch.zeros(c)
    lesion[:2] = 3.0
    for i in range(0, n, 2):  # the odd items are positive
        fmap[i + 1, :, where[i + 1] // side, where[i + 1] % side] += lesion
    torch.manual_seed(0)
    pool, head = GatedAttentionPool(c, hidden=16), torch.nn.Linear(c, 1)
    optimizer = torch.optim.Adam([*pool.parameters(), *head.parameters()], lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(pool(fmap)).squeeze(-1), labels)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        weights = pool.weights(fmap[1::2]).flatten(1)
    on_lesion = weights[torch.arange(n // 2), where[1::2]]
    assert on_lesion.mean() > 0.5
    assert (weights.argmax(dim=1) == where[1::2]).float().mean() > 0.9


def test_the_pool_option_builds_its_head_and_avg_keeps_the_old_state_dict() -> None:
    x = torch.rand(2, 1, 32, 32)
    avg = build_classifier("small_cnn", img_size=(32, 32))
    assert avg.pool is None and not any(k.startswith("pool.") for k in avg.state_dict())
    torch.manual_seed(0)
    maxed = build_classifier("small_cnn", img_size=(32, 32), pool="max")
    assert set(maxed.state_dict()) == set(avg.state_dict())  # max has no parameters
    fmap = maxed.backbone.forward_features(maxed.normalize(x))
    assert torch.allclose(maxed.embed(x), fmap.amax(dim=(2, 3)))
    assert torch.allclose(maxed.backbone(maxed.normalize(x)), fmap.mean(dim=(2, 3)))  # what avg reads
    attention = build_classifier("small_cnn", "multi", img_size=(32, 32), pool="attention")
    assert isinstance(attention.pool, GatedAttentionPool) and attention.embedding_dim == 2 * 256
    assert attention(torch.rand(2, 3, 1, 32, 32)).shape == (2,)
    with pytest.raises(MammoInsightError, match="pool must be one of"):
        build_classifier("small_cnn", img_size=(32, 32), pool="median")


def test_the_pool_option_is_checked_recorded_and_defaults_to_avg() -> None:
    assert TrainConfig().pool == "avg"
    assert load_config(pool="gem").pool == "gem"
    with pytest.raises(MammoInsightError, match="pool='median'"):
        load_config(pool="median")
    recorded = json.loads(json.dumps(load_config(pool="attention").to_dict()))
    assert config_from_dict(recorded).pool == "attention"
    del recorded["pool"]  # a config.json written before the option
    assert config_from_dict(recorded).pool == "avg"


def test_a_run_saved_before_the_option_opens_with_the_average(tmp_path) -> None:
    from mammo_insight.runs.open import open_run
    from mammo_insight.runs.run_io import save_fold_model

    model = build_classifier("small_cnn", img_size=(32, 32))
    save_fold_model(tmp_path, 0, model)
    (tmp_path / "config.json").write_text(json.dumps({"model": "small_cnn", "image_size": [32, 32]}))
    run = open_run(tmp_path)
    assert run.pool == "avg" and run.model(0).pool is None
    (tmp_path / "config.json").write_text(
        json.dumps({"model": "small_cnn", "image_size": [32, 32], "pool": "attention"})
    )
    with pytest.raises(RuntimeError, match="pool.value.weight"):  # the pool is part of the architecture
        open_run(tmp_path).model(0)


def test_a_patch_model_initialises_a_pooled_model_except_its_fresh_pool(tmp_path) -> None:
    from mammo_insight.runs.patch import init_from_patch_run
    from mammo_insight.runs.run_io import save_fold_model

    patch_model = build_classifier("small_cnn", img_size=(32, 32))
    save_fold_model(tmp_path, 0, patch_model)
    whole = build_classifier("small_cnn", img_size=(64, 48), pool="attention")
    init_from_patch_run(whole, tmp_path, 0)
    for key, value in patch_model.state_dict().items():
        assert torch.equal(whole.state_dict()[key], value)
    broken = {k: v for k, v in patch_model.state_dict().items() if k != "head.bias"}
    torch.save(broken, tmp_path / "folds" / "fold_0" / "model.pt")
    with pytest.raises(MammoInsightError, match="missing \\['head.bias'\\]"):
        init_from_patch_run(whole, tmp_path, 0)


def test_train_takes_the_pool_as_a_flag(tmp_path) -> None:
    from typer.testing import CliRunner

    from mammo_insight.cli.app import app

    args = ["train", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--pool", "median"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "pool='median'" in str(refused.exception)
