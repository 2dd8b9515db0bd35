"""The studies' recipes end to end on a tiny cache: small_cnn from scratch, a per-breast warm-up, zoom,
shift and grid patch dropping, checkpoints chosen on balanced accuracy, the operating point at a target
sensitivity, and the negative-class metrics in metrics.json and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from train_cache import write_cache

from mammo_insight.runs.config import load_config
from mammo_insight.runs.run_io import fold_model_path, load_oof
from mammo_insight.stages.train import train_run

pytestmark = pytest.mark.slow


def test_small_cnn_recipe_trains_on_balanced_accuracy_and_operates_at_the_target_sensitivity(tmp_path: Path):
    cache = write_cache(tmp_path / "cache", n_patients=24, seed=1, prevalence=0.3)
    config = load_config(
        None,
        model="small_cnn",
        folds=2,
        epochs=3,
        batch_size=8,
        lr=0.002,
        cpu_threads=1,
        warmup_epochs=1,
        monitor="balanced_accuracy",
        threshold_method="sensitivity",
        target_sensitivity=0.9,
        pos_weight="auto",
        augment={"rotate_degrees": 0, "zoom": 0.1, "shift": 0.05, "patch_drop_rate": 0.1, "patch_size": 8},
    )
    out = train_run(cache, tmp_path / "run", config)

    history = pd.read_csv(out / "history.csv")
    val = history[history["split"] == "val"]
    assert len(val) == 6 and val["balanced_accuracy"].between(0, 1).all()  # the monitored key was logged

    metrics = json.loads((out / "metrics.json").read_text())
    oof = load_oof(out)
    for level in ("image", "breast", "breast_max"):
        body = metrics[level]
        assert body["recall"]["value"] >= 0.9 and "sensitivity >= 0.9" in body["threshold_source"]
        for name in ("specificity", "npv", "f1_negative"):
            cell = body[name]
            assert cell["ci_low"] <= cell["value"] <= cell["ci_high"], (level, name)
    flagged = oof["prob"] >= metrics["image"]["threshold"]
    assert flagged[oof["cancer"] == 1].mean() >= 0.9
    negatives = oof["cancer"] == 0
    assert metrics["image"]["specificity"]["value"] == pytest.approx((~flagged[negatives]).mean())
    npv = (oof.loc[~flagged, "cancer"] == 0).mean() if (~flagged).any() else 0.0  # 0 with no negative call
    assert np.isclose(metrics["image"]["npv"]["value"], npv)
    html = (out / "index.html").read_text()
    assert all(name in html for name in ("specificity", "npv", "f1_negative"))


@pytest.mark.parametrize("select_epoch", ["best", "last"])
def test_select_epoch_decides_which_epoch_scores_the_fold(tmp_path: Path, select_epoch: str):
    """'last' scores the fold with the final epoch's weights, never the epoch chosen on that fold: each
    fold's out-of-fold ROC-AUC equals the logged validation AUC of its final epoch, 'best' its highest."""
    cache = write_cache(tmp_path / "cache", n_patients=16, seed=2, prevalence=0.4)
    index = pd.read_parquet(cache / "index.parquet")  # a label the pixels do not carry: AUC wanders by epoch
    noise = dict(zip(index["breast_id"].unique(), np.random.default_rng(0).random(32) < 0.4, strict=False))
    index["noise"] = index["breast_id"].map(noise).astype(int)
    index.to_parquet(cache / "index.parquet")
    config = load_config(
        None, model="small_cnn", folds=2, epochs=4, batch_size=8, lr=0.003, cpu_threads=1,
        monitor="auc", select_epoch=select_epoch, label_column="noise",
    )  # fmt: skip
    out = train_run(cache, tmp_path / "run", config)
    history = pd.read_csv(out / "history.csv")
    oof = load_oof(out)
    differ = 0
    for fold, rows in oof.groupby("fold"):
        val = history[(history["split"] == "val") & (history["fold"] == fold)].sort_values("epoch")["roc_auc"]
        expected = val.iloc[-1] if select_epoch == "last" else val.max()
        got = roc_auc_score(rows["noise"], rows["prob"])
        assert got == pytest.approx(expected, abs=1e-6), (got, val.tolist())
        differ += not np.isclose(val.iloc[-1], val.max())
    assert differ  # the data make the two choices differ, so the test tells them apart


@pytest.mark.parametrize("frozen_bn", ["update", "keep"])
def test_frozen_bn_keep_survives_lightning_training_and_validation(tmp_path: Path, frozen_bn: str):
    """Through the whole engine (train/validation switches included), frozen groups' BatchNorm layers
    keep their starting statistics with "keep" (a fresh layer's: mean 0) and move with "update"."""
    cache = write_cache(tmp_path / "cache", n_patients=8, seed=3, prevalence=0.5)
    config = load_config(
        None, model="test_efficientnet", folds=2, epochs=2, batch_size=8, cpu_threads=1,
        trainable_groups=1, frozen_bn=frozen_bn,
    )  # fmt: skip
    out = train_run(cache, tmp_path / "run", config)
    state = torch.load(fold_model_path(out, 0), weights_only=True)
    stem = [v for k, v in state.items() if k.startswith("backbone.bn1.running_mean")]
    head = [v for k, v in state.items() if k.startswith("backbone.bn2.running_mean")]
    assert stem and head and bool(head[0].abs().sum() > 0)  # the trained top group's layer moved
    assert bool(stem[0].abs().sum() == 0) == (frozen_bn == "keep")
