"""The shared metrics: definitions against hand computations and scikit-learn, bootstrap behaviour,
aggregation, thresholds, paired tests, degenerate inputs and baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

from mammo_insight.metrics import (
    METRIC_NAMES,
    ThresholdRule,
    aggregate_to_breast,
    calibration_table,
    delong_test,
    evaluate_baselines,
    evaluate_predictions,
    features_logreg_baseline,
    majority_baseline,
    metrics_frame,
    metrics_with_ci,
    paired_bootstrap,
    pf1,
    pixel_logreg_baseline,
    point_metrics,
    prevalence_random_baseline,
    subgroup_metrics,
    to_jsonable,
    tune_threshold,
)
from mammo_insight.metrics.bootstrap import bootstrap_metrics, group_codes, resample_counts


def _scores(rng, n, shift=1.0, prevalence=0.3, decimals=None):
    y = (rng.random(n) < prevalence).astype(float)
    s = rng.normal(0, 1, n) + shift * y
    if decimals is not None:
        s = np.round(s, decimals)
    return y, 1 / (1 + np.exp(-s))


# --- pF1 -------------------------------------------------------------------------------------------------


def test_pf1_hand_computed():
    # ctp = 0.5, cfp = 1.0 -> precision 1/3, recall 0.5 -> F1 = 0.4, F2 = 5/11
    y, p = [1, 0, 0, 0], [0.5, 0.5, 0.25, 0.25]
    assert pf1(y, p) == pytest.approx(0.4)
    assert pf1(y, p, beta=2.0) == pytest.approx(5 / 11)
    # ctp = 1.4, cfp = 0.6 -> precision 0.7, recall 0.7
    assert pf1([1, 0, 1, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.7)
    assert pf1([1, 0, 1], [1.0, 0.0, 1.0]) == pytest.approx(1.0)
    assert pf1([1, 0], [0.0, 0.0]) == 0.0
    assert pf1([1, 0], [1.5, -1.0]) == pytest.approx(1.0)  # clipped to [0, 1] like the competition code


def test_pf1_ignores_unlabelled_rows_and_is_nan_without_positives():
    assert pf1([1, np.nan, 0], [0.5, 0.9, 0.5]) == pytest.approx(0.5 * 0.5 * 2 / 1.0)
    assert math.isnan(pf1([0, 0], [0.2, 0.3]))


# --- agreement with scikit-learn ---------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])
def test_point_metrics_agree_with_sklearn(decimals):
    rng = np.random.default_rng(3)
    y, p = _scores(rng, 500, decimals=decimals)
    t = 0.55
    got = point_metrics(y, p, t)
    pred = p >= t
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert got["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert got["npv"] == pytest.approx(skm.precision_score(y, pred, pos_label=0))
    assert got["f1_negative"] == pytest.approx(skm.f1_score(y, pred, pos_label=0))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (got["tn"], got["fp"], got["fn"], got["tp"]) == (tn, fp, fn, tp)
    assert list(got) == METRIC_NAMES


def test_bootstrap_engine_matches_explicit_resample():
    """A weighted resample must score exactly like the data set that repeats each patient that often."""
    rng = np.random.default_rng(5)
    n = 300
    groups = rng.integers(0, 80, n)
    y, p = _scores(rng, n, decimals=1)  # ties across and within patients
    codes, n_groups = group_codes(groups, n)
    weights = resample_counts(n_groups, 3, seed=1)
    boot = bootstrap_metrics(y, p, codes, weights, threshold=0.6)
    for b in range(3):
        rows = np.concatenate(
            [np.flatnonzero(codes == g).repeat(1) for g in range(n_groups) for _ in range(int(weights[b, g]))]
        )
        direct = point_metrics(y[rows], p[rows], 0.6)
        for name in METRIC_NAMES:
            assert boot[name][b] == pytest.approx(direct[name], rel=1e-5), name


# --- bootstrap intervals --------------------------------------------------------------------------------


def test_bootstrap_interval_covers_true_auc():
    true_auc = norm.cdf(1 / np.sqrt(2))  # scores N(1,1) vs N(0,1)
    covered = 0
    reps = 40
    for rep in range(reps):
        rng = np.random.default_rng(100 + rep)
        y = (rng.random(400) < 0.3).astype(float)
        s = rng.normal(0, 1, 400) + y
        ci = metrics_with_ci(y, s, None, threshold=0.5, n_boot=300, seed=rep)["roc_auc"]
        covered += ci["ci_low"] <= true_auc <= ci["ci_high"]
        assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]
    assert covered / reps >= 0.85


def test_patient_resampling_widens_interval_for_correlated_images():
    rng = np.random.default_rng(7)
    n_patients, per_patient = 150, 4
    y_p, p_p = _scores(rng, n_patients, shift=0.8)
    y, p = np.repeat(y_p, per_patient), np.repeat(p_p, per_patient)  # images of one woman agree fully
    patients = np.repeat(np.arange(n_patients), per_patient)
    by_patient = metrics_with_ci(y, p, patients, threshold=0.5, n_boot=400)["roc_auc"]
    by_image = metrics_with_ci(y, p, None, threshold=0.5, n_boot=400)["roc_auc"]
    width = lambda ci: ci["ci_high"] - ci["ci_low"]
    assert width(by_patient) > 1.5 * width(by_image)
    assert by_patient["value"] == pytest.approx(by_image["value"])


def test_metrics_with_ci_shape_and_threshold_source():
    rng = np.random.default_rng(1)
    y, p = _scores(rng, 200)
    res = metrics_with_ci(y, p, np.arange(200) // 2, n_boot=100)
    assert set(METRIC_NAMES) <= set(res)
    assert res["n"] == 200 and res["n_groups"] == 100 and res["n_pos"] == int(y.sum())
    assert "optimistic" in res["threshold_source"]
    assert res["threshold"] == pytest.approx(tune_threshold(y, p))
    assert metrics_with_ci(y, p, None, threshold=0.3, n_boot=10)["threshold_source"] == "given"


# --- aggregation, thresholds, calibration ---------------------------------------------------------------


def _image_preds():
    return pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e"],
            "breast_id": ["1_L", "1_L", "1_R", "2_L", "2_L"],
            "patient_id": ["1", "1", "1", "2", "2"],
            "view": ["CC", "MLO", "CC", "CC", "MLO"],
            "fold": [0, 0, 0, 1, 1],
            "prob": [0.2, 0.8, 0.1, 0.4, 0.6],
            "cancer": [0.0, 1.0, 0.0, np.nan, 0.0],
        }
    )


def test_aggregate_to_breast_mean_and_max():
    preds = _image_preds()
    mean = aggregate_to_breast(preds, "mean").set_index("breast_id")
    mx = aggregate_to_breast(preds, "max").set_index("breast_id")
    assert mean.loc["1_L", "prob"] == pytest.approx(0.5) and mx.loc["1_L", "prob"] == pytest.approx(0.8)
    assert mean.loc["1_L", "cancer"] == 1.0 and mean.loc["1_R", "cancer"] == 0.0
    assert mean.loc["2_L", "cancer"] == 0.0  # NaN image label ignored, the other image is labelled
    assert mean.loc["2_L", "patient_id"] == "2" and mean.loc["2_L", "fold"] == 1
    assert "view" not in mean.columns and len(mean) == 3


def test_tune_threshold_best_f1_and_prevalence():
    y = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.9])
    t = tune_threshold(y, p, "best_f1")
    best = max(skm.f1_score(y, p >= c) for c in p)
    assert skm.f1_score(y, p >= t) == pytest.approx(best)
    t_prev = tune_threshold(y, p, "prevalence")
    assert (p >= t_prev).sum() == y.sum()
    separable = tune_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert 0.2 < separable <= 0.8


def test_sensitivity_threshold_reaches_its_target_on_oof_predictions():
    """threshold_method sensitivity: the highest cut whose recall reaches the target, at image and breast
    level of out-of-fold predictions (ties included); one step higher misses it."""
    rng = np.random.default_rng(11)
    n_breasts = 400
    breast = np.repeat(np.arange(n_breasts), 2)
    y = np.repeat((rng.random(n_breasts) < 0.15).astype(float), 2)
    p = np.round(1 / (1 + np.exp(-(rng.normal(0, 1, y.size) + 1.5 * y - 1.5))), 2)  # ties
    oof = pd.DataFrame(
        {"breast_id": breast.astype(str), "patient_id": (breast // 2).astype(str), "prob": p, "cancer": y}
    )
    for target in (0.8, 0.9, 0.95):
        t = tune_threshold(y, p, "sensitivity", target_sensitivity=target)
        assert skm.recall_score(y, p >= t) >= target
        assert skm.recall_score(y, p > t) < target  # the next cut up falls short: the highest one reaching it
        metrics = evaluate_predictions(oof, None, n_boot=20, rule=ThresholdRule("sensitivity", target))
        for level in ("image", "breast", "breast_max"):
            assert metrics[level]["recall"]["value"] >= target, (level, target)
            assert f"sensitivity >= {target:g}" in metrics[level]["threshold_source"]
    assert tune_threshold([0, 1, 1], [0.2, 0.5, 0.9], "sensitivity", target_sensitivity=1.0) == 0.5


def test_calibration_table_on_calibrated_predictions():
    rng = np.random.default_rng(2)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(float)
    table = calibration_table(y, p, n_bins=10)
    assert list(table.columns) == ["bin", "bin_low", "bin_high", "mean_prob", "observed_rate", "n"]
    assert table["n"].sum() == 20_000 and len(table) == 10
    assert np.abs(table["mean_prob"] - table["observed_rate"]).max() < 0.05
    assert len(calibration_table(y, p * 0.05, n_bins=5, strategy="quantile")) == 5


# --- paired comparison ----------------------------------------------------------------------------------


def test_delong_and_paired_bootstrap_agree_on_a_clear_difference():
    rng = np.random.default_rng(11)
    n = 600
    y = (rng.random(n) < 0.3).astype(float)
    strong = rng.normal(0, 1, n) + 1.5 * y
    weak = rng.normal(0, 1, n) + 0.3 * y
    dl = delong_test(y, strong, weak)
    pb = paired_bootstrap(y, strong, weak, np.arange(n) // 2, n_boot=500)
    assert dl["diff"] > 0 and pb["diff"] > 0
    assert dl["p_value"] < 0.01 and pb["p_value"] < 0.01
    assert pb["ci_low"] > 0
    assert dl["auc_a"] == pytest.approx(skm.roc_auc_score(y, strong))
    assert pb["diff"] == pytest.approx(dl["diff"])
    same = paired_bootstrap(y, strong, strong + 1e-9 * rng.random(n), None, n_boot=200)
    assert same["p_value"] > 0.2


def test_a_paired_comparison_scores_both_models_on_their_common_rows():
    """A row one model could not score (NaN) is left out for both, whichever side it is on; pairs that share
    a model reuse its resampled values and give what the pair alone gives."""
    from mammo_insight.metrics.bootstrap import PairedBootstrap

    rng = np.random.default_rng(3)
    n = 400
    y = (rng.random(n) < 0.3).astype(float)
    a = rng.normal(0, 1, n) + y
    b = a.copy()
    b[:40] = np.nan  # b failed on 40 rows: on the rest it is a
    for first, second in ((a, b), (b, a)):
        result = paired_bootstrap(y, first, second, np.arange(n) // 2, n_boot=100)
        assert result["value_a"] == result["value_b"] == pytest.approx(skm.roc_auc_score(y[40:], a[40:]))
        assert result["diff"] == 0.0
    c = rng.normal(0, 1, n) + 0.5 * y
    shared = PairedBootstrap(y, np.arange(n) // 2, n_boot=100)
    for pair in (("a", "c"), ("b", "c"), ("a", "b")):
        probs = {"a": a, "b": b, "c": c}
        alone = paired_bootstrap(y, probs[pair[0]], probs[pair[1]], np.arange(n) // 2, n_boot=100)
        assert shared.compare((pair[0], probs[pair[0]]), (pair[1], probs[pair[1]])) == alone


def test_delong_variance_matches_hanley_mcneil_scale():
    """Against a model compared with itself plus noise, DeLong's z must stay moderate (no false alarm)."""
    rng = np.random.default_rng(12)
    y = (rng.random(400) < 0.4).astype(float)
    s = rng.normal(0, 1, 400) + y
    res = delong_test(y, s, s + rng.normal(0, 0.05, 400))
    assert abs(res["z"]) < 3 and res["p_value"] > 0.003


