"""embed: each image is embedded by the fold model that never saw its patient (fabricated run and cache).

The run is fabricated: random-init tiny timm models (test_efficientnet), a different seed per fold so
the fold models are distinguishable, and an oof_predictions.csv assigning patients to folds; one
patient is left out of it (a "held-out" patient) and must get the mean over the fold models.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.cohort.schema import CANONICAL_COLUMNS
from mammo_insight.fusion.emb_table import embedding_columns, read_embeddings
from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.nets.factory import build_classifier
from mammo_insight.runs.open import open_run
from mammo_insight.runs.run_io import save_fold_model, save_run_config
from mammo_insight.stages.embed import EmbedConfig, run_embed

SIZE = (64, 48)


def compute_embeddings(run, cache, batch_size, device):
    return run_embed(EmbedConfig(run=run, cache=cache, batch_size=batch_size, device=device)).table


def load_fold_model(run, fold):
    return open_run(run).model(fold)


FOLD_OF = {"p0": 0, "p1": 1, "p2": 2, "p3": 0, "p4": 1}  # p5 is held out (not in the OOF file)
PATIENTS = [*FOLD_OF, "p5"]


def make_cache(root):
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
                        "cancer": float(p == "p1" and lat == "L"),
                        "cache_path": rel,
                        "status": "ok",
                    }
                )
    index = pd.DataFrame(rows)
    for col in CANONICAL_COLUMNS:
        if col not in index:
            index[col] = None
    index.to_parquet(root / "index.parquet")
    (root / "config.json").write_text(json.dumps({"size": list(SIZE), "bits": 8}))
    return index


def make_run(root, index, view_mode):
    save_run_config(
        root,
        {
            "model": "test_efficientnet",
            "view_mode": view_mode,
            "image_size": list(SIZE),
            "folds": 3,
            "seed": 0,
        },
    )
    for k in range(3):
        torch.manual_seed(100 + k)
        save_fold_model(root, k, build_classifier("test_efficientnet", view_mode))
    oof = index[index["patient_id"].isin(FOLD_OF)][["image_id", "breast_id", "patient_id"]].copy()
    oof["fold"], oof["prob"] = oof["patient_id"].map(FOLD_OF), 0.5
    oof.to_csv(root / "oof_predictions.csv", index=False)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed")
    cache, run = tmp / "cache", tmp / "run"
    index = make_cache(cache)
    make_run(run, index, "single")
    return cache, run, compute_embeddings(run, cache, batch_size=5, device="cpu")


@torch.no_grad()
def embed_with(model, image):
    return model.embed(torch.from_numpy(image)[None, None]).numpy()[0]


def test_each_image_uses_the_fold_model_that_never_saw_its_patient(single):
    cache, run, emb = single
    images = emb[emb["level"] == "image"].set_index("image_id")
    cols = embedding_columns(emb)
    assert len(images) == 4 * len(PATIENTS) and len(cols) > 0
    models = [load_fold_model(run, k) for k in range(3)]
    for image_id, row in images.iterrows():
        pixels = load_cache_image(cache, f"images/{row['patient_id']}/{image_id}.png")
        per_fold = [embed_with(m, pixels) for m in models]
        got = row[cols].to_numpy(float)
        if row["patient_id"] in FOLD_OF:
            k = FOLD_OF[row["patient_id"]]
            assert row["fold"] == k and row["oof"]
            np.testing.assert_allclose(got, per_fold[k], rtol=1e-4, atol=1e-5)
            for other in set(range(3)) - {k}:  # the fold models are distinguishable
                assert np.abs(got - per_fold[other]).max() > 1e-3
        else:
            assert pd.isna(row["fold"]) and not row["oof"]
            np.testing.assert_allclose(got, np.mean(per_fold, axis=0), rtol=1e-4, atol=1e-5)


def test_breast_rows_pool_their_images(single):
    _, _, emb = single
    cols = embedding_columns(emb)
    breasts = emb[emb["level"] == "breast"].set_index("breast_id")
    images = emb[emb["level"] == "image"]
    assert len(breasts) == 2 * len(PATIENTS)
    assert (breasts["view"] == "CC+MLO").all()
    pooled = images.groupby("breast_id")[cols].mean()
    np.testing.assert_allclose(
        breasts.loc[pooled.index, cols].to_numpy(float), pooled.to_numpy(), rtol=1e-5, atol=1e-6
    )
    assert breasts.loc["p2_L", "fold"] == 2 and not breasts.loc["p5_R", "oof"]
    # a breast's logit is train's breast score: the mean of its images' probabilities, not of their logits
    probs = (1 / (1 + np.exp(-images["cnn_logit"].astype(float)))).groupby(images["breast_id"]).mean()
    np.testing.assert_allclose(
        breasts.loc[probs.index, "cnn_logit"].astype(float), np.log(probs / (1 - probs)), rtol=1e-5, atol=1e-5
    )


def test_a_breast_logit_averages_probabilities_not_logits():
    """Two breasts whose images' mean logit is equal (-1): train ranks the one with a confident image first."""
    from mammo_insight.stages.embed import _breast_logit

    got = _breast_logit(np.array([-4.0, 2.0, -1.0, -1.0]), np.array([0, 0, 1, 1]), np.array([2.0, 2.0]))
    mean_prob = (1 / (1 + np.exp(4.0)) + 1 / (1 + np.exp(-2.0))) / 2
    np.testing.assert_allclose(got, [np.log(mean_prob / (1 - mean_prob)), -1.0], rtol=1e-6)
    assert got[0] > got[1]


@pytest.mark.slow
@torch.no_grad()
def test_multi_view_breast_embedding_comes_from_stacked_views(tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    index = make_cache(cache)
    make_run(run, index, "multi")
    emb = compute_embeddings(run, cache, batch_size=4, device="cpu")
    cols = embedding_columns(emb)
    breast = emb[(emb["level"] == "breast") & (emb["breast_id"] == "p1_R")].iloc[0]
    views = [load_cache_image(cache, f"images/p1/p1R{v}.png") for v in ("CC", "MLO")]
    stack = torch.zeros(1, 4, 1, *SIZE)
    stack[0, :2, 0] = torch.from_numpy(np.stack(views))
    mask = torch.tensor([[True, True, False, False]])
    expected = load_fold_model(run, 1).embed(stack, mask).numpy()[0]
    np.testing.assert_allclose(breast[cols].to_numpy(float), expected, rtol=1e-4, atol=1e-5)
    image = emb[(emb["level"] == "image") & (emb["image_id"] == "p1RCC")].iloc[0]
    single_view = load_fold_model(run, 1).embed(torch.from_numpy(views[0])[None, None, None]).numpy()[0]
    np.testing.assert_allclose(image[cols].to_numpy(float), single_view, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cli_embed_writes_a_readable_table(tmp_path, single):
    cache, run, _ = single
    out = tmp_path / "EMB.parquet"
    result = CliRunner().invoke(
        app, ["embed", "--run", str(run), "--cache", str(cache), "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    table = read_embeddings(out)
    assert set(table["level"]) == {"image", "breast"}
    assert "not out-of-fold" in result.output
    manifest = json.loads(out.with_name("EMB.parquet.manifest.json").read_text())
    assert manifest["stage"] == "embed" and manifest["report"] is None
    assert manifest["headline"] == {
        "images": str(4 * len(PATIENTS)),
        "breasts": str(2 * len(PATIENTS)),
        "embedding dim": str(len(embedding_columns(table))),
    }
