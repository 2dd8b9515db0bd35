"""Degenerate but valid numbers (AUC exactly 0 or 1, ties, one positive, one class) never break a stage.

An interval must hold its own point estimate where the percentile bootstrap guarantees it, and every
report (train, evaluate, eda, fuse-train, explain, index) must render from such numbers; a figure that
still cannot be drawn becomes a note, never a lost stage.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from test_fusion import simulated_embeddings
from test_run_report import fabricate_run

from mammo_insight.metrics import METRIC_NAMES, evaluate_predictions, metrics_with_ci, save_metrics_json
from mammo_insight.metrics.bootstrap import paired_bootstrap, percentile_interval
from mammo_insight.report import figure
from mammo_insight.runs import run_figures
from mammo_insight.runs.run_report import render_run_report

BOUNDED = ["roc_auc", "pr_auc", "pf1", "balanced_accuracy", "f1", "recall", "precision", "accuracy"]


def _contains_estimate(result: dict) -> list[str]:
    """Names of metrics whose finite interval misses the point estimate."""
    bad = []
    for name in METRIC_NAMES:
        cell = result[name]
        if np.isfinite(cell["ci_low"]) and not cell["ci_low"] <= cell["value"] <= cell["ci_high"]:
            bad.append(f"{name}: {cell}")
    return bad


def _perfect(n: int, seed: int, inverted: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(float)
    y[:2] = [0, 1]
    high, low = rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.4, n)
    p = np.where((y == 1) != inverted, high, low)
    return y, p, rng.integers(0, n // 3 + 2, n)


@pytest.mark.parametrize("seed", range(12))
def test_perfect_ranking_gives_auc_one_inside_its_interval(seed):
    y, p, groups = _perfect(int(np.random.default_rng(seed).integers(10, 400)), seed)
    result = metrics_with_ci(y, p, groups, n_boot=300, seed=seed)
    assert result["roc_auc"]["value"] == 1.0
    assert result["pr_auc"]["value"] == 1.0  # a sum of precision steps, clipped where it rounds past 1
    assert result["roc_auc"]["ci_low"] == result["roc_auc"]["ci_high"] == 1.0
    assert _contains_estimate(result) == []


@pytest.mark.parametrize("seed", range(6))
def test_inverted_ranking_gives_auc_zero_inside_its_interval(seed):
    y, p, groups = _perfect(150, seed, inverted=True)
    result = metrics_with_ci(y, p, groups, n_boot=300, seed=seed)
    assert result["roc_auc"]["value"] == 0.0
    assert result["roc_auc"]["ci_low"] == result["roc_auc"]["ci_high"] == 0.0
    assert _contains_estimate(result) == []


@pytest.mark.parametrize("score", [0.0, 0.3, 1 / 3, 0.7, 1.0])
def test_all_scores_tied(score):
    y, _, groups = _perfect(200, 4)
    result = metrics_with_ci(y, np.full(y.size, score), groups, n_boot=300)
    assert result["roc_auc"]["value"] == 0.5
    assert result["roc_auc"]["ci_low"] == result["roc_auc"]["ci_high"] == 0.5
    assert _contains_estimate(result) == []


def test_one_positive_and_resamples_without_it():
    y = np.zeros(60)
    y[7] = 1
    p = np.linspace(0, 1, 60)
    result = metrics_with_ci(y, p, np.arange(60) // 2, n_boot=400)
    assert 0 < result["n_boot_valid"] < 400  # resamples that miss the positive are skipped, not errors
    assert _contains_estimate(result) == []


def test_one_class_only_gives_undefined_intervals_not_errors():
    result = metrics_with_ci(np.zeros(40), np.linspace(0, 1, 40), np.arange(40), n_boot=100)
    assert np.isnan(result["roc_auc"]["value"]) and np.isnan(result["roc_auc"]["ci_low"])
    assert result["n_boot_valid"] == 0


def test_paired_difference_of_identical_models_is_exactly_zero():
    y, p, groups = _perfect(200, 1)
    diff = paired_bootstrap(y, p, p, groups, n_boot=200)
    assert diff["diff"] == diff["ci_low"] == diff["ci_high"] == 0.0


def test_bounds_one_rounding_error_past_the_estimate_are_snapped_and_real_gaps_kept():
    above = np.full(100, 0.1 + 0.2)  # 0.30000000000000004: a rounding error above 0.3
    assert percentile_interval(above, 0.3) == (0.3, 0.1 + 0.2)
    below = np.full(100, 0.7 - 0.4)  # 0.29999999999999993: a rounding error below 0.3
    assert percentile_interval(below, 0.3) == (0.7 - 0.4, 0.3)
    assert percentile_interval(np.full(100, 0.5), 0.3) == (0.5, 0.5)  # a genuine gap is not hidden
    assert np.isnan(percentile_interval(np.full(5, 0.5), 0.5)[0])  # too few valid resamples


def test_forest_plot_draws_a_bound_one_ulp_past_its_estimate():
    frame = pd.DataFrame(
        {
            "level": ["image", "breast"],
            "metric": "roc_auc",
            "value": [1.0, 0.9],
            "ci_low": [1.0000000000000002, 0.8],
            "ci_high": [1.0, np.nan],
        }
    )
    block = str(figure(lambda: run_figures.forest_plot(frame, ["roc_auc"]), "forest"))
    assert "data:image/png;base64," in block


def test_a_figure_that_fails_becomes_a_note_and_a_warning(caplog):
    def broken():
        raise ValueError("'xerr' must not contain negative values")

    with caplog.at_level(logging.WARNING):
        block = str(figure(broken, "Point estimates <per level>"))
    assert "could not be drawn" in block and "xerr" in block and "<img" not in block
    assert "&lt;per level&gt;" in block  # the caption is still escaped
    assert any("could not be drawn" in r.message for r in caplog.records)


# --- every report renders from degenerate numbers -------------------------------------------------------


def _perfect_run(run_dir):
    """A run whose out-of-fold predictions separate the classes perfectly, with one bound an ulp off."""
    fabricate_run(run_dir, n_patients=60)
    oof = pd.read_csv(
        run_dir / "oof_predictions.csv", dtype={"image_id": str, "breast_id": str, "patient_id": str}
    )
    oof["prob"] = np.where(oof["cancer"] == 1, 0.9, 0.05)
    oof.to_csv(run_dir / "oof_predictions.csv", index=False)
    metrics = evaluate_predictions(oof, n_boot=100)
    metrics["image"]["roc_auc"]["ci_low"] = 1.0000000000000002  # what crashed train's forest plot
    save_metrics_json(run_dir / "metrics.json", metrics)
    return run_dir


@pytest.mark.slow
def test_run_and_evaluate_reports_render_from_perfect_predictions(tmp_path, caplog):
    run_dir = _perfect_run(tmp_path / "RUN")
    with caplog.at_level(logging.WARNING):
        page = render_run_report(run_dir, title="External validation: degenerate")
    html = page.read_text()
    assert "Metrics with intervals" in html and "could not be drawn" not in html
    assert not [r for r in caplog.records if "could not be drawn" in r.message]


@pytest.mark.slow
def test_eda_report_renders_when_a_factor_separates_the_label(tmp_path):
    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.stages.eda import EdaConfig, EdaResult, write_eda
    from mammo_insight.stats.study import run_study
    from mammo_insight.synth.table import RSNA_COLUMNS, make_synthetic_table

    table = make_synthetic_table(150, 3, 0.2)[RSNA_COLUMNS]
    table["cancer"] = (table["implant"] == 1).astype(int)  # a factor that decides the label
    table.loc[table.index[:1], "implant"] = 1
    table.loc[table.index[:1], "cancer"] = 1
    table.to_csv(tmp_path / "train.csv", index=False)
    result = run_study(load_cohort("rsna", tmp_path), seed=0)
    page = write_eda(EdaResult(EdaConfig(), result), tmp_path / "EDA")
    html = page.read_text()
    assert "Leakage audit" in html and "Adjusted odds ratios" in html and "could not be drawn" not in html
    implant = result.leakage.set_index("column").loc["implant"]
    assert implant["auc_alone"] == pytest.approx(1.0) and implant["verdict"] == "leaky"
    rates = result.rates
    finite = rates[np.isfinite(rates["ci_low"])]
    assert (finite["ci_low"] <= finite["rate"] + 1e-12).all() and (
        finite["rate"] <= finite["ci_high"] + 1e-12
    ).all()


@pytest.mark.slow
def test_fusion_explain_and_index_render_from_degenerate_numbers(tmp_path):
    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.explain.gallery import render_index
    from mammo_insight.fusion.config import FusionConfig
    from mammo_insight.fusion.lgbm import LgbmParams
    from mammo_insight.fusion.outputs import write_outputs
    from mammo_insight.fusion.pipeline import run_fusion
    from mammo_insight.fusion.report import render_report
    from mammo_insight.manifest import write_manifest
    from mammo_insight.report.index import build_index
    from mammo_insight.synth.table import RSNA_COLUMNS, make_synthetic_table

    make_synthetic_table(200, 5, 0.2)[RSNA_COLUMNS].to_csv(tmp_path / "train.csv", index=False)
    cohort = load_cohort("rsna", tmp_path).table
    emb = simulated_embeddings(cohort)
    emb["cnn_logit"] = np.where(emb["cancer"] == 1, 4.0, -4.0)  # an image model that is never wrong
    result = run_fusion(
        cohort,
        emb,
        FusionConfig(n_boot=100, shap_rows=200, interaction_rows=50, params=LgbmParams(n_estimators=40)),
    )
    fuse_dir = tmp_path / "FUSE"
    fuse_dir.mkdir()
    write_outputs(result, fuse_dir)
    write_manifest(fuse_dir, "fuse-train", {})
    render_report(result, fuse_dir, "degenerate", "")
    assert result.scores["image"]["roc_auc"]["value"] == 1.0
    assert "could not be drawn" not in (fuse_dir / "index.html").read_text()

    explain_dir = tmp_path / "EXPLAIN"
    explain_dir.mkdir()
    metrics = {
        "method": "gradcam",
        "n_cases": 3,
        "threshold": 0.5,
        "pointing_game": 1.0,
        "pointing_game_ci": [1.0, 1.0],
        "energy_inside": 0.0,
        "energy_inside_ci": [0.0, 0.0],
        "randomisation_rank_corr": 1.0,
        "randomisation_rank_corr_ci": [1.0, 1.0],
        "failures": [],
        "summary": {},
        "n_explained_images": 3,
    }
    (explain_dir / "cam_metrics.json").write_text(json.dumps(metrics))
    write_manifest(explain_dir, "explain", {})
    render_index(explain_dir / "index.html", metrics, 0.0, {}, checks_table=pd.DataFrame(), failures=[])

    run_dir = _perfect_run(tmp_path / "RUN")
    write_manifest(run_dir, "train", {})
    render_run_report(run_dir)
    index = build_index([tmp_path], tmp_path / "INDEX").read_text()
    for stage in ("CNN training", "Fusion", "Grad-CAM"):
        assert stage in index
