"""fuse-train on the synthetic cohort: fused beats both sources, SHAP sees the images, no leaks, fold-clean PCA.

The image embeddings here are SIMULATED (no CNN): each image of a cancer breast shows the planted lesion
with a view-dependent probability (MLO 0.7, CC 0.35), and a visible lesion shifts its embedding along one
fixed direction, plus Gaussian noise. This isolates the fusion machinery; the end-to-end run with a real
CNN is the demo's job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from html import unescape

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from mammo_insight.cli.app import app
from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.fusion import lgbm
from mammo_insight.fusion.config import FusionConfig
from mammo_insight.fusion.features import breast_features
from mammo_insight.fusion.lgbm import (
    FoldFitting,
    ImageFeatures,
    LgbmParams,
    cross_validate,
    fit_fold_pca,
    grouped_folds,
)
from mammo_insight.fusion.outputs import write_outputs
from mammo_insight.fusion.pipeline import run_fusion
from mammo_insight.fusion.report import render_report
from mammo_insight.fusion.shap_tabular import group_share
from mammo_insight.synth.table import RSNA_COLUMNS, make_synthetic_table

FAST = LgbmParams(n_estimators=120, learning_rate=0.05)
DIM = 24


def synthetic_table(tmp_path, n_patients: int, seed: int = 0) -> pd.DataFrame:
    root = tmp_path / f"synth{n_patients}_{seed}"
    root.mkdir()
    make_synthetic_table(n_patients, seed)[RSNA_COLUMNS].to_csv(root / "train.csv", index=False)
    return load_cohort("rsna", root).table


def simulated_embeddings(table: pd.DataFrame, seed: int = 1, strength: float = 1.6) -> pd.DataFrame:
    """Image and breast rows in the EMB layout; folds grouped by patient as a CNN run would have them."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    visible_p = np.where(table["view"] == "MLO", 0.7, 0.35)
    visible = (table["cancer"].to_numpy() == 1) & (rng.random(len(table)) < visible_p)
    emb = rng.normal(size=(len(table), DIM)) + strength * visible[:, None] * direction
    patients = table["patient_id"].unique()
    fold_of = pd.Series(rng.permutation(len(patients)) % 5, index=patients)
    cols = [f"emb_{i:03d}" for i in range(DIM)]
    images = pd.concat(
        [
            table[["image_id", "breast_id", "patient_id", "view", "cancer"]].reset_index(drop=True),
            pd.DataFrame(emb, columns=cols),
        ],
        axis=1,
    )
    images["level"], images["fold"] = "image", images["patient_id"].map(fold_of).to_numpy()
    breasts = images.groupby("breast_id").agg(
        patient_id=("patient_id", "first"),
        cancer=("cancer", "max"),
        fold=("fold", "first"),
        **{c: (c, "mean") for c in cols},
    )
    breasts = breasts.reset_index().assign(level="breast", view="CC+MLO")
    return pd.concat([images, breasts], ignore_index=True)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion")
    table = synthetic_table(tmp, 1000)
    emb = simulated_embeddings(table)
    cfg = FusionConfig(n_boot=200, shap_rows=600, interaction_rows=100, params=FAST)
    return table, emb, run_fusion(table, emb, cfg), tmp


def auc(result, model: str) -> float:
    return result.scores[model]["roc_auc"]["value"]


@pytest.mark.slow
def test_fused_beats_both_sources_and_images_carry_shap_weight(fused):
    _, _, result, _ = fused
    assert set(result.probs) == {"metadata", "metadata_logistic", "age_only", "image", "fused"}
    assert auc(result, "metadata") > 0.55  # the planted age/density effects are found
    assert auc(result, "metadata_logistic") > 0.55
    best = result.best_metadata
    assert best == "metadata_logistic"  # the pre-declared primary model, whatever the scores
    assert auc(result, "fused") > auc(result, best) + 0.05
    assert auc(result, "fused") > auc(result, "image")
    gain = result.comparisons["fused_vs_metadata"]["roc_auc"]
    assert gain["ci_low"] > 0
    share = group_share(result.shap_explanation.values, list(result.shap_X.columns), result.feature_groups)
    assert share["image"] > 0.25 and share["metadata"] > 0.05