# --- degenerate inputs ----------------------------------------------------------------------------------


def test_one_class_gives_nan_not_exceptions():
    y, p = np.ones(6), np.linspace(0.1, 0.9, 6)
    pm = point_metrics(y, p, 0.5)
    assert math.isnan(pm["roc_auc"]) and math.isnan(pm["pr_auc"])
    assert pm["recall"] == pytest.approx(0.5)
    neg = point_metrics(np.zeros(6), p, 0.5)
    assert math.isnan(neg["pf1"]) and math.isnan(neg["roc_auc"]) and math.isnan(neg["recall"])
    res = metrics_with_ci(y, p, np.arange(6), n_boot=50)
    assert math.isnan(res["roc_auc"]["value"]) and math.isnan(res["roc_auc"]["ci_low"])
    assert res["n_boot_valid"] == 0
    assert math.isnan(delong_test(y, p, p[::-1])["p_value"])
    assert math.isnan(paired_bootstrap(y, p, p[::-1], None, n_boot=20)["p_value"])
    assert math.isnan(point_metrics([], [], 0.5)["accuracy"])
    assert tune_threshold(np.zeros(4), [0.1, 0.2, 0.3, 0.4]) == 0.5


def test_rows_without_probability_are_dropped_and_counted():
    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.9, 0.1, np.nan, 0.2, 0.8, 0.3])
    assert point_metrics(y, p, 0.5)["tp"] == 2
    res = metrics_with_ci(y, p, None, threshold=0.5, n_boot=20)
    assert res["n"] == 5 and res["n_missing_prob"] == 1


