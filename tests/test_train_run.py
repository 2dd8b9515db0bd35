"""Training end to end on a tiny synthetic cache: finds the planted lesions, resumes exactly, multi-view,
external validation, and keeps augmented / external-only rows out of the out-of-fold predictions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from train_cache import write_cache
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.runs.config import TrainConfig
from mammo_insight.runs.open import open_run
from mammo_insight.runs.run_io import load_oof
from mammo_insight.stages.train import train_run

pytestmark = pytest.mark.slow

# Tuned on 2 busy CPU cores: ~10 s of training per run; breast ROC-AUC 1.0 on seeds 0-2. One torch thread:
# with more threads than free cores, OpenMP barriers make each step tens of times slower.
TOML = """model = "test_resnet"
folds = 2
epochs = 5
batch_size = 8
lr = 0.01
seed = 0
cpu_threads = 1
[augment]
rotate_degrees = 0
"""


def _config(**changes) -> TrainConfig:
    from mammo_insight.runs.config import load_config

    return load_config(
        None,
        **{
            "model": "test_resnet",
            "folds": 2,
            "epochs": 5,
            "batch_size": 8,
            "lr": 0.01,
            "augment": {"rotate_degrees": 0},
            "cpu_threads": 1,
            **changes,
        },
    )


def _cache_with_train_only_rows(root: Path) -> Path:
    write_cache(root, n_patients=40, seed=0)
    index = pd.read_parquet(root / "index.parquet")
    pos = index[index["cancer"] == 1].head(4)
    augmented = pos.assign(image_id=pos["image_id"] + "_aug", is_augmented=True)
    external = pos.head(2).assign(
        patient_id="EXT", breast_id="EXT_L", image_id=["EXT1", "EXT2"], external_only=True
    )
    full = pd.concat([index, augmented, external], ignore_index=True)
    full.to_parquet(root / "index.parquet")
    return root


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Scoring outside train_run (evaluate, predict) also runs on one thread here."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return _cache_with_train_only_rows(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory) -> Path:
    """One uninterrupted run through the CLI with a TOML config."""
    out = tmp_path_factory.mktemp("run") / "run"
    config = out.parent / "train.toml"
    config.write_text(TOML)
    result = CliRunner().invoke(
        app, ["train", "--cache", str(cache), "--out", str(out), "--config", str(config), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_short_cpu_training_finds_the_planted_lesions(run: Path):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["breast"]["roc_auc"]["value"] >= 0.8
    folds = metrics["folds"]  # the folds actually used, as cohort.folds drew them
    assert folds["k"] == 2 and folds["seed"] == json.loads((run / "config.json").read_text())["seed"]
    assert all(f["positive_patients"] > 0 for f in folds["per_fold"]) and "stratified" in folds["policy"]
    for level in ("image", "breast"):
        for name in (
            "accuracy",
            "balanced_accuracy",
            "precision",
            "recall",
            "f1",
            "macro_f1",
            "pf1",
            "roc_auc",
            "pr_auc",
        ):
            cell = metrics[level][name]
            assert cell["ci_low"] <= cell["value"] <= cell["ci_high"], (level, name)
    config = json.loads((run / "config.json").read_text())
    assert config["image_size"] == [64, 48] and len(config["cache_index_sha256"]) == 64
    assert 0 < config["threshold"] < 1 and "torch" in config["versions"]
    history = pd.read_csv(run / "history.csv")
    assert set(history["split"]) == {"train", "val"} and len(history) == 2 * 5 * 2
    assert {"fold", "epoch", "loss", "pf1", "roc_auc"} <= set(history.columns)
    assert (run / "index.html").stat().st_size > 10_000 and (run / "baselines.json").is_file()


def test_out_of_fold_predictions_cover_each_validatable_image_once(run: Path, cache: Path):
    oof = load_oof(run)
    index = pd.read_parquet(cache / "index.parquet")
    ordinary = index[index["is_augmented"].isna() & index["external_only"].isna()]
    assert sorted(oof["image_id"]) == sorted(ordinary["image_id"])
    assert not oof["image_id"].str.endswith("_aug").any() and "EXT" not in set(oof["patient_id"])
    assert (oof.groupby("patient_id")["fold"].nunique() == 1).all()
    assert {"image_id", "breast_id", "patient_id", "fold", "prob", "cancer", "view", "age"} <= set(
        oof.columns
    )
    # the exported fold model reproduces its out-of-fold probabilities
    assert open_run(run).folds == (0, 1)
    model = open_run(run).model(0)
    from mammo_insight.runs.predict import Reading, predict_cache

    val = index[index["image_id"].isin(oof.loc[oof["fold"] == 0, "image_id"])]
    again, _ = predict_cache(model, cache, val, Reading("single", (64, 48)))
    merged = again.merge(oof, on="image_id", suffixes=("", "_oof"))
    assert (merged["prob"] - merged["prob_oof"]).abs().max() < 1e-5


def test_killed_training_resumes_and_ends_where_an_uninterrupted_run_ends(
    run: Path, cache: Path, tmp_path: Path
):
    out = tmp_path / "resumed"
    script = (
        "import sys; sys.path.insert(0, 'tests');"
        "from test_train_run import _config; from mammo_insight.stages.train import train_run;"
        f"train_run({str(cache)!r}, {str(out)!r}, _config())"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    last = out / "checkpoints" / "fold_0" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let the checkpoint write finish
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.is_file(), "the first epoch's checkpoint never appeared"
    assert not (out / "oof_predictions.csv").is_file(), "the run finished before it could be killed"

    train_run(cache, out, _config())
    resumed, straight = load_oof(out), load_oof(run)
    merged = resumed.merge(straight, on="image_id", suffixes=("", "_straight"))
    assert len(merged) == len(straight)
    assert (merged["fold"] == merged["fold_straight"]).all()
    assert (merged["prob"] - merged["prob_straight"]).abs().max() < 1e-5
    assert pd.read_csv(out / "history.csv").shape == pd.read_csv(run / "history.csv").shape


def test_changed_settings_refuse_to_resume(run: Path, cache: Path):
    from mammo_insight.errors import MammoInsightError

    with pytest.raises(MammoInsightError, match="seed"):
        train_run(cache, run, _config(seed=5))


def test_multi_view_run_with_missing_views(tmp_path: Path):
    cache = write_cache(tmp_path / "cache", n_patients=16, seed=1, drop_views=5)
    out = train_run(cache, tmp_path / "run", _config(view_mode="multi", epochs=1, max_views=2))
    index = pd.read_parquet(cache / "index.parquet")
    breasts = pd.read_csv(out / "oof_breast_predictions.csv")
    assert len(breasts) == index["breast_id"].nunique()
    assert breasts["prob"].between(0, 1).all()
    oof = load_oof(out)
    assert len(oof) == len(index)
    one_view = index.groupby("breast_id").size().loc[lambda s: s == 1].index
    assert len(one_view) > 0 and oof[oof["breast_id"].isin(one_view)]["prob"].notna().all()
    assert open_run(out).model(1).__class__.__name__ == "MultiViewClassifier"


def test_evaluate_scores_another_cache_with_every_fold(run: Path, tmp_path: Path):
    other = write_cache(tmp_path / "other", n_patients=12, seed=5, size=(80, 60))
    index = pd.read_parquet(other / "index.parquet")
    for col in ("patient_id", "image_id", "breast_id"):  # other women: ids the run never saw
        index[col] = "X" + index[col]
    copy = index.head(1).assign(image_id="COPY", is_augmented=True)
    pd.concat([index, copy], ignore_index=True).to_parquet(other / "index.parquet")
    out = tmp_path / "external"
    result = CliRunner().invoke(
        app, ["evaluate", "--run", str(run), "--cache", str(other), "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(out / "oof_predictions.csv")
    assert len(preds) == 12 * 4 and (preds["fold"] == -1).all() and "COPY" not in set(preds["image_id"])
    # every fold model scores every image (resized to the run's 64 x 48) and the probabilities are averaged
    from mammo_insight.runs.predict import Reading, predict_cache

    opened = open_run(run)
    per_fold = [
        predict_cache(opened.model(k), other, index, Reading("single", (64, 48)))[0].set_index("image_id")[
            "prob"
        ]
        for k in opened.folds
    ]
    assert len(per_fold) == 2 and (per_fold[0] - per_fold[1]).abs().max() > 1e-3
    mean = (per_fold[0] + per_fold[1]) / 2
    assert (preds.set_index("image_id")["prob"].loc[mean.index] - mean).abs().max() < 1e-5
    metrics = json.loads((out / "metrics.json").read_text())
    run_metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["image"]["threshold"] == pytest.approx(run_metrics["image"]["threshold"])
    assert metrics["breast"]["roc_auc"]["value"] >= 0.8  # the lesions look the same at another size
    assert (out / "index.html").is_file()


def test_every_imbalance_and_schedule_option_takes_effect(tmp_path: Path, monkeypatch):
    """Two-phase warm-up, balanced sampler, focal loss, soft labels, progressive unfreezing, plateau LR, early stop:
    each option is seen doing what it says, through what the run records or a cheap probe.

    The positive women are external-only (they train in every fold and are never validated), so every
    validation fold is negative and its pF1, the monitored metric, is 0 from the first epoch: the plateau
    schedule and early stopping are then bound to act, at epochs worked out by hand below.
    """
    import numpy as np
    import torch

    from mammo_insight.training.lightning_module import GroupUnfreeze
    from mammo_insight.training.losses import FocalLoss
    from mammo_insight.training.sampling import EpochSampler

    cache = write_cache(tmp_path / "cache", n_patients=12, seed=2, prevalence=0.15)
    index = pd.read_parquet(cache / "index.parquet")
    positive_women = set(index.loc[index["cancer"] == 1, "patient_id"])
    index["external_only"] = index["patient_id"].isin(positive_women)
    index.to_parquet(cache / "index.parquet")
    assert 2 <= len(positive_women) <= 6

    epochs_seen: list[tuple[int, int]] = []  # (fold, epoch) in training order
    plans: list[
        tuple[int, np.ndarray, np.ndarray]
    ] = []  # (epoch, training labels, labels of the items drawn)
    trainable: list[float] = []  # share of backbone parameters that train, per epoch
    weights: list[dict[str, torch.Tensor]] = []  # backbone + head parameters at each epoch start
    losses: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []  # (epoch index, logits, targets, loss)

    sampler_iter = EpochSampler.__iter__

    def recording_iter(self):
        plans.append((self.epoch, self.labels, self.labels[self._plan()]))
        return sampler_iter(self)

    unfreeze = GroupUnfreeze.on_train_epoch_start

    def recording_unfreeze(self, trainer, pl_module):
        unfreeze(self, trainer, pl_module)
        folds_started = sum(epoch == 0 for _, epoch in epochs_seen)
        fold = folds_started if trainer.current_epoch == 0 else folds_started - 1
        epochs_seen.append((fold, trainer.current_epoch))
        params = list(pl_module.model.backbone.parameters())
        trainable.append(sum(p.numel() for p in params if p.requires_grad) / sum(p.numel() for p in params))
        weights.append({k: v.detach().clone() for k, v in pl_module.model.named_parameters()})

    focal = FocalLoss.forward

    def recording_focal(self, logits, targets):
        value = focal(self, logits, targets)
        losses.append(
            (len(epochs_seen) - 1, logits.detach().clone(), targets.detach().clone(), float(value.detach()))
        )
        return value

    monkeypatch.setattr(EpochSampler, "__iter__", recording_iter)
    monkeypatch.setattr(GroupUnfreeze, "on_train_epoch_start", recording_unfreeze)
    monkeypatch.setattr(FocalLoss, "forward", recording_focal)

    lr, patience = 0.01, 3
    config = _config(
        epochs=6,
        warmup_epochs=1,
        sampler="balanced",
        target_pos_ratio=0.4,
        warmup_pos_ratio=0.5,
        loss="focal",
        focal_gamma=2.0,
        focal_alpha=0.25,
        positive_label=0.9,
        freeze_epochs=1,
        unfreeze_stages=2,
        schedule="plateau",
        early_stopping_patience=patience,
        lr=lr,
        pos_weight="auto",  # a BCE option: focal loss ignores it (the hand computation shows it)
        augment={"erase_p": 0.5, "noise_std": 0.02, "vflip": 0.5},
    )
    out = train_run(cache, tmp_path / "run", config)
    history = pd.read_csv(out / "history.csv")
    assert set(history["fold"]) == {0, 1} and history["loss"].notna().all()
    oof = load_oof(out)
    assert len(oof) == (~index["external_only"]).sum() and not set(oof["patient_id"]) & positive_women

    # early stopping: validation pF1 never beats its first value, so each fold ends after 1 + patience epochs
    val = history[history["split"] == "val"]
    assert (val["pf1"] == 0).all()
    n_run = 1 + patience
    assert (val.groupby("fold")["epoch"].max() == n_run - 1).all() and n_run < config.epochs
    assert epochs_seen == [(f, e) for f in (0, 1) for e in range(n_run)]

    # plateau: the LR halves after two epochs without improvement (history holds each epoch's starting LR)
    train_hist = history[history["split"] == "train"].sort_values(["fold", "epoch"])
    for _, rows in train_hist.groupby("fold"):
        assert rows["lr"].tolist() == pytest.approx([lr, lr, lr, lr / 2])

    # two-phase sampling: epoch 0 is every positive plus as many negatives (drawn once each),
    # later epochs a balanced draw of the training set's size at the target positive share
    assert [epoch for epoch, _, _ in plans] == [epoch for _, epoch in epochs_seen]
    for epoch, labels, drawn in plans:
        n_pos = int((labels == 1).sum())
        assert n_pos == (index["cancer"] == 1).sum()  # every positive trains in every fold
        if epoch == 0:
            assert len(drawn) == 2 * n_pos and (drawn == 1).sum() == n_pos
        else:
            assert len(drawn) == len(labels) and (drawn == 1).sum() == round(0.4 * len(labels))

    # progressive unfreezing: backbone frozen in epoch 0, its top half open in epoch 1, all of it from epoch 2;
    # a frozen parameter does not move during its epoch, an open one does
    fractions = dict(zip(epochs_seen, trainable, strict=True))
    for fold in (0, 1):
        assert fractions[fold, 0] == 0 and 0 < fractions[fold, 1] < 1
        assert all(fractions[fold, e] == 1 for e in range(2, n_run))
    first_block = next(k for k in weights[0] if k.startswith("backbone.conv1"))
    last_block = next(k for k in weights[0] if k.startswith("backbone.layer4"))
    for i in range(n_run - 1):  # fold 0's epochs
        before, after = weights[i], weights[i + 1]
        assert not torch.equal(before["head.weight"], after["head.weight"])
        assert torch.equal(before[first_block], after[first_block]) == (i < 2)
        assert torch.equal(before[last_block], after[last_block]) == (i < 1)

    # focal loss on soft labels: the targets are 0 and 0.9, and every batch's loss is the formula by hand
    targets = torch.cat([t for _, _, t, _ in losses])
    assert targets.unique().tolist() == pytest.approx([0.0, 0.9])
    for _, logits, target, value in losses:
        p = torch.sigmoid(logits.double())
        t = target.double()
        ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
        p_t = p * t + (1 - p) * (1 - t)
        alpha_t = 0.25 * t + 0.75 * (1 - t)
        assert value == pytest.approx(float((alpha_t * ce * (1 - p_t) ** 2).mean()), rel=1e-4)
    # and history's training loss is the epoch's item-weighted mean of those batch losses
    batches = (
        pd.DataFrame(
            [(*epochs_seen[i], value * len(logits), len(logits)) for i, logits, _, value in losses],
            columns=["fold", "epoch", "total", "n"],
        )
        .groupby(["fold", "epoch"])
        .sum()
    )
    got = train_hist.set_index(["fold", "epoch"])["loss"].loc[batches.index]
    np.testing.assert_allclose(got, batches["total"] / batches["n"], rtol=1e-4)


def _train_in_subprocess(cache: Path, out: Path, changes: dict) -> subprocess.Popen:
    script = (
        "import sys; sys.path.insert(0, 'tests');"
        "from test_train_run import _config; from mammo_insight.stages.train import train_run;"
        f"train_run({str(cache)!r}, {str(out)!r}, _config(**{changes!r}))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_when(proc: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_at_several_points_with_dropout_and_augmentation_resumes_byte_identical(
    cache: Path, tmp_path: Path
):
    """Dropout draws from torch's global generator; StepSeed reseeds it (and numpy's, python's, CUDA's)
    from (seed, fold, epoch, batch) before each training batch, so a run killed at any point and resumed from its
    epoch-end checkpoint writes the same bytes as one that never stopped. Kills: just after fold 0's first
    checkpoint, mid-fold 0 (epoch 3 written), and during fold 1 (fold 0 done, its checkpoint gone)."""
    changes = {
        "dropout": 0.5,
        "epochs": 4,
        "augment": {"hflip": 0.5, "rotate_degrees": 10, "brightness": 0.2, "noise_std": 0.05},
    }
    straight = tmp_path / "straight"
    train_run(cache, straight, _config(**changes))
    out = tmp_path / "killed"
    fold0, fold1 = (out / "checkpoints" / f"fold_{k}" / "last.ckpt" for k in (0, 1))

    def epoch_of(path: Path) -> int:
        from mammo_insight.errors import MammoInsightError
        from mammo_insight.runs.run_io import load_weights

        try:
            return int(load_weights(path)["epoch"])
        except MammoInsightError:  # absent or being written
            return -1

    kills = [
        lambda: fold0.is_file(),
        lambda: epoch_of(fold0) >= 2,
        lambda: (out / "folds" / "fold_0" / "oof.csv").is_file() and fold1.is_file(),
    ]
    for ready in kills:
        _kill_when(_train_in_subprocess(cache, out, changes), ready)
        assert not (out / "oof_predictions.csv").is_file(), "the run finished before it could be killed"
    train_run(cache, out, _config(**changes))
    for name in ("oof_predictions.csv", "metrics.json", "baselines.json"):
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name
    no_dropout = tmp_path / "no_dropout"  # the test can fail: dropout changes the predictions
    train_run(cache, no_dropout, _config(**{**changes, "dropout": 0.0}))
    assert (no_dropout / "oof_predictions.csv").read_bytes() != (
        straight / "oof_predictions.csv"
    ).read_bytes()
