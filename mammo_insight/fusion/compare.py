"""Score the fusion models with the shared metrics and compare them pairwise on the same breasts.

Every model is scored on the same labelled breasts with intervals that resample patients; the paired
comparisons use the same patient resamples for both models (so shared case mix cancels) and DeLong's
test on breast-level ROC-AUC.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mammo_insight.metrics import delong_test, metrics_with_ci, paired_bootstrap
from mammo_insight.report import fmt_ci

METADATA_MODELS = ("metadata", "metadata_logistic")  # LightGBM, logistic regression
PAIRED_METRICS = ["roc_auc", "pr_auc"]


def best_metadata_model(scores: Mapping) -> str | None:
    """The metadata-only model with the highest out-of-fold ROC-AUC: the reference the images must beat.

    Picking the better of two on the same predictions flatters it a little; with two models and
    thousands of breasts that is far smaller than the intervals.
    """
    present = [m for m in METADATA_MODELS if m in scores]
    return max(present, key=lambda m: scores[m]["roc_auc"]["value"]) if present else None


def model_pairs(models: list[str], best_metadata: str | None) -> list[tuple[str, str]]:
    """(a, b) pairs compared: fused against each metadata model and the images, images against the best
    metadata model, and the two metadata models against each other."""
    pairs = [("fused", m) for m in METADATA_MODELS] + [("fused", "image")]
    if best_metadata is not None:
        pairs.append(("image", best_metadata))
    pairs.append(("metadata_logistic", "metadata"))
    return [(a, b) for a, b in pairs if a in models and b in models]


def score_models(
    y: np.ndarray,
    probs: Mapping[str, np.ndarray],
    patient_id: np.ndarray,
    n_boot: int = 1000,
    *,
    seed: int = 0,
) -> dict:
    """{model: metrics_with_ci body} for each model with a probability vector."""
    return {
        name: metrics_with_ci(y, p, patient_id, None, n_boot=n_boot, seed=seed) for name, p in probs.items()
    }


def paired_comparisons(
    y: np.ndarray,
    probs: Mapping[str, np.ndarray],
    patient_id: np.ndarray,
    n_boot: int = 1000,
    *,
    best_metadata: str | None = None,
    seed: int = 0,
) -> dict:
    """{"fused_vs_metadata": {"roc_auc": paired bootstrap, "pr_auc": ..., "delong": ...}, ...}."""
    out = {}
    for a, b in model_pairs(list(probs), best_metadata):
        body = {
            m: paired_bootstrap(y, probs[a], probs[b], patient_id, metric=m, n_boot=n_boot, seed=seed)
            for m in PAIRED_METRICS
        }
        body["delong"] = delong_test(y, probs[a], probs[b])
        out[f"{a}_vs_{b}"] = body
    return out


def comparison_table(comparisons: Mapping) -> pd.DataFrame:
    """One row per (pair, metric): difference, interval, bootstrap p, DeLong p for ROC-AUC."""
    rows = []
    for pair, body in comparisons.items():
        for metric in PAIRED_METRICS:
            cell = body[metric]
            rows.append(
                {
                    "comparison": pair.replace("_vs_", " vs "),
                    "metric": metric,
                    "a": cell["value_a"],
                    "b": cell["value_b"],
                    "difference": cell["diff"],
                    "ci_low": cell["ci_low"],
                    "ci_high": cell["ci_high"],
                    "p_bootstrap": cell["p_value"],
                    "p_delong": body["delong"]["p_value"] if metric == "roc_auc" else np.nan,
                }
            )
    return pd.DataFrame(rows)


def scores_table(
    scores: Mapping, metrics: tuple[str, ...] = ("roc_auc", "pr_auc", "pf1", "balanced_accuracy")
) -> pd.DataFrame:
    """One row per model: each metric's value, and its value with the 95% interval as text."""
    rows = []
    for name, body in scores.items():
        row = {"model": name, "n_breasts": body["n"], "n_positive": body["n_pos"]}
        for m in metrics:
            row[m] = body[m]["value"]
            row[f"{m} (95% CI)"] = fmt_ci(body[m])
        rows.append(row)
    return pd.DataFrame(rows)
