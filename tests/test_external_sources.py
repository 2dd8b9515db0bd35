"""Training on several sources: external caches' rows train and are never scored; train-only flags from a
dataset's own table; the dataset-shift check finds a planted source signature and not an absent one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from train_cache import write_cache
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.folds import flag_values, train_only_mask
from mammo_insight.errors import MammoInsightError
from mammo_insight.fusion.shift import share_with_ci, shift_check
from mammo_insight.imaging.cache import relative_image_path, write_png_atomic
from mammo_insight.runs.data import CacheImageDataset
from mammo_insight.training.sources import SOURCE_COLUMN, load_sources


def test_flags_read_as_words_and_anything_else_is_named():
    values = pd.Series(["False", "no", "0", "", None, "TRUE", " yes ", "1", 1.0, True])
    assert flag_values(values, "column x").tolist() == [False] * 5 + [True] * 5
    assert flag_values(pd.Series([0.0, 1.0, np.nan]), "c").tolist() == [False, True, False]
    ids = pd.Series(["a", "b", "c"])
    with pytest.raises(MammoInsightError, match=r"column external_only holds 'maybe' \(image b; 1 such row"):
        train_only_mask(pd.DataFrame({"image_id": ids, "external_only": ["no", "maybe", "yes"]}))


def test_a_generic_table_flags_its_own_external_rows(tmp_path: Path):
    (tmp_path / "table.csv").write_text(
        "pid,side,proj,outcome,img,from_ddsm\na,L,CC,1,a.png,False\nb,L,CC,0,b.png,\nc,R,CC,1,c.png,True\n"
    )
    (tmp_path / "m.toml").write_text(
        'csv = "table.csv"\n[columns]\npatient_id = "pid"\nlaterality = "side"\nview = "proj"\n'
        'image_path = "img"\ncancer = "outcome"\nexternal_only = "from_ddsm"\n'
    )
    table = load_cohort("generic", tmp_path, tmp_path / "m.toml").table
    assert table["external_only"].tolist() == [False, False, True]
    assert train_only_mask(table).tolist() == [False, False, True]
    (tmp_path / "table.csv").write_text("pid,side,proj,outcome,img,from_ddsm\na,L,CC,1,a.png,sometimes\n")
    with pytest.raises(
        MammoInsightError, match=r"'from_ddsm' \(external_only\) of .*table.csv holds 'sometimes'"
    ):
        load_cohort("generic", tmp_path, tmp_path / "m.toml")


def test_external_rows_are_flagged_prefixed_and_read_from_their_own_cache(tmp_path: Path):
    home = write_cache(tmp_path / "home", n_patients=4, seed=0, size=(8, 6))
    ext = write_cache(tmp_path / "ext", n_patients=4, seed=1, size=(8, 6), prevalence=0.5)
    index = pd.read_parquet(ext / "index.parquet")
    for row in index.itertuples():  # external films are blank: a row read from the home cache would not be
        write_png_atomic(ext / relative_image_path(row.patient_id, row.image_id), np.zeros((8, 6), np.uint8))
    table = load_sources(home, [ext], "cancer", positives_only=True)
    external = table[table[SOURCE_COLUMN] == "ext1"]
    assert len(external) == int((index["cancer"] == 1).sum()) > 0 and (external["cancer"] == 1).all()
    assert (
        external["patient_id"].str.startswith("ext1:P").all()
        and external["image_id"].str.startswith("ext1:").all()
    )
    assert train_only_mask(table).tolist() == (table[SOURCE_COLUMN] == "ext1").tolist()
    dataset = CacheImageDataset(home, table.reset_index(drop=True), size=(8, 6))
    pixels = [float(dataset[i]["image"].max()) for i in range(len(table))]
    assert all(p == 0 for p, s in zip(pixels, table[SOURCE_COLUMN], strict=True) if s == "ext1")
    assert all(p > 0 for p, s in zip(pixels, table[SOURCE_COLUMN], strict=True) if s == "home")
    negatives = write_cache(tmp_path / "neg", n_patients=2, seed=0, size=(8, 6), prevalence=0.0)
    with pytest.raises(MammoInsightError, match="no positive"):
        load_sources(home, [negatives], "cancer", positives_only=True)


def _films(shift: float, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """60 home women (a third positive) and 30 external women (all positive), 2 films each; the external
    films' features are offset by `shift` standard deviations on one axis, their scores are not."""
    rng = np.random.default_rng(seed)
    rows = []
    for source, n, positive_share in (("home", 60, 1 / 3), ("ext1", 30, 1.0)):
        for w in range(n):
            label = int(w < n * positive_share)
            for _ in range(2):
                rows.append({"patient_id": f"{source}{w}", "source": source, "label": label})
    films = pd.DataFrame(rows)
    films["prob"] = 1 / (1 + np.exp(-(1.5 * films["label"] + rng.normal(size=len(films)) - 0.5)))
    features = rng.normal(size=(len(films), 6))
    features[:, 0] += shift * (films["source"] != "home")
    return films, features


