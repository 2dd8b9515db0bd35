"""Which fusion models are compared with which: the scoring and the paired tests are metrics.compare's.

Every model is scored on the same labelled breasts with intervals that resample patients; the paired
comparisons use the same patient resamples for both models (so shared case mix cancels) and DeLong's
test on breast-level ROC-AUC.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mammo_insight.metrics import compare

METADATA_MODELS = ("metadata", "metadata_logistic")  # LightGBM, logistic regression


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
    pairs = model_pairs(list(probs), best_metadata)
    return compare.paired_comparisons(y, probs, patient_id, pairs, n_boot, seed=seed)
