"""The files fuse-train writes: metrics.json, oof_predictions.csv and tables/*.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.files import write_csv_atomic
from mammo_insight.fusion.pipeline import FusionResult
from mammo_insight.fusion.shap_tabular import group_attribution, importance_table
from mammo_insight.metrics import calibration_table, net_benefit, save_metrics_json
from mammo_insight.metrics.compare import comparison_table

OOF_COLUMNS = ["breast_id", "patient_id", "fold", "model", "prob", "cancer"]


def oof_long(result: FusionResult) -> pd.DataFrame:
    """breast_id, patient_id, fold, model, prob, cancer: one row per breast and model."""
    b = result.breasts
    parts = [
        b[["breast_id", "patient_id", "fold"]].assign(model=name, prob=p, cancer=b["cancer"].to_numpy())
        for name, p in result.probs.items()
    ]
    return pd.concat(parts, ignore_index=True)[OOF_COLUMNS]


def shap_importance(result: FusionResult) -> pd.DataFrame:
    return importance_table(
        result.shap_explanation.values, list(result.shap_X.columns), result.feature_groups
    )


def shap_groups(result: FusionResult) -> pd.DataFrame:
    """Per explained breast: its metadata and image SHAP sums, the base value, the label and the model's risk."""
    b = result.breasts.iloc[result.shap_rows]
    attribution = group_attribution(
        result.shap_explanation.values, list(result.shap_X.columns), result.feature_groups
    )
    base = np.broadcast_to(np.asarray(result.shap_explanation.base_values, dtype=float), len(b))
    out = pd.DataFrame(
        {
            "breast_id": b["breast_id"].to_numpy(),
            "patient_id": b["patient_id"].to_numpy(),
            "cancer": b["cancer"].to_numpy(),
            "base_value": base,
        }
    )
    out = pd.concat([out, attribution.reset_index(drop=True)], axis=1)
    out["oof_prob"] = result.probs[result.explained_model][result.shap_rows]
    return out


def metrics_body(result: FusionResult) -> dict:
    """metrics.json: one key per model (metadata, metadata_logistic, image, fused) plus the comparisons, the
    settings each fold chose and the run facts."""
    body: dict = dict(result.scores)
    body["comparisons"] = result.comparisons
    body["per_view_image_auc"] = result.per_view.to_dict(orient="records")
    body["level"] = "breast"
    body["features"] = {"metadata": result.meta_features, "embedding_dim": result.emb_dim}
    body["excluded_leaky"] = result.excluded_leaky
    body["included_leaky"] = result.included_leaky
    body["warnings"] = result.warnings
    body["explained_model"] = result.explained_model
    body["best_metadata_model"] = result.best_metadata
    body["settings"] = result.settings
    body["folds"] = result.folds
    if result.scanner is not None:
        body["image_score_odds_ratio"] = result.scanner.odds_ratio
        body["scanner_probes"] = result.scanner.probes.to_dict(orient="records")
        body["within_group_auc"] = result.scanner.within.to_dict(orient="records")
        body["heterogeneity"] = result.scanner.heterogeneity
        body["scanner_verdict"] = result.scanner.verdict
        body["scanner_stratified_auc"] = result.scanner.stratified.to_dict(orient="records")
    return body


def decision_curves(result: FusionResult, thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Net benefit per model and threshold, with treat-all and treat-none, on the out-of-fold predictions."""
    y = result.breasts["cancer"].to_numpy(int)
    t = default_thresholds(y) if thresholds is None else thresholds
    curves = {"treat all": net_benefit(y, np.ones(len(y)), t), "treat none": np.zeros(len(t))}
    curves.update({name: net_benefit(y, p, t) for name, p in result.probs.items()})
    return pd.DataFrame(
        [
            {"model": m, "threshold": th, "net_benefit": nb}
            for m, v in curves.items()
            for th, nb in zip(t, v, strict=True)
        ]
    )


def default_thresholds(y: np.ndarray) -> np.ndarray:
    """0 to four times the prevalence (at least 10 %, at most 0.9): the thresholds a screening decision could
    use; a diagnostic set's prevalence (mini-MIAS: 36 % abnormal) would otherwise carry them past 1."""
    return np.linspace(0.0, min(0.9, max(0.1, 4 * float(np.mean(y)))), 41)[:-1]


def calibration_curves(result: FusionResult, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table per model: equal-count bins, because probabilities of a rare outcome crowd near 0."""
    y = result.breasts["cancer"].to_numpy(int)
    return pd.concat(
        [calibration_table(y, p, n_bins, "quantile").assign(model=name) for name, p in result.probs.items()],
        ignore_index=True,
    )


def write_outputs(result: FusionResult, out: Path) -> dict[str, Path]:
    """Write every data file of OUT and return their paths by name."""
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": save_metrics_json(out / "metrics.json", metrics_body(result)),
        "oof": out / "oof_predictions.csv",
        "importance": tables / "shap_importance.csv",
        "groups": tables / "shap_groups.csv",
        "comparisons": tables / "model_comparison.csv",
        "per_view": tables / "per_view_auc.csv",
    }
    write_csv_atomic(paths["oof"], oof_long(result))
    write_csv_atomic(paths["importance"], shap_importance(result))
    write_csv_atomic(paths["groups"], shap_groups(result))
    write_csv_atomic(paths["comparisons"], comparison_table(result.comparisons))
    write_csv_atomic(paths["per_view"], result.per_view)
    paths["decision"] = tables / "decision_curves.csv"
    write_csv_atomic(paths["decision"], decision_curves(result))
    paths["calibration"] = tables / "calibration.csv"
    write_csv_atomic(paths["calibration"], calibration_curves(result))
    if result.scanner is not None:
        paths["probes"] = tables / "scanner_probes.csv"
        write_csv_atomic(paths["probes"], result.scanner.probes)
        paths["within"] = tables / "within_group_auc.csv"
        write_csv_atomic(paths["within"], result.scanner.within)
        paths["stratified"] = tables / "scanner_stratified_auc.csv"
        write_csv_atomic(paths["stratified"], result.scanner.stratified)
    if result.interactions is not None:
        paths["interactions"] = tables / "shap_interactions.csv"
        write_csv_atomic(paths["interactions"], result.interactions)
    return paths
