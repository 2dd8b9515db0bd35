"""Leakage audit: which columns are known at screening time, and how well each alone predicts the label.

Two ways a column leaks. It may be decided after the outcome (the cohort's ``post_outcome`` list, which
its adapter declares: RSNA's BIRADS, biopsy, invasive, difficult_negative_case; CMMD's classification,
subtype, abnormality ...): then it is leaky by definition, whatever its AUC. Or it may predict the
label implausibly well on its own (AUC >= 0.9), which for screening metadata means it encodes the
outcome somehow. Later stages drop the columns :func:`leaky_columns` returns.

The AUC of one column is measured honestly: each column is turned into levels (deciles for a
continuous column, "missing" as a level of its own), each level is scored by its cancer rate in the
other folds (the one folds policy: grouped by patient, so a woman never scores herself, and
stratified on her label), and a breast's score is the
mean of its images' scores, compared with the breast label. High-cardinality columns that would
memorise patients therefore get no credit, and image-level columns (view) are handled as well as
breast-level ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from mammo_insight.cohort.folds import patient_folds
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.errors import MammoInsightError

log = logging.getLogger(__name__)

# Identifiers and file locations are not metadata: they are never model inputs.
NOT_AUDITED = ["patient_id", "image_id", "breast_id", "image_path"]
LEAKY_AUC = 0.9
N_FOLDS = 5
MAX_LEVELS_AS_IS = 20  # a numeric column with more distinct values is cut into deciles
PRIOR_WEIGHT = 10.0  # pseudo-count pulling rare levels toward the overall rate
LEAKAGE_COLUMNS = ["column", "available_at_screening", "auc_alone", "verdict"]


def _level_codes(values: pd.Series) -> np.ndarray:
    """Integer level codes: deciles for a continuous numeric column, 0 for an empty cell."""
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_LEVELS_AS_IS:
        codes = pd.qcut(values, q=10, labels=False, duplicates="drop").to_numpy(dtype=float)
        codes = np.where(np.isnan(codes), -1, codes).astype(np.int64)
    else:
        codes = pd.factorize(values)[0]
    return codes + 1


def _out_of_fold_scores(
    codes: np.ndarray, label: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Each image scored by its level's smoothed cancer rate among the other folds' patients."""
    scores = np.empty(len(codes))
    for train_idx, test_idx in folds:
        prior = label[train_idx].mean()
        n = np.bincount(codes[train_idx], minlength=codes.max() + 1)
        pos = np.bincount(codes[train_idx], weights=label[train_idx], minlength=codes.max() + 1)
        rate = (pos + PRIOR_WEIGHT * prior) / (n + PRIOR_WEIGHT)
        scores[test_idx] = rate[codes[test_idx]]
    return scores


def column_auc(
    codes: np.ndarray, label: np.ndarray, breast: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> float:
    """Breast-level, patient-grouped out-of-fold AUC of one column alone (NaN when undefined).

    ``breast`` holds integer breast codes 0..n_breasts-1 (a breast's score is its images' mean).
    """
    scores = _out_of_fold_scores(codes, label, folds)
    n_images = np.bincount(breast)
    breast_score = np.bincount(breast, weights=scores) / n_images
    breast_label = np.bincount(breast, weights=label) > 0
    if breast_label.all() or not breast_label.any():
        return float("nan")
    return float(roc_auc_score(breast_label, breast_score))


def _patient_folds(
    groups: pd.Series, label: np.ndarray, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row positions of N_FOLDS folds under the one folds policy (cohort.folds); none when the
    cohort has too few women or positive women for it (the AUCs are then left empty, with a warning)."""
    try:
        fold = patient_folds(groups, label, N_FOLDS, seed)
    except MammoInsightError as exc:
        log.warning("leakage audit: no AUC alone for any column: %s", exc)
        return []
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(N_FOLDS)]


def audited_columns(table: pd.DataFrame, label: str = "cancer") -> list[str]:
    """Every column but the label, identifiers and file paths."""
    return [c for c in table.columns if c != label and c not in NOT_AUDITED]


def audit_leakage(
    table: pd.DataFrame, label: str = "cancer", *, post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS)
) -> pd.DataFrame:
    """One row per audited column: column, available_at_screening, auc_alone, verdict ('leaky' or 'ok').

    Post-outcome columns (``post_outcome``: the cohort's declaration, Cohort.post_outcome; the canonical
    ones by default) are never available at screening and always leaky. Any other column whose AUC alone
    reaches 0.9 is leaky too. Columns that are entirely empty get a NaN AUC.
    """
    known = table[table[label].notna()].reset_index(drop=True)
    y = known[label].to_numpy(dtype=float)
    groups = known["patient_id"] if "patient_id" in known.columns else pd.Series(np.arange(len(known)))
    breast = pd.factorize(known["breast_id"] if "breast_id" in known.columns else groups)[0]
    folds = _patient_folds(groups, y)
    rows = []
    for col in audited_columns(table, label):
        available = col not in post_outcome
        auc = float("nan")
        if folds and known[col].notna().any() and len(y) and 0 < y.sum() < len(y):
            auc = column_auc(_level_codes(known[col]), y, breast, folds)
        leaky = (not available) or (not np.isnan(auc) and auc >= LEAKY_AUC)
        rows.append(
            {
                "column": col,
                "available_at_screening": available,
                "auc_alone": auc,
                "verdict": "leaky" if leaky else "ok",
            }
        )
        log.debug("leakage %s: auc %.3f, %s", col, auc, rows[-1]["verdict"])
    return pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)


def leaky_columns(
    table: pd.DataFrame, label: str = "cancer", *, post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS)
) -> list[str]:
    """The columns later stages exclude by default (post-outcome or implausibly predictive)."""
    audit = audit_leakage(table, label, post_outcome=post_outcome)
    return audit.loc[audit["verdict"] == "leaky", "column"].tolist()