def test_rare_positive_bootstrap_skips_single_class_resamples():
    y = np.zeros(100)
    y[0] = 1
    p = np.linspace(0, 1, 100)
    res = metrics_with_ci(y, p, np.arange(100), threshold=0.5, n_boot=300)
    assert 0 < res["n_boot_valid"] < 300  # about 37% of resamples miss the single positive


# --- evaluation body, JSON, subgroups -------------------------------------------------------------------


def test_evaluate_predictions_levels_hold_every_metric_with_interval():
    rng = np.random.default_rng(4)
    n_patients = 60
    rows = []
    for pid in range(n_patients):
        for side in "LR":
            label = float(rng.random() < 0.25)
            for view in ("CC", "MLO"):
                rows.append(
                    {
                        "image_id": f"{pid}{side}{view}",
                        "breast_id": f"{pid}_{side}",
                        "patient_id": str(pid),
                        "view": view,
                        "cancer": label,
                        "prob": float(np.clip(0.3 + 0.4 * label + rng.normal(0, 0.2), 0, 1)),
                    }
                )
    preds = pd.DataFrame(rows)
    body = evaluate_predictions(preds, n_boot=100)
    assert {"image", "breast", "breast_max"} <= set(body)
    for level in ("image", "breast", "breast_max"):
        for name in METRIC_NAMES:
            assert set(body[level][name]) == {"value", "ci_low", "ci_high"}
    assert body["image"]["n"] == 240 and body["breast"]["n"] == 120
    # each level scores its own rows: images as they are, breasts by the mean / the max of their images
    by_breast = preds.groupby("breast_id").agg(
        cancer=("cancer", "max"), mean=("prob", "mean"), max=("prob", "max")
    )
    for level, y, p in (
        ("image", preds["cancer"], preds["prob"]),
        ("breast", by_breast["cancer"], by_breast["mean"]),
        ("breast_max", by_breast["cancer"], by_breast["max"]),
    ):
        cells = body[level]
        assert cells["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, p))
        assert cells["pr_auc"]["value"] == pytest.approx(skm.average_precision_score(y, p))
        assert cells["recall"]["value"] == pytest.approx(skm.recall_score(y, p >= cells["threshold"]))
        for name in ("roc_auc", "pr_auc", "pf1", "recall", "balanced_accuracy"):
            assert cells[name]["ci_low"] <= cells[name]["value"] <= cells[name]["ci_high"], (level, name)
            assert cells[name]["ci_low"] < cells[name]["ci_high"], (level, name)
    assert body["breast"]["roc_auc"]["value"] != body["breast_max"]["roc_auc"]["value"]
    text = json.dumps(to_jsonable(body), allow_nan=False)  # strict JSON
    frame = metrics_frame(json.loads(text))
    assert set(frame["level"]) == {"image", "breast", "breast_max"}
    given = evaluate_predictions(preds, threshold={"image": 0.5, "breast": 0.4, "breast_max": 0.6}, n_boot=0)
    assert given["breast"]["threshold"] == 0.4 and given["breast"]["threshold_source"] == "given"


def test_subgroup_metrics_finds_the_harder_subgroup():
    rng = np.random.default_rng(8)
    n = 2000
    density = rng.choice(["A", "D"], n)
    y = (rng.random(n) < 0.3).astype(float)
    shift = np.where(density == "A", 2.0, 0.3)  # detection harder in dense breasts
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + shift * y)))
    df = pd.DataFrame(
        {
            "cancer": y,
            "prob": p,
            "density": density,
            "patient_id": np.arange(n) // 2,
            "age": rng.integers(40, 80, n),
        }
    )
    table = subgroup_metrics(df, ["density", "age_band", "site_id"], n_boot=100)
    assert list(table.columns) == ["factor", "level", "n", "n_pos", "metric", "value", "ci_low", "ci_high"]
    auc = table[table["metric"] == "roc_auc"].set_index(["factor", "level"])["value"]
    assert auc[("density", "A")] > auc[("density", "D")] + 0.2
    bands = list(dict.fromkeys(table.loc[table["factor"] == "age_band", "level"]))
    assert bands == ["<50", "50-59", "60-69", "70+"]  # in age order, not string order
    assert "site_id" not in set(table["factor"])


