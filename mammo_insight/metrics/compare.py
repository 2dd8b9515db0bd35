"""Models scored side by side on the same rows, and compared pairwise with paired tests.

Shared by fuse-train (metadata, image and fused models) and `compare` (training runs on the same folds):
each model is scored with intervals that resample patients; a pair is compared on the same patient
resamples for both models (so the shared case mix cancels) and with DeLong's test on ROC-AUC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from mammo_insight.metrics.bootstrap import PairedBootstrap, delong_test, metrics_with_ci
from mammo_insight.report import fmt_ci

PAIRED_METRICS = ("roc_auc", "pr_auc")


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
    pairs: Iterable[tuple[str, str]],
    n_boot: int = 1000,
    *,
    metrics: tuple[str, ...] = PAIRED_METRICS,
    seed: int = 0,
) -> dict:
    """{"a_vs_b": {metric: paired bootstrap of a - b, ..., "delong": DeLong's test}} for each pair."""
    out, paired = {}, PairedBootstrap(y, patient_id, n_boot=n_boot, seed=seed)
    for a, b in pairs:
        body = {m: paired.compare((a, probs[a]), (b, probs[b]), metric=m) for m in metrics}
        body["delong"] = delong_test(y, probs[a], probs[b])
        out[f"{a}_vs_{b}"] = body
    return out


def comparison_table(comparisons: Mapping) -> pd.DataFrame:
    """One row per (pair, metric): difference, interval, bootstrap p, DeLong p for ROC-AUC."""
    rows = []
    for pair, body in comparisons.items():
        for metric, cell in body.items():
            if metric == "delong":
                continue
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