def test_shift_check_finds_a_planted_source_signature_and_not_an_absent_one():
    films, features = _films(shift=4.0)
    found = shift_check(films, features, threshold=0.5, n_boot=200)
    probes = {(p["probe"], p["input"]): p for p in found["probes"]}
    assert probes[("which source, positives only", "pooled features")]["ci_low"] > 0.85
    assert found["verdict"].startswith("Yes")
    plain = shift_check(*_films(shift=0.0), threshold=0.5, n_boot=200)
    probe = {(p["probe"], p["input"]): p for p in plain["probes"]}[
        ("which source, positives only", "pooled features")
    ]
    assert probe["ci_low"] < 0.5 < probe["ci_high"] and not plain["verdict"].startswith("Yes")
    # the score carries no source signal here: its probe among positives sits near chance
    score = {(p["probe"], p["input"]): p for p in found["probes"]}[
        ("which source, positives only", "CNN score")
    ]
    assert score["ci_low"] < 0.5 < score["ci_high"]


def test_home_positives_are_scored_apart_at_the_threshold():
    films, features = _films(shift=0.0)
    found = shift_check(films, features, threshold=0.6, n_boot=200)
    groups = {(g["source"], g["label"]): g for g in found["groups"]}
    home_pos = films[(films["source"] == "home") & (films["label"] == 1)]
    assert groups[("home", 1)]["called_positive"] == pytest.approx((home_pos["prob"] >= 0.6).mean())
    assert groups[("home", 1)]["n_women"] == 20 and groups[("ext1", 1)]["n_women"] == 30
    aucs = {a["positives"]: a for a in found["aucs"]}
    assert set(aucs) == {"home positives", "ext1 positives"} and aucs["home positives"]["n_negative"] == 80


def test_share_with_ci_resamples_women_not_films():
    flags = np.array([1, 1, 1, 1, 0, 0])
    women = np.array(["a", "a", "a", "a", "b", "c"])
    point, low, high = share_with_ci(flags, women, n_boot=2000, seed=0)
    assert point == pytest.approx(4 / 6)
    assert low == 0.0 and high == 1.0  # a resample without woman a holds no positive; one of only a, all


@pytest.mark.slow
def test_a_run_with_an_external_cache_never_scores_it_and_reports_the_shift(tmp_path: Path):
    home = write_cache(tmp_path / "home", n_patients=16, seed=0, size=(32, 24), prevalence=0.4)
    ext = write_cache(tmp_path / "ext", n_patients=10, seed=1, size=(32, 24), prevalence=0.5)
    out = tmp_path / "run"
    args = ["train", "--cache", home, "--out", out, "--model", "test_resnet", "--folds", "2", "--epochs", "1"]
    args += ["--batch-size", "8", "--threads", "1", "--device", "cpu"]
    result = CliRunner().invoke(
        app, [str(a) for a in [*args, "--external-cache", ext, "--external-positives-only"]]
    )
    assert result.exit_code == 0, result.output
    assert "source probe ROC-AUC (positives only)" in result.output

    oof = pd.read_csv(out / "oof_predictions.csv", dtype=str)
    home_index = pd.read_parquet(home / "index.parquet")
    assert sorted(oof["image_id"]) == sorted(home_index["image_id"])  # every home film, no external one
    assert not oof["patient_id"].str.startswith("ext").any()
    metrics = json.loads((out / "metrics.json").read_text())
    ext_index = pd.read_parquet(ext / "index.parquet")
    positive_women = ext_index.loc[ext_index["cancer"] == 1, "patient_id"].nunique()
    assert metrics["folds"]["train_only_patients"] == positive_women
    assert metrics["breast"]["n"] == home_index["breast_id"].nunique()  # the metrics are the home dataset's
    config = json.loads((out / "config.json").read_text())
    assert config["external_caches"][0]["name"] == "ext1" and config["external_positives_only"] is True
    shift = json.loads((out / "shift.json").read_text())
    assert {g["source"] for g in shift["groups"]} == {"home", "ext1"} and shift["probes"]
    page = (out / "index.html").read_text()
    assert "Dataset shift" in page and "home positives" in page and "which source, positives only" in page

    again = CliRunner().invoke(app, [str(a) for a in args])  # the same folder without the external cache
    assert again.exit_code != 0 and "external_caches" in str(again.exception)

    # evaluate: the external training cache is not external to the run; another cache meets the run's own
    refused = CliRunner().invoke(
        app, [str(a) for a in ["evaluate", "--run", out, "--cache", ext, "--out", tmp_path / "no"]]
    )
    assert refused.exit_code != 0 and f"{positive_women} of its 10 women" in str(refused.exception)
    other = write_cache(tmp_path / "other", n_patients=10, seed=2, size=(32, 24), prevalence=0.5)
    index = pd.read_parquet(other / "index.parquet")
    for column in ("patient_id", "breast_id", "image_id"):  # other women (cache_path still finds the images)
        index[column] = "Q" + index[column]
    index.to_parquet(other / "index.parquet")
    evaluate = [
        "evaluate",
        "--run",
        out,
        "--cache",
        other,
        "--out",
        tmp_path / "ev",
        "--shift-check",
        "--device",
        "cpu",
    ]
    evaluated = CliRunner().invoke(app, [str(a) for a in evaluate])
    assert evaluated.exit_code == 0, evaluated.output
    shift = json.loads((tmp_path / "ev" / "shift.json").read_text())
    groups = {(g["source"], g["label"]): g for g in shift["groups"]}
    assert (
        groups[("evaluated", 1)]["scored"] == "never trained on"
        and groups[("home", 1)]["scored"] == "out of fold"
    )
    assert groups[("evaluated", 1)]["n_women"] == index.loc[index["cancer"] == 1, "patient_id"].nunique()
    assert "Dataset shift" in (tmp_path / "ev" / "index.html").read_text()
