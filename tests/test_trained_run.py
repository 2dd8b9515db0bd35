"""open_run on a cnn run folder (fabricated: tiny random-init fold models, a PNG cache at the run's size).

The ensemble is checked against each fold model's own probabilities computed here, by hand, from the
models as they were saved (not through the package's prediction code).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mammo_insight.cohort.schema import CANONICAL_COLUMNS
from mammo_insight.errors import MammoInsightError
from mammo_insight.nets.factory import build_classifier
from mammo_insight.runs.open import open_run
from mammo_insight.runs.run_io import fold_model_path, save_fold_model, save_run_config

SIZE = (48, 32)
PATIENTS = ["p0", "p1", "p2"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_cache(root) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for p in PATIENTS:
        for lat in ("L", "R"):
            for view in ("CC", "MLO"):
                image_id = f"{p}{lat}{view}"
                rel = f"images/{p}/{image_id}.png"
                (root / "images" / p).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / rel), (rng.random(SIZE) * 255).astype(np.uint8))
                rows.append(
                    {
                        "patient_id": p,
                        "image_id": image_id,
                        "breast_id": f"{p}_{lat}",
                        "laterality": lat,
                        "view": view,
                        "cancer": float(p == "p1"),
                        "cache_path": rel,
                        "status": "ok",
                    }
                )
    index = pd.DataFrame(rows)
    for col in CANONICAL_COLUMNS:
        if col not in index:
            index[col] = None
    index.to_parquet(root / "index.parquet")
    return index


def make_run(root, view_mode: str, folds=(0, 1, 2), **extra) -> list[torch.nn.Module]:
    save_run_config(
        root,
        {
            "model": "test_resnet",
            "view_mode": view_mode,
            "image_size": list(SIZE),
            "max_views": 2,
            "seed": 0,
            **extra,
        },
    )
    models = []
    for k in folds:
        torch.manual_seed(10 + k)
        model = build_classifier("test_resnet", view_mode).eval()
        save_fold_model(root, k, model)
        models.append(model)
    return models


def pixels(cache, image_id: str) -> torch.Tensor:
    path = next((cache / "images").rglob(f"{image_id}.png"))
    return torch.from_numpy(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0)


@torch.no_grad()
def test_ensemble_predict_is_the_mean_of_each_fold_models_probability(tmp_path):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    index = make_cache(cache)
    models = make_run(run_dir, "single")
    run = open_run(run_dir)
    assert run.folds == (0, 1, 2) and run.image_size == SIZE and not run.multi_view
    images, breasts = run.ensemble_predict(cache, index.drop(columns=["cancer"]), "cpu", batch_size=5)
    assert breasts is None and images["cancer"].isna().all()  # rows without the label get it empty
    x = torch.stack([pixels(cache, i) for i in images["image_id"]])[:, None]
    per_fold = np.stack([torch.sigmoid(m(x)).numpy() for m in models])
    assert np.abs(per_fold[0] - per_fold[1]).max() > 1e-4  # the fold models are distinguishable
    np.testing.assert_allclose(images["prob"].to_numpy(), per_fold.mean(axis=0), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_multi_view_ensemble_scores_breasts(tmp_path):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    index = make_cache(cache)
    models = make_run(run_dir, "multi", folds=(0, 1))
    images, breasts = open_run(run_dir).ensemble_predict(cache, index, "cpu")
    stack = torch.stack([pixels(cache, "p2RCC"), pixels(cache, "p2RMLO")])[None, :, None]  # (1, V, 1, H, W)
    mask = torch.ones(1, 2, dtype=torch.bool)
    expected = np.mean([torch.sigmoid(m(stack, mask)).item() for m in models])
    got = breasts.set_index("breast_id").loc["p2_R", "prob"]
    assert got == pytest.approx(expected, rel=1e-5)
    assert (images.loc[images["breast_id"] == "p2_R", "prob"] == got).all()


def test_model_is_the_saved_fold_model_in_eval_mode(tmp_path):
    models = make_run(tmp_path, "single", folds=(0, 2))
    run = open_run(tmp_path)
    assert run.folds == (0, 2)
    model = run.model(2)
    assert not model.training
    for key, value in models[1].state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    with pytest.raises(MammoInsightError, match="fold 1 has no model"):
        run.model(1)
    assert [fold for fold, _ in run.models()] == [0, 2]


def test_a_folder_that_is_not_a_finished_run_is_a_clear_error(tmp_path):
    with pytest.raises(MammoInsightError, match="not a training run"):
        open_run(tmp_path)
    save_run_config(tmp_path, {"model": "test_resnet", "image_size": list(SIZE)})
    with pytest.raises(MammoInsightError, match="no trained fold model"):
        open_run(tmp_path)
    fold_model_path(tmp_path, 0).parent.mkdir(parents=True)
    fold_model_path(tmp_path, 0).write_bytes(b"")
    with pytest.raises(MammoInsightError, match="no breast-level threshold"):
        open_run(tmp_path).threshold("breast")


def test_thresholds_come_from_metrics_json_else_config(tmp_path):
    make_run(tmp_path, "single", folds=(0,), thresholds={"image": 0.2, "breast": 0.3})
    run = open_run(tmp_path)
    assert run.thresholds() == {"image": 0.2, "breast": 0.3}
    (tmp_path / "metrics.json").write_text(
        json.dumps({"image": {"threshold": 0.4}, "breast": {"threshold": 0.5}, "note": "x"})
    )
    assert run.thresholds() == {"image": 0.4, "breast": 0.5} and run.threshold("breast") == 0.5


def test_preprocessing_is_the_runs_copy_else_its_cache_else_defaults(tmp_path):
    settings = {
        "size": [48, 32],
        "bits": 16,
        "flip": "none",
        "backend": "pydicom",
        "margin": 0.02,
        "mask": False,
    }
    make_run(tmp_path / "a", "single", folds=(0,), preprocess=settings)
    run = open_run(tmp_path / "a")
    assert run.preprocess() == settings
    config = run.preprocess_config()
    assert (
        tuple(config.size) == (48, 32) and config.bits == 16 and config.flip is False and config.mask is False
    )

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "config.json").write_text(json.dumps({**settings, "bits": 8}))
    make_run(tmp_path / "b", "single", folds=(0,), cache=str(cache))
    assert open_run(tmp_path / "b").preprocess()["bits"] == 8

    make_run(tmp_path / "c", "single", folds=(0,), cache=str(tmp_path / "gone"))
    assert open_run(tmp_path / "c").preprocess() == {"size": list(SIZE)}
    assert tuple(open_run(tmp_path / "c").preprocess_config().size) == SIZE


def test_the_mean_of_scorings_keeps_only_the_score_columns_every_part_has():
    """A patch run's learned pooling recorded for some folds only, or one ensemble member's: left out, not
    averaged over the parts that have it; a column every part has is averaged."""
    from mammo_insight.runs.base import mean_predictions

    ids = pd.DataFrame({"image_id": ["a", "b"]})
    with_pooling = (ids.assign(prob=[0.2, 0.4], prob_learned=[0.1, 0.3]), None)
    without = (ids.assign(prob=[0.6, 0.8]), None)
    images, breasts = mean_predictions([with_pooling, without])
    assert breasts is None and list(images.columns) == ["image_id", "prob"]
    np.testing.assert_allclose(images["prob"], [0.4, 0.6])
    both, _ = mean_predictions([with_pooling, (ids.assign(prob=[0.6, 0.8], prob_learned=[0.5, 0.7]), None)])
    np.testing.assert_allclose(both["prob_learned"], [0.3, 0.5])