# --- baselines ------------------------------------------------------------------------------------------


def test_baselines_score_chance_on_random_data():
    rng = np.random.default_rng(9)
    n = 2000
    y = (rng.random(n) < 0.2).astype(float)
    folds = np.arange(n) % 5
    maj = majority_baseline(y, folds)
    assert set(np.unique(maj)) == {0.0}
    rand = prevalence_random_baseline(y, folds, seed=1)
    assert abs(rand.mean() - 0.2) < 0.03
    assert abs(skm.roc_auc_score(y, rand) - 0.5) < 0.05
    images = rng.random((n, 16, 12)).astype(np.float32)
    lr = pixel_logreg_baseline(images, y, folds, size=(8, 6))
    assert abs(skm.roc_auc_score(y, lr) - 0.5) < 0.07
    assert np.array_equal(prevalence_random_baseline(y, folds, seed=1), rand)


def test_pixel_logreg_beats_chance_on_planted_blob():
    rng = np.random.default_rng(10)
    n = 400
    y = (rng.random(n) < 0.3).astype(float)
    images = rng.random((n, 64, 48)).astype(np.float32) * 0.5
    for i in np.flatnonzero(y):
        r, c = rng.integers(12, 52), rng.integers(12, 36)
        images[i, r - 8 : r + 8, c - 8 : c + 8] += 0.25
    table = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "breast_id": [f"b{i // 2}" for i in range(n)],
            "patient_id": [f"p{i // 4}" for i in range(n)],
            "fold": (np.arange(n) // 4) % 5,
            "cancer": y,
        }
    )
    body = evaluate_baselines(table, images, n_boot=200)
    assert set(body) == {"majority", "prevalence_random", "pixel_logreg"}
    assert body["pixel_logreg"]["image"]["roc_auc"]["ci_low"] > 0.6
    assert body["majority"]["image"]["roc_auc"]["value"] == pytest.approx(0.5)
    assert body["majority"]["image"]["recall"]["value"] == 0.0  # read at its own decision, not a tuned cut
    assert (
        body["prevalence_random"]["image"]["roc_auc"]["ci_low"]
        < 0.5
        < body["prevalence_random"]["image"]["roc_auc"]["ci_high"] + 0.05
    )


