"""Every kind of run through every command that takes --run: a patch run beside a cnn run on the same folds.

The synthetic cohort's planted lesions train a tiny patch run (pretrained=False) and a tiny whole-image run
with the same folds and seed; then embed -> fuse-train, predict, evaluate, explain, compare and ensemble
take the patch run, and a patch run can no longer be read as a whole-image run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.cache import load_cache_image, read_cache_index

SEED = 3
PATCH = {
    "model": "test_efficientnet",
    "patch_size": 24,
    "folds": 3,
    "epochs": 2,
    "device": "cpu",
    "seed": SEED,
}
CNN = {"model": "test_efficientnet", "folds": 3, "epochs": 1, "batch_size": 16, "device": "cpu", "seed": SEED}


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.imaging.build import build_cache
    from mammo_insight.imaging.pipeline import PreprocessConfig
    from mammo_insight.runs.config import PatchConfig, TrainConfig
    from mammo_insight.stages.patch_train import PatchTrainConfig, run_patch_train, write_patch_train
    from mammo_insight.stages.train import train_run
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("run_kinds")
    make_synthetic_cohort(root / "data", n_patients=24, seed=1, size=(256, 192), prevalence=0.5)
    cohort = load_cohort("rsna", root / "data")
    build_cache(cohort, root / "cache", PreprocessConfig(size=(128, 96)), show_progress=False, sheet_size=0)
    write_patch_train(
        run_patch_train(PatchTrainConfig(root / "cache", root / "patch", PatchConfig(**PATCH))),
        root / "patch",
    )
    train_run(root / "cache", root / "cnn", TrainConfig(**CNN))
    return {
        "root": root,
        "data": root / "data",
        "cache": root / "cache",
        "patch": root / "patch",
        "cnn": root / "cnn",
    }


@pytest.mark.slow
def test_a_patch_run_opens_as_a_patch_run_and_never_as_a_whole_image_run(runs) -> None:
    from mammo_insight.runs.open import open_run
    from mammo_insight.runs.patch_run import PatchRun
    from mammo_insight.runs.trained_run import CnnRun

    run = open_run(runs["patch"])
    assert isinstance(run, PatchRun) and run.spec.kind == "patch" and run.folds == (0, 1, 2)
    assert run.spec.input_size == (24, 24) and run.image_size == (128, 96)
    with pytest.raises(MammoInsightError, match="is a patch run, not a whole-image"):
        CnnRun.open(runs["patch"])
    assert isinstance(open_run(runs["cnn"]), CnnRun)


@pytest.mark.slow
def test_a_patch_runs_film_score_is_the_max_of_its_map_and_its_embedding_the_mean_tile_feature(runs) -> None:
    import torch

    from mammo_insight.runs.open import open_run
    from mammo_insight.runs.tiles import tile_features

    run = open_run(runs["patch"])
    oof = run.oof()
    index = read_cache_index(runs["cache"]).set_index("image_id")
    rows = oof.groupby("fold").head(2)
    recipe = run.spec.recipe
    for row in rows.itertuples():
        model = run.model(int(row.fold))
        image = load_cache_image(runs["cache"], index.loc[row.image_id].to_dict())
        assert run.slide(model, image).score == pytest.approx(row.prob, abs=1e-6)
        features, _ = tile_features(
            model,
            image,
            patch_size=recipe.patch_size,
            stride=run.stride,
            tissue_level=recipe.tissue_level,
            device=torch.device("cpu"),
        )
        table = index.loc[[row.image_id]].reset_index()
        embedded = run.embed(model, runs["cache"], table, device="cpu", batch_size=64)
        assert embedded.shape == (1, model.embedding_dim + 1)
        np.testing.assert_allclose(embedded[0, :-1], features.mean(axis=0), rtol=1e-5, atol=1e-6)
        assert 1 / (1 + np.exp(-embedded[0, -1])) == pytest.approx(row.prob, abs=1e-5)
        other = run.model((int(row.fold) + 1) % 3)
        assert not np.allclose(run.embed(other, runs["cache"], table, device="cpu", batch_size=64), embedded)


@pytest.mark.slow
def test_a_patch_run_goes_through_embed_fuse_train_predict_evaluate_and_explain(runs, tmp_path) -> None:
    from mammo_insight.runs.open import open_run

    emb = tmp_path / "emb.parquet"
    result = _cli("embed", "--run", runs["patch"], "--cache", runs["cache"], "--out", emb, "--device", "cpu")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(emb)
    images = table[table["level"] == "image"]
    dim = open_run(runs["patch"]).model(0).embedding_dim
    assert images["oof"].all() and len([c for c in table if c.startswith("emb_")]) == dim
    oof = open_run(runs["patch"]).oof().set_index("image_id")
    logit = images.set_index("image_id")["cnn_logit"]
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), oof.loc[logit.index, "prob"], atol=1e-5)

    fused = _cli(
        "fuse-train",
        "--dataset",
        "rsna",
        "--root",
        runs["data"],
        "--embeddings",
        emb,
        "--out",
        tmp_path / "fuse",
    )
    assert fused.exit_code == 0, fused.output
    assert (tmp_path / "fuse" / "metrics.json").is_file()

    out_csv = tmp_path / "pred.csv"
    predicted = _cli(
        "predict",
        "--run",
        runs["patch"],
        "--images",
        runs["data"] / "train_images",
        "--out",
        out_csv,
        "--device",
        "cpu",
    )
    assert predicted.exit_code == 0, predicted.output
    breasts = pd.read_csv(out_csv)
    assert len(breasts) and breasts["prob"].between(0, 1).all()

    evaluated = _cli(
        "evaluate",
        "--run",
        runs["patch"],
        "--cache",
        runs["cache"],
        "--out",
        tmp_path / "ev",
        "--allow-overlap",
        "--device",
        "cpu",
    )
    assert evaluated.exit_code == 0, evaluated.output
    preds = pd.read_csv(tmp_path / "ev" / "oof_predictions.csv", dtype={"image_id": str}).set_index(
        "image_id"
    )
    assert preds["prob"].between(0, 1).all() and preds["prob_learned"].between(0, 1).all()
    # the mean over the fold models of each film's map maximum
    run = open_run(runs["patch"])
    image_id = preds.index[0]
    row = read_cache_index(runs["cache"]).set_index("image_id").loc[image_id].to_dict()
    image = load_cache_image(runs["cache"], row)
    expected = np.mean([run.slide(model, image).score for _, model in run.models()])
    assert preds.loc[image_id, "prob"] == pytest.approx(expected, abs=1e-6)

    explained = _cli(
        "explain",
        "--run",
        runs["patch"],
        "--cache",
        runs["cache"],
        "--out",
        tmp_path / "ex",
        "--n",
        1,
        "--device",
        "cpu",
    )
    assert explained.exit_code == 0, explained.output
    metrics = json.loads((tmp_path / "ex" / "cam_metrics.json").read_text())
    assert metrics["method"] == "lesion_map" and metrics["kind"] == "patch" and metrics["n_cases"] > 0
    assert metrics["pointing_game"] is not None


@pytest.mark.slow
def test_a_patch_run_is_compared_with_and_ensembled_with_a_cnn_run_on_the_same_folds(runs, tmp_path) -> None:
    from mammo_insight.runs.ensemble import EnsembleRun
    from mammo_insight.runs.open import open_run

    compared = _cli(
        "compare", "--runs", runs["cnn"], runs["patch"], "--out", tmp_path / "cmp", "--n-boot", 50
    )
    assert compared.exit_code == 0, compared.output
    assert "cnn_vs_patch" in json.loads((tmp_path / "cmp" / "compare.json").read_text())["paired"]["image"]

    out = tmp_path / "ens"
    made = _cli("ensemble", "--runs", runs["cnn"], runs["patch"], "--out", out, "--n-boot", 50)
    assert made.exit_code == 0, made.output
    ensemble = open_run(out)
    assert isinstance(ensemble, EnsembleRun) and [m.spec.kind for m in ensemble.members] == ["cnn", "patch"]
    rows = read_cache_index(runs["cache"]).head(4)
    images, _ = ensemble.ensemble_predict(runs["cache"], rows)
    parts = [m.ensemble_predict(runs["cache"], rows)[0]["prob"].to_numpy() for m in ensemble.members]
    np.testing.assert_allclose(images["prob"], np.mean(parts, axis=0), atol=1e-7)
    evaluated = _cli(
        "evaluate", "--run", out, "--cache", runs["cache"], "--out", tmp_path / "ev", "--allow-overlap"
    )
    assert evaluated.exit_code == 0, evaluated.output
    refused = _cli("embed", "--run", out, "--cache", runs["cache"], "--out", tmp_path / "e.parquet")
    assert refused.exit_code != 0 and "is an ensemble of 2 runs" in str(refused.exception or refused.output)
    reported = _cli(
        "report", "--runs", runs["cnn"], "--runs", runs["patch"], "--runs", out, "--out", tmp_path / "rep"
    )
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "patch-train" in page and "ensemble" in page
