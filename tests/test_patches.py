"""The patch classifier and its lesion maps on the synthetic cohort's planted lesions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammo_insight.cohort.folds import assign_folds
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import load_cache_image, read_cache_index
from mammo_insight.runs.map_pooling import MAP_STATISTICS
from mammo_insight.runs.patch import PatchConfig, cut_patches
from mammo_insight.training.patches import patch_folds, sample_patches
from mammo_insight.training.sources import load_training_table

FAST = {
    "model": "test_efficientnet",
    "patch_size": 24,
    "folds": 3,
    "epochs": 4,
    "device": "cpu",
    "cpu_threads": 1,
}


def _sampled(cache: Path, **options) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, PatchConfig]:
    config = PatchConfig(**{**FAST, **options})
    table = patch_folds(load_training_table(cache, "cancer"), config)
    patches, pixels = sample_patches(cache, table, annotations.read(cache), config)
    return patches, pixels, table, config


@pytest.mark.slow  # builds a synthetic cache (DICOMs, preprocess): about 10 s
def test_patches_follow_the_lesions_the_tissue_and_the_whole_image_folds(synth_cache) -> None:
    patches, pixels, table, config = _sampled(synth_cache)
    lesions = annotations.read(synth_cache)
    n_lesion = config.lesion_patches * len(lesions)
    assert (patches["kind"] == "lesion").sum() == n_lesion
    assert (patches["kind"] == "background").sum() == int(np.ceil(config.background_ratio * n_lesion))
    assert pixels.shape == (len(patches), 24, 24)
    # a lesion patch's centre lies within the jitter of its lesion; a background one on tissue, off lesions
    index = (
        read_cache_index(synth_cache)
        .assign(image_id=lambda f: f["image_id"].astype(str))
        .set_index("image_id")
    )
    by_image = annotations.by_image(lesions)
    for image_id, group in patches.groupby("image_id"):
        image = load_cache_image(synth_cache, index.loc[image_id])
        background = group[group["kind"] == "background"]
        cx, cy = background["cx"].astype(int).to_numpy(), background["cy"].astype(int).to_numpy()
        assert (image[cy, cx] > config.tissue_level).all()
        if image_id in by_image:
            near = annotations.cache_lesion_mask(by_image[image_id], image.shape, synth_cache, tolerance=11.9)
            assert not near[cy, cx].any()
            own = by_image[image_id][["cache_x", "cache_y"]].to_numpy()
            centres = group.loc[group["kind"] == "lesion", ["cx", "cy"]].to_numpy()
            gap = np.abs(centres[:, None, :] - own[None, :, :]).max(axis=2).min(axis=1)
            assert (gap <= config.jitter * config.patch_size + 1e-9).all()
    # the folds are train's: the same function over the same training table
    train_folds = assign_folds(load_training_table(synth_cache, "cancer"), 3, 0, "cancer")
    fold_of = dict(zip(table["image_id"].astype(str), train_folds, strict=True))
    assert (patches["fold"] == patches["image_id"].map(fold_of)).all()
    assert patches.groupby("patient_id")["fold"].nunique().max() == 1


@pytest.mark.slow  # builds a synthetic cache (DICOMs, preprocess): about 10 s
def test_background_ratio_and_patch_size_take_effect(synth_cache) -> None:
    patches, pixels, *_ = _sampled(synth_cache, background_ratio=1.0, patch_size=16)
    assert (patches["kind"] == "background").sum() == (patches["kind"] == "lesion").sum()
    assert pixels.shape[1:] == (16, 16)


def test_cut_patches_pads_with_zeros_at_the_edge() -> None:
    image = np.ones((10, 8), np.float32)
    patch = cut_patches(image, np.array([0.0]), np.array([0.0]), 4)[0]
    assert patch.shape == (4, 4) and patch[:2].sum() == 0 and patch[2:, 2:].all()


@pytest.mark.slow  # builds a synthetic cache (DICOMs, preprocess): about 10 s
def test_no_annotation_is_a_clear_error(synth_cache, tmp_path) -> None:
    config = PatchConfig(**FAST)
    table = patch_folds(load_training_table(synth_cache, "cancer"), config)
    with pytest.raises(MammoInsightError, match="no annotated lesion"):
        sample_patches(synth_cache, table, annotations.empty(annotations.CACHE_COLUMNS), config)


@pytest.fixture(scope="module")
def patch_run(synth_cache, tmp_path_factory) -> Path:
    from mammo_insight.stages.patch_train import PatchTrainConfig, run_patch_train, write_patch_train

    out = tmp_path_factory.mktemp("patch_run")
    write_patch_train(run_patch_train(PatchTrainConfig(synth_cache, out, PatchConfig(**FAST))), out)
    return out


@pytest.mark.slow
def test_patch_model_finds_planted_lesions_and_its_map_points_at_them(patch_run) -> None:
    out = patch_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["patch"]["roc_auc"]["value"] > 0.9
    assert metrics["patch"]["n"] == len(pd.read_csv(out / "patches.csv"))
    maps = json.loads((out / "lesion_map_metrics.json").read_text())
    chance = maps["lesion_area_fraction"]
    assert maps["pointing_game"] > max(5 * chance, maps["randomised_pointing_game"] + 0.3)
    assert maps["energy_inside"] > maps["randomised_energy_inside"]
    checks = pd.read_csv(out / "tables" / "lesion_map_checks.csv")
    assert len(checks) == maps["n_images"] > 0
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert sorted(oof["fold"].unique()) == [0, 1, 2] and oof["prob"].between(0, 1).all()
    # the pooling's inputs and its out-of-fold learned score sit beside the max, which stays prob
    assert set(MAP_STATISTICS) <= set(oof.columns) and (oof["prob"] == oof["map_max"]).all()
    assert oof["prob_learned"].between(0, 1).all()
    assert (oof["map_top_mean"] <= oof["map_max"]).all() and (oof["map_mean"] <= oof["map_top_mean"]).all()
    assert metrics["learned"]["image"]["n"] == metrics["image"]["n"] == len(oof)
    assert sorted(metrics["learned_pooling"]["coefficients"]) == ["0", "1", "2"]
    assert sorted(p.name for p in (out / "folds").iterdir()) == ["fold_0", "fold_1", "fold_2"]
    assert (out / "index.html").is_file() and (out / "manifest.json").is_file()
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["cache_size"] == json.loads((Path(recorded["cache"]) / "config.json").read_text())["size"]


@pytest.mark.slow
def test_whole_image_run_starts_each_fold_from_its_patch_model(synth_cache, patch_run, tmp_path) -> None:
    """`train --init-patch-run`: fold k's whole-image model starts from fold k's patch classifier."""
    import torch

    from mammo_insight.runs.config import TrainConfig
    from mammo_insight.stages.train import TrainStageConfig, run_train

    common = {"model": "test_efficientnet", "folds": 3, "epochs": 1, "batch_size": 16, "device": "cpu"}
    # a learning rate of 1e-9 leaves the weights where they started: the patch model's, fold by fold
    options = TrainConfig(**common, lr=1e-9, init_patch_run=str(patch_run))
    result = run_train(TrainStageConfig(synth_cache, tmp_path / "run", options))
    assert result.values["init_patch_run"] == str(patch_run)
    for fold in (0, 2):
        start = torch.load(patch_run / "folds" / f"fold_{fold}" / "model.pt", weights_only=True)
        trained = torch.load(tmp_path / "run" / "folds" / f"fold_{fold}" / "model.pt", weights_only=True)
        learnt = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]
        assert learnt and all(torch.allclose(start[k], trained[k], atol=1e-5) for k in learnt)
    other = torch.load(patch_run / "folds" / "fold_1" / "model.pt", weights_only=True)
    assert not all(torch.allclose(other[k], trained[k], atol=1e-5) for k in learnt)
    with pytest.raises(MammoInsightError, match="holds test_efficientnet patch models"):
        wrong = TrainConfig(**{**common, "model": "resnet10t"}, init_patch_run=str(patch_run))
        run_train(TrainStageConfig(synth_cache, tmp_path / "other", wrong))
    with pytest.raises(MammoInsightError, match="folds 3 there, 4 here"):
        wrong = TrainConfig(**{**common, "folds": 4}, init_patch_run=str(patch_run))
        run_train(TrainStageConfig(synth_cache, tmp_path / "other", wrong))
    assert not (tmp_path / "other" / "folds").exists()  # refused before any fold trained


@pytest.mark.slow
def test_frozen_patch_features_with_an_attention_head_train_only_the_head(
    synth_cache, patch_run, tmp_path
) -> None:
    """Item (a): `--init-patch-run` with freeze_epochs = epochs and frozen_bn = "keep" trains the attention
    pool and the linear head on the patch model's frozen feature map; the backbone leaves as it came."""
    import torch

    from mammo_insight.runs.config import TrainConfig
    from mammo_insight.runs.open import open_run
    from mammo_insight.stages.train import TrainStageConfig, run_train

    options = TrainConfig(
        model="test_efficientnet",
        folds=3,
        epochs=2,
        batch_size=16,
        device="cpu",
        lr=1e-2,
        pool="attention",
        freeze_epochs=2,
        frozen_bn="keep",
        init_patch_run=str(patch_run),
    )
    result = run_train(TrainStageConfig(synth_cache, tmp_path / "run", options))
    assert result.values["pool"] == "attention"
    start = torch.load(patch_run / "folds" / "fold_1" / "model.pt", weights_only=True)
    trained = torch.load(tmp_path / "run" / "folds" / "fold_1" / "model.pt", weights_only=True)
    backbone = [k for k in start if k.startswith("backbone.")]
    assert backbone and all(torch.equal(start[k], trained[k]) for k in backbone)  # running stats too
    assert not torch.allclose(start["head.weight"], trained["head.weight"])
    assert {k for k in trained if k.startswith("pool.")} == {
        f"pool.{layer}.{p}" for layer in ("value", "gate", "score") for p in ("weight", "bias")
    }
    run = open_run(tmp_path / "run")
    model = run.model(1)
    assert run.pool == "attention" and model.embed(torch.rand(2, 1, 128, 96)).shape == (
        2,
        model.embedding_dim,
    )