@pytest.mark.slow
@pytest.mark.real_data
def test_real_rsna_baselines_and_age_score(data_dir):
    """On RSNA's train.csv: counts at both levels, chance baselines at chance, age alone above chance."""
    from mammo_insight.cohort.adapters import load_cohort

    table = load_cohort("rsna", data_dir / "rsna", None).table
    table = table.assign(fold=pd.factorize(table["patient_id"])[0] % 5)
    body = evaluate_baselines(table, None, n_boot=200)
    for level, n, n_pos in (("image", 54_706, 1_158), ("breast", 23_826, 492)):
        assert (body["majority"][level]["n"], body["majority"][level]["n_pos"]) == (n, n_pos)
        assert body["majority"][level]["n_groups"] == 11_913
        assert body["majority"][level]["roc_auc"]["value"] == 0.5
        rand = body["prevalence_random"][level]["roc_auc"]
        assert rand["ci_low"] < 0.5 < rand["ci_high"]
    breasts = aggregate_to_breast(table.assign(prob=table["age"] / 100), "mean")
    age = metrics_with_ci(breasts["cancer"], breasts["prob"], breasts["patient_id"], n_boot=200)
    assert age["n_missing_prob"] == 16 and age["roc_auc"]["ci_low"] > 0.55  # older women: more cancers