@pytest.mark.slow
def test_per_view_auc_finds_the_view_with_more_signal(fused):
    _, _, result, _ = fused
    per_view = result.per_view.set_index("embeddings")["roc_auc"]
    assert per_view["MLO only"] > per_view["CC only"] > 0.5


@pytest.mark.slow
def test_embedding_folds_are_reused(fused):
    _, emb, result, _ = fused
    cnn_fold = emb[emb["level"] == "breast"].set_index("breast_id")["fold"]
    assert (
        result.breasts.set_index("breast_id")["fold"] == cnn_fold.reindex(result.breasts["breast_id"])
    ).all()
    per_patient = result.breasts.groupby("patient_id")["fold"].nunique()
    assert (per_patient == 1).all()


@pytest.mark.slow
def test_outputs_follow_the_contract(fused):
    _, _, result, tmp = fused
    out = tmp / "out"
    write_outputs(result, out)
    page = render_report(result, out, "synthetic")
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("metadata", "metadata_logistic", "image", "fused"):
        cell = metrics[model]["roc_auc"]
        assert cell["ci_low"] <= cell["value"] <= cell["ci_high"]
    best = metrics["best_metadata_model"]
    assert {
        "fused_vs_metadata",
        "fused_vs_metadata_logistic",
        "fused_vs_image",
        f"image_vs_{best}",
        "metadata_logistic_vs_metadata",
    } <= set(metrics["comparisons"])
    folds = metrics["folds"]  # the folds actually used: the embeddings' CNN folds
    assert folds["k"] == result.breasts["fold"].nunique() and folds["source"].startswith("the embeddings'")
    # the settings each fold chose are recorded, for every model
    assert {len(v) for v in metrics["settings"].values()} == {folds["k"]}
    assert all(s["searched"] for s in metrics["settings"]["fused"])
    assert sum(f["patients"] for f in folds["per_fold"]) == result.breasts["patient_id"].nunique()
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert list(oof.columns[:5]) == ["breast_id", "patient_id", "fold", "model", "prob"]
    assert len(oof) == 5 * len(result.breasts) and oof["prob"].between(0, 1).all()
    imp = pd.read_csv(out / "tables" / "shap_importance.csv")
    assert list(imp.columns) == ["feature", "group", "mean_abs_shap"] and set(imp["group"]) == {
        "metadata",
        "image",
    }
    html = page.read_text()
    assert "Which views carry the image signal" in html and "WARNING" not in html


@pytest.mark.slow
def test_leaky_columns_are_excluded_by_default(fused):
    table, _, result, _ = fused
    assert {"birads", "biopsy", "invasive", "difficult_negative_case"} <= set(result.excluded_leaky)
    assert not any(f.startswith("leaky_") for f in result.meta_features)
    _, features = breast_features(table, exclude=["birads", "biopsy"], include_leaky=["biopsy"])
    assert "leaky_biopsy" in features


def test_pca_never_sees_validation_rows():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 12))
    train, val = np.arange(150), np.arange(150, 200)
    before = fit_fold_pca(emb, train, 4, 0).components_
    poisoned = emb.copy()
    poisoned[val] = 1e6 * rng.normal(
        size=(50, 12)
    )  # validation rows that would dominate any PCA they entered
    after = fit_fold_pca(poisoned, train, 4, 0).components_
    np.testing.assert_allclose(before, after)


