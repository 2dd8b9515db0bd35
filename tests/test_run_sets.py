"""ensemble and compare: runs on the same folds averaged or tested pairwise; runs on other folds refused.

The fast tests build run folders by hand (config.json + oof_predictions.csv); the slow ones train three
demo-sized runs (16 women, 32x24 pixels, 1 epoch) and go through the CLI, evaluate and predict.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from train_cache import write_cache
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.cohort.folds import fold_mismatch
from mammo_insight.errors import MammoInsightError
from mammo_insight.runs.run_sets import averaged_predictions, compare_runs, open_run_set
from mammo_insight.stages.compare import settings_that_differ


def _oof(n_women: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(n_women):
        for side in "LR":
            label = float(rng.random() < 0.4)
            for view in ("CC", "MLO"):
                rows.append(
                    {
                        "image_id": f"W{w}{side}{view}",
                        "breast_id": f"W{w}_{side}",
                        "patient_id": f"W{w}",
                        "fold": w % 3,
                        "view": view,
                        "cancer": label,
                    }
                )
    return pd.DataFrame(rows)


def _fake_run(root: Path, oof: pd.DataFrame, prob: np.ndarray, **config) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model": "m", "seed": 0, "folds": 3, **config}))
    oof.assign(prob=prob).to_csv(root / "oof_predictions.csv", index=False)
    return root


def test_fold_mismatch_names_the_first_woman_and_image_and_both_folds():
    a = _oof()
    assert fold_mismatch(a, a.sample(frac=1, random_state=0)) is None  # row order does not matter
    b = a.copy()
    b.loc[b["patient_id"].isin(["W7", "W4"]), "fold"] = 2
    assert fold_mismatch(a, b, names=("A", "B")) == "woman W4, image W4LCC: fold 1 in A, fold 2 in B"
    missing = a[a["image_id"] != "W2RMLO"]
    assert (
        fold_mismatch(a, missing, names=("A", "B")) == "woman W2, image W2RMLO: fold 2 in A, not scored in B"
    )


def test_averaged_predictions_are_the_image_wise_mean_in_the_first_runs_order(tmp_path: Path):
    oof = _oof()
    rng = np.random.default_rng(1)
    pa, pb = rng.random(len(oof)), rng.random(len(oof))
    a = _fake_run(tmp_path / "a", oof, pa)
    shuffled = oof.assign(prob=pb).sample(frac=1, random_state=3)
    b = _fake_run(tmp_path / "b", shuffled.drop(columns="prob"), shuffled["prob"].to_numpy())
    runs = open_run_set([a, b])
    images, breasts = averaged_predictions(runs)
    assert breasts is None and list(images["image_id"]) == list(oof["image_id"])
    np.testing.assert_allclose(images["prob"], (pa + pb) / 2)


def test_open_run_set_refuses_other_folds_one_run_and_a_repeated_run(tmp_path: Path):
    oof = _oof()
    a = _fake_run(tmp_path / "a", oof, np.full(len(oof), 0.5))
    other = oof.assign(fold=(oof["fold"] + 1) % 3)
    b = _fake_run(tmp_path / "b", other, np.full(len(oof), 0.5))
    with pytest.raises(
        MammoInsightError, match=r"first difference: woman W0, image W0LCC: fold 0 in a, fold 1 in b"
    ):
        open_run_set([a, b])
    with pytest.raises(MammoInsightError, match="at least two"):
        open_run_set([a])
    with pytest.raises(MammoInsightError, match="named twice"):
        open_run_set([a, tmp_path / "." / "a"])


def test_compare_finds_the_better_run_and_not_a_difference_between_equals(tmp_path: Path):
    """Run a ranks by the label plus noise, b and c by noise alone: a - b is significant, b - c is not."""
    oof = _oof(n_women=60)
    rng = np.random.default_rng(2)
    y = oof.groupby("breast_id")["cancer"].transform("max").to_numpy()
    noise = lambda: rng.normal(size=len(oof))
    a = _fake_run(tmp_path / "a", oof, 1 / (1 + np.exp(-(2 * y + noise()))), lr=0.01)
    b = _fake_run(tmp_path / "b", oof, 1 / (1 + np.exp(-noise())), lr=0.001)
    c = _fake_run(tmp_path / "c", oof, 1 / (1 + np.exp(-noise())), lr=0.001)
    result = compare_runs(open_run_set([a, b, c]), n_boot=300)
    assert set(result["paired"]["breast"]) == {"a_vs_b", "a_vs_c", "b_vs_c"}
    ab, bc = result["paired"]["breast"]["a_vs_b"], result["paired"]["breast"]["b_vs_c"]
    assert ab["roc_auc"]["ci_low"] > 0 and ab["delong"]["p_value"] < 0.01 and ab["roc_auc"]["p_value"] < 0.05
    assert bc["roc_auc"]["ci_low"] < 0 < bc["roc_auc"]["ci_high"] and bc["delong"]["p_value"] > 0.05
    assert ab["roc_auc"]["diff"] == pytest.approx(
        result["runs"]["a"]["breast"]["roc_auc"]["value"] - result["runs"]["b"]["breast"]["roc_auc"]["value"]
    )
    configs = tuple(json.loads((r / "config.json").read_text()) for r in (a, b, c))
    settings = settings_that_differ(("a", "b", "c"), configs)
    assert settings.to_dict("records") == [{"option": "lr", "a": "0.01", "b": "0.001", "c": "0.001"}]


# --- demo-sized training runs through the CLI -------------------------------------------------------


TINY = {"model": "test_resnet", "folds": 2, "epochs": 1, "batch_size": 8, "cpu_threads": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Three 1-epoch runs on one 16-woman cache: a and b on the same folds (other lr), c on other folds."""
    from mammo_insight.runs.config import load_config
    from mammo_insight.stages.train import train_run

    root = tmp_path_factory.mktemp("runsets")
    cache = write_cache(root / "cache", n_patients=16, seed=0, size=(32, 24), prevalence=0.4)
    runs = {"cache": cache}
    for name, changes in {"a": {}, "b": {"lr": 3e-3}, "c": {"seed": 5}}.items():
        options = load_config(None, **TINY, augment={"rotate_degrees": 0}, **changes)
        runs[name] = train_run(cache, root / name, options)
    return runs


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_ensemble_of_two_runs_is_a_run_that_evaluate_and_predict_use(trained, tmp_path: Path):
    from mammo_insight.imaging.cache import read_cache_index
    from mammo_insight.runs.ensemble import EnsembleRun
    from mammo_insight.runs.open import open_run

    out = tmp_path / "ens"
    result = _cli("ensemble", "--runs", trained["a"], trained["b"], "--out", out, "--n-boot", 50)
    assert result.exit_code == 0, result.output
    assert "runs averaged: 2" in result.output
    oof = pd.read_csv(out / "oof_predictions.csv", dtype={"image_id": str})
    members = [pd.read_csv(trained[n] / "oof_predictions.csv").set_index("image_id") for n in "ab"]
    expected = (
        members[0].loc[oof["image_id"], "prob"].to_numpy()
        + members[1].loc[oof["image_id"], "prob"].to_numpy()
    ) / 2
    np.testing.assert_allclose(oof["prob"], expected)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["folds"]["k"] == 2 and 0 < metrics["breast"]["threshold"] < 1
    assert "Members" in (out / "index.html").read_text()

    # opened as a run: fold k is the mean of the members' fold k models, so scoring averages all of them
    run = open_run(out)
    assert (
        isinstance(run, EnsembleRun)
        and run.folds == (0, 1)
        and run.thresholds()["breast"] == pytest.approx(metrics["breast"]["threshold"])
    )
    assert run.preprocess_config().size == (32, 24)  # predict builds its cache as the members were
    rows = read_cache_index(trained["cache"]).head(6)
    images, _ = run.ensemble_predict(trained["cache"], rows)
    parts = [open_run(trained[n]).ensemble_predict(trained["cache"], rows)[0]["prob"] for n in "ab"]
    np.testing.assert_allclose(images["prob"], (parts[0] + parts[1]) / 2, atol=1e-5)

    evaluated = _cli(
        "evaluate",
        "--run",
        out,
        "--cache",
        trained["cache"],
        "--out",
        tmp_path / "ev",
        "--allow-overlap",
        "--device",
        "cpu",
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["breast"]["threshold"] == pytest.approx(
        metrics["breast"]["threshold"]
    )
    refused = _cli("embed", "--run", out, "--cache", trained["cache"], "--out", tmp_path / "e.parquet")
    assert refused.exit_code != 0 and "is an ensemble of 2 runs" in str(refused.exception or refused.output)


@pytest.mark.slow
def test_compare_two_runs_writes_paired_tests_and_overlaid_curves(trained, tmp_path: Path):
    out = tmp_path / "cmp"
    result = _cli("compare", "--runs", trained["a"], trained["b"], "--out", out, "--n-boot", 50)
    assert result.exit_code == 0, result.output
    body = json.loads((out / "compare.json").read_text())
    pair = body["paired"]["breast"]["a_vs_b"]
    assert {"roc_auc", "pr_auc", "pf1", "delong"} <= set(pair) and pair["roc_auc"]["ci_low"] <= pair[
        "roc_auc"
    ]["diff"]
    assert set(body["runs"]) == {"a", "b"} and body["runs"]["a"]["breast"]["roc_auc"]["ci_high"] is not None
    paired = pd.read_csv(out / "tables" / "paired.csv")
    assert set(paired["level"]) == {"image", "breast"} and paired["p_delong"].notna().sum() == 2
    assert pd.read_csv(out / "tables" / "settings.csv")["option"].tolist() == ["lr"]
    page = (out / "index.html").read_text()
    assert "Learning curves" in page and "data:image/png;base64" in page and "Paired comparisons" in page


@pytest.mark.slow
@pytest.mark.parametrize("command", ["ensemble", "compare"])
def test_runs_on_other_folds_are_refused_naming_the_first_mismatch(trained, tmp_path: Path, command: str):
    result = _cli(command, "--runs", trained["a"], trained["c"], "--out", tmp_path / command)
    assert result.exit_code != 0
    message = str(result.exception)
    assert "was not validated on the folds of" in message and "first difference: woman P0" in message
    assert "fold 0" in message and "fold 1" in message


@pytest.mark.slow
def test_predict_with_an_ensemble_scores_new_studies_with_the_mean_of_its_members(tmp_path: Path):
    """DICOM studies through the real preprocessing: the ensemble's breast probability is the members' mean,
    decided at the ensemble's own threshold."""
    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.imaging.build import build_cache
    from mammo_insight.imaging.pipeline import PreprocessConfig
    from mammo_insight.runs.config import load_config
    from mammo_insight.stages.predict import PredictConfig, run_predict
    from mammo_insight.stages.train import train_run
    from mammo_insight.synth.cohort import make_synthetic_cohort

    make_synthetic_cohort(tmp_path / "cohort", n_patients=10, seed=0, size=(96, 72), prevalence=0.4)
    cache = tmp_path / "cache"
    cohort = load_cohort("rsna", tmp_path / "cohort")
    build_cache(cohort, cache, PreprocessConfig(size=(48, 32)), sheet_size=0, show_progress=False)
    for name, lr in (("a", 3e-4), ("b", 3e-3)):
        train_run(cache, tmp_path / name, load_config(None, **TINY, lr=lr))
    ens = tmp_path / "ens"
    assert (
        _cli("ensemble", "--runs", tmp_path / "a", tmp_path / "b", "--out", ens, "--n-boot", 20).exit_code
        == 0
    )

    images = tmp_path / "cohort" / "train_images"
    predicted = {
        n: run_predict(PredictConfig(run=tmp_path / n, images=images)).breasts for n in ("a", "b", "ens")
    }
    members = [predicted[n].set_index("breast_id")["prob"] for n in "ab"]
    got = predicted["ens"].set_index("breast_id")
    np.testing.assert_allclose(got["prob"], ((members[0] + members[1]) / 2).loc[got.index], atol=1e-5)
    threshold = json.loads((ens / "metrics.json").read_text())["breast"]["threshold"]
    assert (
        np.allclose(got["threshold"], threshold)
        and (got["decision"] == (got["prob"] >= threshold).astype(int)).all()
    )
    with pytest.raises(MammoInsightError, match="is an ensemble of 2 runs"):
        run_predict(PredictConfig(run=ens, images=images, cams=tmp_path / "cams"))


@pytest.mark.slow
def test_multi_view_runs_average_their_own_breast_outputs_and_mix_with_single_view_by_breast(
    trained, tmp_path: Path
):
    from mammo_insight.runs.config import load_config
    from mammo_insight.stages.train import train_run

    runs = {}
    for name, lr in (("mva", 3e-4), ("mvb", 3e-3)):
        options = load_config(None, **{**TINY, "batch_size": 4}, view_mode="multi", lr=lr)
        runs[name] = train_run(trained["cache"], tmp_path / name, options)
    out = tmp_path / "ens"
    assert _cli("ensemble", "--runs", runs["mva"], runs["mvb"], "--out", out, "--n-boot", 20).exit_code == 0
    own = [pd.read_csv(runs[n] / "oof_breast_predictions.csv").set_index("breast_id")["prob"] for n in runs]
    got = pd.read_csv(out / "oof_breast_predictions.csv").set_index("breast_id")["prob"]
    np.testing.assert_allclose(got, ((own[0] + own[1]) / 2).loc[got.index])
    # a single-view member's breast is the mean of its films, as its own metrics read it; each member
    # reads new films its own way, so the two view modes mix breast by breast
    mixed = _cli("ensemble", "--runs", trained["a"], runs["mva"], "--out", tmp_path / "mixed", "--n-boot", 20)
    assert mixed.exit_code == 0, mixed.output
    single = pd.read_csv(trained["a"] / "oof_predictions.csv").groupby("breast_id")["prob"].mean()
    got = pd.read_csv(tmp_path / "mixed" / "oof_breast_predictions.csv").set_index("breast_id")["prob"]
    np.testing.assert_allclose(got, ((single + own[0]) / 2).loc[got.index])
