"""Transfer-learning schedule by timm's parameter groups: the trainable share of the backbone per epoch for
each family, and the learning rates of the groups (nets/unfreeze.py)."""

from __future__ import annotations

import pytest
import torch

from mammo_insight.nets.factory import build_classifier
from mammo_insight.nets.unfreeze import (
    apply_schedule,
    backbone_groups,
    lr_multipliers,
    open_groups,
    trainable_fraction,
)
from mammo_insight.runs.config import TrainConfig

FAMILIES = ["test_resnet", "test_efficientnet", "test_convnext", "densenet121", "test_vit"]


def _fractions(model, config, epochs):
    groups = backbone_groups(model.backbone, config.group_level)
    out = []
    for epoch in range(epochs):
        apply_schedule(groups, epoch, config)
        out.append(trainable_fraction(model.backbone))
    return groups, out


@pytest.mark.parametrize("name", FAMILIES)
def test_gradual_unfreezing_opens_the_backbone_group_by_group(name):
    model = build_classifier(name, img_size=(32, 32))
    config = TrainConfig(model=name, freeze_epochs=1, unfreeze_stages=3)
    groups, fractions = _fractions(model, config, 5)
    assert len(groups) >= 4  # the body is more than one group, whatever its top-level children
    assert fractions[0] == 0
    assert 0 < fractions[1] < fractions[2] < 1 and fractions[3] == fractions[4] == 1
    assert all(p.requires_grad for p in model.head.parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_only_the_last_groups_ever_train(name):
    model = build_classifier(name, img_size=(32, 32))
    config = TrainConfig(model=name, trainable_groups=2)
    groups, fractions = _fractions(model, config, 3)
    top_two = sum(p.numel() for g in groups[-2:] for p in g) / sum(p.numel() for g in groups for p in g)
    assert fractions == pytest.approx([top_two] * 3) and 0 < top_two < 1
    assert not any(p.requires_grad for p in groups[0])


def test_fine_groups_are_finer_than_coarse_ones():
    model = build_classifier("densenet121")
    assert len(backbone_groups(model.backbone, "fine")) > 3 * len(backbone_groups(model.backbone, "coarse"))


def test_layer_decay_and_the_lower_rate_of_late_groups_reach_the_optimizer():
    from mammo_insight.training.lightning_module import ClassifierModule

    config = TrainConfig(
        model="test_resnet",
        lr=0.01,
        freeze_epochs=1,
        trainable_groups=3,
        unfreeze_lr_scale=0.1,
        layer_decay=0.5,
    )
    assert lr_multipliers(5, config) == pytest.approx(
        [0.1 * 0.5**4, 0.1 * 0.5**3, 0.1 * 0.25, 0.1 * 0.5, 0.1]
    )
    unfrozen_from_start = TrainConfig(model="test_resnet", layer_decay=0.5)
    assert lr_multipliers(3, unfrozen_from_start) == pytest.approx([0.25, 0.5, 1.0])
    module = ClassifierModule(build_classifier("test_resnet"), config, torch.nn.BCEWithLogitsLoss())
    optimizer = module.configure_optimizers()["optimizer"]
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[:-1] == pytest.approx([0.01 * f for f in lr_multipliers(5, config)])
    assert lrs[-1] == 0.01  # the head
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(module.model.parameters()))


def test_open_groups_counts_from_the_top():
    config = TrainConfig(freeze_epochs=2, unfreeze_stages=2, trainable_groups=4)
    assert [open_groups(e, 10, config) for e in range(5)] == [0, 0, 2, 4, 4]
    assert [open_groups(e, 10, TrainConfig()) for e in range(2)] == [10, 10]


def _bn_layers(backbone, group):
    """BatchNorm layers whose parameters all lie in ``group``."""
    ids = {id(p) for p in group}
    return [
        m
        for m in backbone.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and all(id(p) in ids for p in m.parameters(recurse=False))
    ]


@pytest.mark.parametrize("frozen_bn", ["update", "keep"])
def test_frozen_bn_keep_leaves_the_running_statistics_of_frozen_groups_alone(frozen_bn):
    from mammo_insight.training.lightning_module import GroupUnfreeze

    model = build_classifier("test_efficientnet", img_size=(32, 32))
    config = TrainConfig(model="test_efficientnet", trainable_groups=1, frozen_bn=frozen_bn)
    groups = backbone_groups(model.backbone, config.group_level)
    frozen, top = _bn_layers(model.backbone, groups[0]), _bn_layers(model.backbone, groups[-1])
    assert frozen and top
    before = [m.running_mean.clone() for m in frozen + top]
    callback, trainer = GroupUnfreeze(config), type("Trainer", (), {"current_epoch": 0})()
    model.train()
    callback.on_train_epoch_start(trainer, type("Module", (), {"model": model})())
    callback.on_train_batch_start(trainer, type("Module", (), {"model": model})(), None, 0)
    model(torch.rand(4, 1, 32, 32) * 3 + 1)
    moved = [not torch.equal(b, m.running_mean) for b, m in zip(before, frozen + top, strict=True)]
    assert all(moved[len(frozen) :])  # the trained group's statistics always adapt
    assert all(moved[: len(frozen)]) == (frozen_bn == "update") and any(moved[: len(frozen)]) == (
        frozen_bn == "update"
    )
