"""patch-train on train's engine: its settings specialise TrainConfig, its folds train through Lightning
(augmented patch dataset, atomic checkpoints, resume after kill -9, seeding)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_patches import FAST

from mammo_insight.errors import MammoInsightError
from mammo_insight.runs.config import PATCH_AUGMENT, PatchConfig, TrainConfig, load_config
from mammo_insight.training.augment import patch_augment
from mammo_insight.training.patches import PatchDataset

# PATCHRUN/config.json's keys before patch-train moved onto the engine: a run's readers rely on them
OLD_KEYS = {
    "patch_size", "lesion_patches", "jitter", "background_ratio", "tissue_level", "model", "pretrained",
    "weights", "normalize", "epochs", "batch_size", "lr", "weight_decay", "folds", "seed", "label_column",
    "device", "map_stride", "cache", "cache_size", "stage",
}  # fmt: skip


def test_patch_settings_are_the_training_settings_with_the_patch_recipe() -> None:
    assert issubclass(PatchConfig, TrainConfig)
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    assert shared < {f.name for f in dataclasses.fields(PatchConfig)}
    patch, train = PatchConfig(), TrainConfig()
    assert (patch.model, patch.epochs, patch.batch_size, patch.lr) == ("resnet10t", 8, 64, 1e-3)
    assert (patch.pos_weight, patch.select_epoch, patch.augment) == ("auto", "last", PATCH_AUGMENT)
    assert (patch.weight_decay, patch.folds, patch.schedule) == (train.weight_decay, train.folds, "cosine")
    for config in (patch, train):
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.epochs = 2  # type: ignore[misc]
    # one validator: the shared checks and the patch ones, named in one line
    with pytest.raises(
        MammoInsightError, match=r"invalid training option\(s\): patch_size=4, lr=0 \(expected 0 < x"
    ):
        PatchConfig(lr=0, patch_size=4)  # the patch check, then the shared range of lr
    with pytest.raises(MammoInsightError, match="view_mode='multi'"):
        PatchConfig(view_mode="multi")
    with pytest.raises(MammoInsightError, match="pool='gem'"):
        PatchConfig(pool="gem")


@given(st.integers(-4, 64), st.floats(-1, 1, allow_nan=False))
def test_patch_size_and_jitter_are_validated(size: int, jitter: float) -> None:
    ok = size >= 8 and 0 <= jitter <= 0.5
    if ok:
        assert PatchConfig(patch_size=size, jitter=jitter).stride == max(1, size // 4)
    else:
        with pytest.raises(MammoInsightError, match="invalid training option"):
            PatchConfig(patch_size=size, jitter=jitter)


def test_a_toml_file_sets_patch_options_over_the_patch_defaults(tmp_path) -> None:
    path = tmp_path / "patch.toml"
    path.write_text(
        '[patch]\nepochs = 2\nprecision = "bf16-mixed"\nstrategy = "ddp"\n[patch.augment]\nrotate_degrees = 5\n'
    )
    config = load_config(path, kind=PatchConfig, lr=0.01)
    assert isinstance(config, PatchConfig)
    assert (config.epochs, config.precision, config.strategy, config.lr) == (2, "bf16-mixed", "ddp", 0.01)
    assert (config.augment.rotate_degrees, config.augment.vflip) == (5, 0.5)  # over the patch flips
    assert PatchConfig(**json.loads(json.dumps(config.to_dict()))) == config  # config.json round trip
    assert OLD_KEYS - {"cache", "cache_size", "stage"} <= set(config.to_dict())


def test_patch_items_are_seeded_and_take_every_symmetry_of_the_square() -> None:
    patch = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    data = PatchDataset(patch, np.array([1.0]), patch_augment(PATCH_AUGMENT))
    assert torch.equal(data[(0, 7)]["image"], data[(0, 7)]["image"])
    assert torch.equal(data[0]["image"][0], torch.from_numpy(patch[0]))  # no seed: as cut
    seen = {tuple(data[(0, seed)]["image"].flatten().tolist()) for seed in range(200)}
    assert len(seen) == 8  # four quarter turns, each mirrored
    plain = PatchDataset(
        patch, np.array([1.0]), patch_augment(dataclasses.replace(PATCH_AUGMENT, hflip=0.0, vflip=0.0))
    )
    assert len({tuple(plain[(0, s)]["image"].flatten().tolist()) for s in range(50)}) == 2  # transpose only


def _run(cache: Path, out: Path, **changes) -> Path:
    from mammo_insight.stages.patch_train import PatchTrainConfig, run_patch_train, write_patch_train

    write_patch_train(run_patch_train(PatchTrainConfig(cache, out, PatchConfig(**{**FAST, **changes}))), out)
    return out


@pytest.fixture(scope="module")
def straight(synth_cache, tmp_path_factory) -> Path:
    return _run(synth_cache, tmp_path_factory.mktemp("straight"))


def _figures(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("seconds")
    return {"metrics": metrics, "maps": json.loads((run / "lesion_map_metrics.json").read_text())}


@pytest.mark.slow
def test_a_patch_run_trains_on_the_engine_and_keeps_its_contract(straight) -> None:
    recorded = json.loads((straight / "config.json").read_text())
    assert OLD_KEYS <= set(recorded) and recorded["stage"] == "patch-train"
    assert not (straight / "checkpoints").exists()  # done folds leave no Lightning checkpoints
    metrics = json.loads((straight / "metrics.json").read_text())
    for fold in range(3):
        history = pd.read_csv(straight / "folds" / f"fold_{fold}" / "history.csv")
        assert sorted(history["epoch"].unique()) == [0, 1, 2, 3] and set(history["split"]) == {"train", "val"}
        losses = history[history["split"] == "train"]["loss"].round(4).tolist()
        assert metrics["train_loss"][str(fold)] == losses and losses[-1] < losses[0]
        state = torch.load(straight / "folds" / f"fold_{fold}" / "model.pt", weights_only=True)
        assert "head.weight" in state


@pytest.mark.slow
def test_same_seed_gives_the_same_figures_and_another_seed_others(synth_cache, straight, tmp_path) -> None:
    again = _run(synth_cache, tmp_path / "again")
    assert _figures(again) == _figures(straight)
    probs = [pd.read_csv(run / "patches.csv")["prob"] for run in (again, straight)]
    np.testing.assert_array_equal(*probs)
    other = _run(synth_cache, tmp_path / "other", seed=1)
    assert _figures(other)["metrics"]["patch"] != _figures(straight)["metrics"]["patch"]


@pytest.mark.slow
def test_killed_patch_train_resumes_and_ends_where_an_uninterrupted_run_ends(
    synth_cache,
    straight,
    tmp_path,
) -> None:
    """kill -9 while fold 1 trains (fold 0 done, fold 1 has a last.ckpt); the rerun skips fold 0, resumes
    fold 1 from its checkpoint and writes the figures of the run that was never stopped."""
    out = tmp_path / "resumed"
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); from test_patches import FAST;"
        "from mammo_insight.runs.config import PatchConfig;"
        "from mammo_insight.stages.patch_train import PatchTrainConfig, run_patch_train, write_patch_train;"
        f"write_patch_train(run_patch_train(PatchTrainConfig(Path({str(synth_cache)!r}), Path({str(out)!r}),"
        f" PatchConfig(**FAST))), Path({str(out)!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    last = out / "checkpoints" / "fold_1" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.is_file(), "fold 1's first checkpoint never appeared"
    assert (out / "folds" / "fold_0" / "history.csv").is_file() and not (out / "metrics.json").is_file()
    done_before = (out / "folds" / "fold_0" / "model.pt").stat().st_mtime_ns

    _run(synth_cache, out)
    assert (out / "folds" / "fold_0" / "model.pt").stat().st_mtime_ns == done_before  # skipped
    resumed, plain = (pd.read_csv(run / "patches.csv") for run in (out, straight))
    assert (resumed["prob"] - plain["prob"]).abs().max() < 1e-5
    assert _figures(out)["maps"] == pytest.approx(_figures(straight)["maps"], abs=1e-5, nan_ok=True)
    history = pd.read_csv(out / "folds" / "fold_1" / "history.csv")
    assert history.shape == pd.read_csv(straight / "folds" / "fold_1" / "history.csv").shape


@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused(synth_cache, straight) -> None:
    with pytest.raises(MammoInsightError, match="lesion_patches differ"):
        _run(synth_cache, straight, lesion_patches=2)


@pytest.mark.slow
def test_ddp_patch_train_on_two_cpu_processes_scores_every_patch_and_writes_once(
    synth_cache, tmp_path
) -> None:
    """`patch-train --config` with devices = 2 and strategy = "ddp": two CPU processes (gloo) train each
    fold; rank 0 alone scores, writes and reports."""
    config = tmp_path / "ddp.toml"
    config.write_text(
        'model = "test_efficientnet"\npatch_size = 16\nfolds = 2\nepochs = 2\ndevice = "cpu"\n'
        'cpu_threads = 1\ndevices = 2\nstrategy = "ddp"\n'
    )
    run = tmp_path / "run"
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "mammo_insight.cli.app", "patch-train", "--cache", str(synth_cache)]
        + ["--out", str(run), "--config", str(config)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("report: ") == 1
    recorded = json.loads((run / "config.json").read_text())
    assert (recorded["strategy"], recorded["devices"], recorded["epochs"]) == ("ddp", 2, 2)
    patches = pd.read_csv(run / "patches.csv")
    assert patches["prob"].between(0, 1).all() and set(patches["fold"]) == {0, 1}
    for fold in (0, 1):
        history = pd.read_csv(run / "folds" / f"fold_{fold}" / "history.csv")
        assert sorted(history["epoch"].unique()) == [0, 1]
    assert not (run / "checkpoints").exists()
