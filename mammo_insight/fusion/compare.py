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
# the pre-declared primary metadata model first: "best metadata" is chosen by this order, never by the scores
PRIMARY_ORDER = ("metadata_logistic", "metadata")
AGE_ONLY = "age_only"
CNN, STACKED = "cnn", "stacked"  # the CNN's own out-of-fold score; a logistic stacker on its logit + metadata


def best_metadata_model(models: Mapping) -> str | None:
    """The metadata-only reference the images must beat, by a rule fixed before scoring: the pre-declared
    primary model (the logistic regression an epidemiologist fits first), the LightGBM when it is absent.

    Taking the larger of two estimates on the same predictions would flatter the winner, and on a small
    cohort which one wins flips with the fold draw.
    """
    return next((m for m in PRIMARY_ORDER if m in models), None)


def model_pairs(models: list[str], best_metadata: str | None) -> list[tuple[str, str]]:
    """(a, b) pairs compared: every image and fused model against the CNN's own score, the primary metadata
    model and age alone; the fused models against each metadata model; the metadata models against age."""
    pairs = [(a, CNN) for a in (STACKED, "fused", "image")]
    for a in (STACKED, "fused", "image", *METADATA_MODELS):
        pairs += [(a, b) for b in (best_metadata, AGE_ONLY) if b is not None and b != a]
    pairs += [("fused", m) for m in METADATA_MODELS] + [("fused", "image"), ("metadata_logistic", "metadata")]
    return list(dict.fromkeys((a, b) for a, b in pairs if a in models and b in models))


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