@pytest.mark.slow
def test_frozen_features_join_the_baselines_and_use_only_training_folds():
    """A feature that carries the label in the held-out rows only must not help: the model sees training rows."""
    rng = np.random.default_rng(11)
    n = 300
    y = (rng.random(n) < 0.3).astype(float)
    signal = rng.normal(size=(n, 20))
    signal[:, 0] += 2.0 * y  # one informative feature among noise
    table = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "breast_id": [f"b{i // 2}" for i in range(n)],
            "patient_id": [f"p{i // 4}" for i in range(n)],
            "fold": (np.arange(n) // 4) % 5,
            "cancer": y,
        }
    )
    body = evaluate_baselines(table, None, n_boot=100, features=signal)
    assert set(body) == {"majority", "prevalence_random", "frozen_features"}
    assert body["frozen_features"]["image"]["roc_auc"]["ci_low"] > 0.75
    assert "frozen_features" not in evaluate_baselines(table, None, n_boot=50)
    noise = rng.normal(size=(n, 20))
    prob = features_logreg_baseline(noise, y, table["fold"].to_numpy())
    assert abs(skm.roc_auc_score(y, prob) - 0.5) < 0.12


def test_net_benefit_matches_its_definition_and_the_reference_strategies():
    from mammo_insight.metrics import net_benefit

    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype(int)
    p = np.clip(0.1 + 0.3 * y + rng.normal(0, 0.1, 500), 0, 1)
    t = np.array([0.05, 0.2, 0.4])
    for th, nb in zip(t, net_benefit(y, p, t), strict=True):
        flagged = p >= th
        expected = (flagged & (y == 1)).sum() / 500 - (flagged & (y == 0)).sum() / 500 * th / (1 - th)
        assert nb == pytest.approx(expected)
    treat_all = net_benefit(y, np.ones(500), t)
    assert treat_all == pytest.approx(y.mean() - (1 - y.mean()) * t / (1 - t))
    assert net_benefit(y, np.zeros(500), [0.1])[0] == 0.0


def test_net_benefit_refuses_a_threshold_of_one_and_the_default_grid_stays_below_it():
    from mammo_insight.fusion.outputs import default_thresholds
    from mammo_insight.metrics import net_benefit

    y = np.r_[np.ones(36), np.zeros(64)]  # a diagnostic set: 36 % positive, four times is past 1
    grid = default_thresholds(y)
    assert grid.max() < 0.9 and grid.max() > 0.8
    assert np.isfinite(net_benefit(y, np.ones(100), grid)).all()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        net_benefit(y, np.ones(100), [0.5, 1.0])
    assert default_thresholds(np.r_[np.ones(2), np.zeros(98)]).max() == pytest.approx(0.1 * 39 / 40)