def test_cross_validation_fits_pca_on_training_folds_only(monkeypatch):
    rng = np.random.default_rng(1)
    n = 300
    emb = rng.normal(size=(n, 8))
    y = (rng.random(n) < 0.3).astype(int)
    groups = np.repeat(np.arange(n // 2), 2)
    fold = grouped_folds(y, groups, 3, 0)
    emb[:, 0] = fold * 1000.0  # each row's fold is readable from the data the PCA is fitted on
    fitted: list[set[float]] = []

    class SpyPCA(PCA):
        def fit(self, X, y=None):
            fitted.append(set(np.unique(X[:, 0])))
            return super().fit(X, y)

    monkeypatch.setattr(lgbm, "PCA", SpyPCA)
    cross_validate(
        None, ImageFeatures(emb), y, fold, fitting=FoldFitting(LgbmParams(n_estimators=10), n_pca=3)
    )
    assert len(fitted) == 3
    for f, seen in enumerate(fitted):
        assert seen == {k * 1000.0 for k in range(3) if k != f}


def test_fold_models_with_their_own_embedding_spaces_are_read_through_their_logit():
    """Each CNN fold model embeds in its own basis: trees fitted on other folds' components cannot read a
    held-out fold's, but the models' logits share one scale, and with them the image side works."""
    rng = np.random.default_rng(3)
    n = 600
    y = (rng.random(n) < 0.3).astype(int)
    fold = grouped_folds(y, np.arange(n), 3, 0)
    signal = y * 1.5 + rng.normal(size=n)
    latent = np.column_stack([signal, rng.normal(size=(n, 7))])
    bases = [np.linalg.qr(rng.normal(size=(8, 8)))[0] for _ in range(3)]
    emb = np.vstack([latent[i] @ bases[fold[i]] for i in range(n)])
    params = LgbmParams(n_estimators=60)
    without = roc_auc_score(
        y, cross_validate(None, ImageFeatures(emb), y, fold, fitting=FoldFitting(params, n_pca=4)).prob
    )
    with_logit = roc_auc_score(
        y,
        cross_validate(None, ImageFeatures(emb, signal), y, fold, fitting=FoldFitting(params, n_pca=4)).prob,
    )
    assert without < 0.65, "the per-fold rotation should hide the signal from the components"
    assert with_logit > 0.75


@pytest.mark.slow
def test_cli_include_leaky_warns_loudly_and_metadata_only_runs(tmp_path):
    table = synthetic_table(tmp_path, 300)
    cohort = tmp_path / "cohort.parquet"
    table.to_parquet(cohort)
    out = tmp_path / "leaky"
    result = CliRunner().invoke(
        app,
        [
            "fuse-train",
            "--cohort",
            str(cohort),
            "--out",
            str(out),
            "--n-boot",
            "50",
            "--shap-rows",
            "200",
            "--include-leaky",
            "biopsy",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.output and "biopsy" in result.output
    assert "WARNING" in (out / "index.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"metadata"} and "fused" not in metrics
    assert metrics["included_leaky"] == ["biopsy"]
    assert metrics["folds"]["k"] == 5 and metrics["folds"]["source"] == "drawn for this run"
    assert json.loads((out / "manifest.json").read_text())["config"]["folds"] == 5
    # every cancer is biopsied in the synthetic cohort: the leak must show as an implausible AUC
    assert metrics["metadata"]["roc_auc"]["value"] > 0.9
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "fuse-train" and manifest["report"] == "index.html"
    assert set(manifest["headline"]) == {
        "metadata only (LightGBM) ROC-AUC",
        "metadata only (logistic) ROC-AUC",
        "age only (logistic) ROC-AUC",
    }
    assert manifest["headline"]["metadata only (LightGBM) ROC-AUC"].startswith(
        f"{metrics['metadata']['roc_auc']['value']:.3f}"
    )


@pytest.mark.slow
def test_fuse_train_never_imports_torch():
    code = (
        "import sys; import mammo_insight.stages.fuse, mammo_insight.fusion.pipeline, "
        "mammo_insight.fusion.report, mammo_insight.fusion.emb_table; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.real_data
@pytest.mark.slow
def test_rsna_metadata_only_is_modest_not_leaky(data_dir):
    """Real RSNA train.csv, metadata only: an honest breast-level ROC-AUC is modest; near 1 would be a leak."""
    table = load_cohort("rsna", data_dir / "rsna").table
    result = run_fusion(
        table, None, FusionConfig(n_boot=100, shap_rows=300, interaction_rows=50, params=FAST)
    )
    cell = result.scores["metadata"]["roc_auc"]
    assert len(result.breasts) == 23826
    assert 0.52 < cell["ci_low"] < cell["value"] < cell["ci_high"] < 0.75
    assert {"birads", "biopsy", "invasive", "difficult_negative_case"} <= set(result.excluded_leaky)


def test_rows_outside_the_cnn_run_get_patient_grouped_folds_and_known_folds_stay():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(100), 2)
    y = (rng.random(200) < 0.3).astype(int)
    fold = np.where(groups < 60, groups % 3, -1)
    filled = lgbm.fill_folds(fold, y, groups, seed=0, k=3)
    np.testing.assert_array_equal(filled[fold >= 0], fold[fold >= 0])
    assert set(filled) == {0, 1, 2}
    assert pd.Series(filled).groupby(groups).nunique().max() == 1


def _u_shaped_age(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Risk falls then rises with age (a shape a linear term cannot follow) plus a noise column."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(35, 85, n)
    logit = -2.0 + 0.004 * (age - 60) ** 2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"age": age, "noise": rng.normal(size=n)}), y


def test_monotone_age_constraint_takes_effect():
    X, y = _u_shaped_age()
    grid = np.linspace(35, 85, 26)
    probe = pd.DataFrame({"age": grid, "noise": 0.0})
    for monotone in (True, False):
        model, chosen = lgbm.tune_and_fit(X, y, np.arange(len(y)), LgbmParams(monotone_age=monotone), 0)
        steps = np.diff(model.predict_proba(probe)[:, 1])
        assert chosen["searched"] and chosen["n_estimators"] < LgbmParams().n_estimators  # early-stopped
        assert (steps >= -1e-12).all() == monotone


def test_inner_search_picks_from_the_grid_and_skips_when_women_are_too_few():
    X, y = _u_shaped_age(800)
    grid = ((2, 50, 1.0), (31, 5, 0.0))
    _, chosen = lgbm.tune_and_fit(X, y, np.arange(len(y)), LgbmParams(search=grid), 0)
    picked = next(g for g in grid if (g[0], g[2]) == (chosen["num_leaves"], chosen["reg_lambda"]))
    # the minimum leaf is capped at 1/20 of the inner fitting rows (600 here: 30)
    assert chosen["min_child_samples"] == min(picked[1], 600 // lgbm.MIN_LEAF_SHARE)
    _, fixed = lgbm.tune_and_fit(X.iloc[:3], np.array([0, 1, 0]), np.arange(3), LgbmParams(search=grid), 0)
    assert not fixed["searched"] and fixed["num_leaves"] == LgbmParams().num_leaves


def test_logistic_age_spline_follows_a_curve_a_line_cannot():
    from mammo_insight.fusion.logistic import LogisticSettings, cross_validate_logistic

    X, y = _u_shaped_age()
    fold = grouped_folds(y, np.arange(len(y)), 5, 0)
    spline = cross_validate_logistic(X, y, fold, settings=LogisticSettings(age_form="spline"))
    linear = cross_validate_logistic(X, y, fold, settings=LogisticSettings(age_form="linear"))
    assert roc_auc_score(y, spline.prob) > roc_auc_score(y, linear.prob) + 0.1
    assert spline.settings[0]["age_form"] == "spline" and len(spline.settings) == 5
    auto = cross_validate_logistic(X, y, fold)  # AIC keeps the curve where risk bends...
    assert [s["age_form"] for s in auto.settings] == ["spline"] * 5
    assert np.allclose(auto.prob, spline.prob)
    rng = np.random.default_rng(1)  # ...and the line where log-odds rise straight with age
    straight = rng.random(len(y)) < 1 / (1 + np.exp(-(-2.0 + 0.05 * (X["age"] - 60))))
    line = cross_validate_logistic(X, straight.astype(int).to_numpy(), fold)
    assert [s["age_form"] for s in line.settings] == ["linear"] * 5


def test_logistic_leaves_out_the_view_counts_and_takes_unseen_machines():
    from mammo_insight.fusion.logistic import LogisticSettings, _as_frame, logistic_columns

    features = ["age", "density", "density_missing", "machine_id", "implant", "n_images", "has_CC"]
    assert logistic_columns(features) == ["age", "density", "density_missing", "machine_id", "implant"]
    meta = pd.DataFrame(
        {"age": [50.0, 60.0, np.nan, 70.0], "machine_id": pd.Categorical(["1", "2", "1", "2"])}
    )
    X = _as_frame(meta, ["age", "machine_id"])
    model = LogisticSettings().pipeline(X, "spline").fit(X, [0, 1, 0, 1])
    unseen = _as_frame(pd.DataFrame({"age": [55.0], "machine_id": ["99"]}), ["age", "machine_id"])
    assert 0 < model.predict_proba(unseen)[0, 1] < 1


@pytest.mark.slow
def test_planted_risk_is_scored_as_the_oracle_beside_the_models(tmp_path):
    from mammo_insight.synth.table import breast_level

    raw = make_synthetic_table(400, 0)
    root = tmp_path / "synth"
    root.mkdir()
    raw[RSNA_COLUMNS].to_csv(root / "train.csv", index=False)
    table = load_cohort("rsna", root).table
    truth = breast_level(raw)
    planted = pd.Series(
        truth["p_cancer"].to_numpy(), index=truth["patient_id"].astype(str) + "_" + truth["laterality"]
    )
    cfg = FusionConfig(n_boot=100, shap_rows=100, interaction_rows=20, params=FAST)
    result = run_fusion(table, None, cfg, planted_risk=planted)
    oracle = result.scores["oracle"]["roc_auc"]["value"]
    assert oracle == pytest.approx(
        roc_auc_score(result.breasts["cancer"], planted[result.breasts["breast_id"]])
    )
    assert oracle > auc(result, result.best_metadata) and "oracle" not in result.probs
    missing = run_fusion(table, None, cfg, planted_risk=planted.iloc[:10])
    assert "oracle" not in missing.scores and any("planted risk" in w for w in missing.warnings)


def test_planted_risk_file_errors_name_the_file(tmp_path):
    from mammo_insight.errors import MammoInsightError
    from mammo_insight.stages.fuse import read_planted_risk

    path = tmp_path / "planted_risk.csv"
    pd.DataFrame({"breast_id": ["1_L"], "risk": [0.1]}).to_csv(path, index=False)
    with pytest.raises(MammoInsightError, match="planted_risk.csv: missing column"):
        read_planted_risk(path)
    pd.DataFrame({"breast_id": ["1_L"], "planted_risk": [0.1]}).to_csv(path, index=False)
    assert read_planted_risk(path)["1_L"] == 0.1


def test_work_up_proxies_are_out_by_default_and_in_on_request(tmp_path):
    table = synthetic_table(tmp_path, 60)
    _, default = breast_features(table)
    _, asked = breast_features(table, workup=True)
    assert not {"n_images", "n_other_views"} & set(default) and "n_images" in asked


@pytest.mark.slow
def test_the_cnn_score_is_the_image_reference_and_the_stacker_adds_metadata_to_it(tmp_path):
    """Embeddings that carry the CNN's out-of-fold logit: it is scored as its own model, a logistic stacker
    on it plus the metadata is fitted, both fused models are compared with it (paired), and age alone and
    the primary metadata model stand beside them; the page says whether fusion falls below the CNN."""
    table = synthetic_table(tmp_path, 800, seed=3)
    emb = simulated_embeddings(table, seed=4)
    cols = [c for c in emb.columns if c.startswith("emb_")]
    direction = np.random.default_rng(4).normal(size=DIM)
    emb["cnn_logit"] = emb[cols].to_numpy() @ (direction / np.linalg.norm(direction)) * 2 - 3
    cfg = FusionConfig(n_boot=200, shap_rows=300, interaction_rows=50, params=FAST)
    result = run_fusion(table, emb, cfg)
    assert {"cnn", "stacked", "age_only", "fused", "image"} <= set(result.probs)
    assert {"fused_vs_cnn", "stacked_vs_cnn", "image_vs_cnn", "stacked_vs_age_only"} <= set(
        result.comparisons
    )
    assert {"metadata_logistic_vs_age_only", "fused_vs_metadata_logistic"} <= set(result.comparisons)
    # the stacker keeps the CNN's ranking and adds the metadata: never far below the score it starts from
    assert auc(result, "stacked") >= auc(result, "cnn") - 0.02
    out = tmp_path / "out"
    write_outputs(result, out)
    html = unescape(render_report(result, out, "synthetic").read_text())
    assert "The CNN's own out-of-fold score ranks cancers" in html and "paired bootstrap over women" in html
    assert "Age alone" in html and "declared before scoring" in html


def _table_with_a_tissue_factor(n_women: int = 800, seed: int = 0) -> pd.DataFrame:
    """Two films (L, R) per woman, no age or density; cancer risk set by a dataset-specific 'tissue' column."""
    rng = np.random.default_rng(seed)
    women = np.arange(n_women).astype(str)
    tissue = rng.choice(["F", "G", "D"], size=2 * n_women)
    risk = pd.Series(tissue).map({"F": 0.1, "G": 0.2, "D": 0.4}).to_numpy()  # under the audit's suspect bar
    laterality = np.tile(["L", "R"], n_women)
    patient = np.repeat(women, 2)
    return pd.DataFrame(
        {
            "patient_id": patient,
            "image_id": [f"{p}{s}" for p, s in zip(patient, laterality, strict=True)],
            "breast_id": [f"{p}_{s}" for p, s in zip(patient, laterality, strict=True)],
            "laterality": laterality,
            "view": "MLO",
            "age": np.nan,
            "density": pd.NA,
            "site_id": pd.NA,
            "machine_id": pd.NA,
            "implant": np.nan,
            "tissue": tissue,
            "cancer": (rng.random(2 * n_women) < risk).astype(float),
        }
    )


def test_breast_features_take_laterality_and_the_cohort_s_declared_factors():
    table = _table_with_a_tissue_factor(20)
    table["grey"] = np.arange(len(table), dtype=float)
    breasts, features = breast_features(table, factors={"tissue": "categorical", "grey": "continuous"})
    assert features == ["laterality_left", "tissue", "grey"]
    assert isinstance(breasts["tissue"].dtype, pd.CategoricalDtype)
    assert breasts.set_index("breast_id").loc["0_L", "laterality_left"] == 1.0
    assert breasts.set_index("breast_id").loc["0_R", "grey"] == 1.0
    _, without = breast_features(table)
    assert without == ["laterality_left"]
    _, excluded = breast_features(table, exclude=["tissue"], factors={"tissue": "categorical"})
    assert "tissue" not in excluded


@pytest.mark.slow
def test_a_declared_factor_carries_its_risk_into_both_metadata_models():
    table = _table_with_a_tissue_factor()
    cfg = FusionConfig(n_boot=50, shap_rows=200, interaction_rows=50, params=FAST)
    with_tissue = run_fusion(table, None, cfg, factors={"tissue": "categorical"})
    assert "tissue" in with_tissue.meta_features
    for model in ("metadata", "metadata_logistic"):  # planted: 0.1 / 0.2 / 0.4 by tissue, AUC about 0.67
        assert with_tissue.scores[model]["roc_auc"]["value"] > 0.62, model
    without = run_fusion(table, None, cfg)
    assert without.meta_features == ["laterality_left"]
    assert without.scores["metadata_logistic"]["roc_auc"]["value"] < 0.6
