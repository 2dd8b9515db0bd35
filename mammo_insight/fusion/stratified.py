"""Does a score's pooled ROC-AUC rest on telling scanners apart? Pooled against machine-stratified AUC.

A score that is each machine's cancer rate ranks cancers above chance over the whole cohort (RSNA's rates
run from 0 % to 2.6 % by machine) and exactly at chance inside every machine. So the question is not
whether the per-machine AUCs agree (a scanner-only score agrees with itself at 0.5 everywhere) but whether
the pooled figure exceeds what the score ranks within machines:

- pooled ROC-AUC: every cancer against every non-cancer;
- stratified ROC-AUC (within machine, or within site): only the pairs of a cancer and a non-cancer of the
  same machine, i.e. the per-machine AUCs averaged with weights (cancers x non-cancers) of each machine,
  the Mantel-Haenszel-like summary of the within-stratum concordance. A machine holding one class adds
  no pair;
- the machine-only model: each breast scored by its machine's cancer rate among the other folds' women
  (patient-grouped folds, rates shrunk toward the overall rate): what recognising the scanner alone gives.

Intervals resample women; the gap (pooled - stratified) is paired (the same resamples for both). The
verdict calls a score scanner-driven when the gap's interval lies above 0 and the stratified AUC's does
not clear chance, partly scanner-driven when the gap is above 0 but it still ranks within machines, and
not scanner-driven otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammo_insight.cohort.folds import patient_folds
from mammo_insight.errors import MammoInsightError
from mammo_insight.metrics.bootstrap import (
    bootstrap_metrics,
    group_codes,
    percentile_interval,
    resample_counts,
)
from mammo_insight.metrics.core import roc_auc

FACTOR_NAMES = {"machine_id": "machine", "site_id": "site"}
PRIOR_WEIGHT = 10.0  # pseudo-breasts pulling a small machine's out-of-fold rate toward the overall rate
RATE_FOLDS = 5
AUDIT_COLUMNS = [
    "factor",
    "strata",
    "pooled_auc",
    "pooled_low",
    "pooled_high",
    "stratified_auc",
    "stratified_low",
    "stratified_high",
    "gap",
    "gap_low",
    "gap_high",
    "factor_only_auc",
    "factor_only_low",
    "factor_only_high",
    "grade",
]


def _pairs(y: np.ndarray, strata: np.ndarray, codes: np.ndarray, weights: np.ndarray, level) -> np.ndarray:
    """Resampled (cancer x non-cancer) pair weight of one stratum, per resample."""
    inside = strata == level
    n_groups = weights.shape[1]
    pos = np.bincount(codes[inside], weights=(y[inside] == 1).astype(float), minlength=n_groups)
    neg = np.bincount(codes[inside], weights=(y[inside] == 0).astype(float), minlength=n_groups)
    w = weights.astype(np.float64)
    return (w @ pos) * (w @ neg)


def stratified_auc_draws(
    y: np.ndarray, score: np.ndarray, strata: np.ndarray, codes: np.ndarray, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """(stratified ROC-AUC, its value in each resample): per-stratum AUCs weighted by their pair counts."""
    num, den = 0.0, 0.0
    num_draws = np.zeros(weights.shape[0])
    den_draws = np.zeros(weights.shape[0])
    for level in np.unique(strata):
        inside = strata == level
        n_pos = int((y[inside] == 1).sum())
        n_pairs = n_pos * int((y[inside] == 0).sum())
        if n_pairs == 0:
            continue
        num += roc_auc(y[inside], score[inside]) * n_pairs
        den += n_pairs
        auc = bootstrap_metrics(
            y[inside], score[inside], codes[inside], weights, threshold=None, names=["roc_auc"]
        )["roc_auc"]
        pairs = _pairs(y, strata, codes, weights, level)
        ok = np.isfinite(auc)
        num_draws += np.where(ok, auc, 0.0) * np.where(ok, pairs, 0.0)
        den_draws += np.where(ok, pairs, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (num / den if den else float("nan")), num_draws / den_draws


def factor_only_score(y: np.ndarray, strata: np.ndarray, patient: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each row's stratum cancer rate among the other folds' women (shrunk toward the overall rate).

    In-sample rates where the cohort has too few women for the folds (a tiny test table)."""
    level = pd.factorize(pd.Series(strata))[0]
    try:
        fold = patient_folds(patient, y, RATE_FOLDS, seed)
    except MammoInsightError:
        fold = np.zeros(len(y), dtype=int)
    score = np.empty(len(y))
    for f in np.unique(fold):
        train = fold != f if len(np.unique(fold)) > 1 else np.ones(len(y), bool)
        prior = y[train].mean()
        n = np.bincount(level[train], minlength=level.max() + 1)
        pos = np.bincount(level[train], weights=y[train], minlength=level.max() + 1)
        rate = (pos + PRIOR_WEIGHT * prior) / (n + PRIOR_WEIGHT)
        score[fold == f] = rate[level[fold == f]]
    return score


def _interval(point: float, draws: np.ndarray) -> tuple[float, float, float]:
    return (float(point), *percentile_interval(draws, point))


def grade(row: dict) -> str:
    """'scanner-driven' | 'partly' | 'no' | 'undetermined' from one audit row (see the module docstring)."""
    if not np.isfinite(row["gap_low"]) or not np.isfinite(row["stratified_low"]):
        return "undetermined"
    if row["gap_low"] > 0:
        return "scanner-driven" if row["stratified_low"] <= 0.5 else "partly"
    return "no"


def stratified_audit(
    breasts: pd.DataFrame,
    score: np.ndarray,
    factors: tuple[str, ...] = ("machine_id", "site_id"),
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per factor: pooled, stratified and factor-only ROC-AUC with intervals, the paired gap, a grade.

    ``breasts``: one row per breast with cancer (0/1), patient_id and the factor columns; ``score`` per row.
    """
    y = breasts["cancer"].astype(int).to_numpy()
    score = np.asarray(score, dtype=float)
    patient = breasts["patient_id"].astype(str).to_numpy()
    codes, n_groups = group_codes(patient, len(y))
    weights = resample_counts(n_groups, n_boot, seed)
    pooled_draws = bootstrap_metrics(y, score, codes, weights, threshold=None, names=["roc_auc"])["roc_auc"]
    pooled = roc_auc(y, score)
    rows = []
    for factor in factors:
        if factor not in breasts or breasts[factor].astype(str).nunique() < 2:
            continue
        strata = breasts[factor].astype(str).fillna("missing").to_numpy()
        within, within_draws = stratified_auc_draws(y, score, strata, codes, weights)
        alone = factor_only_score(y, strata, patient, seed)
        alone_draws = bootstrap_metrics(y, alone, codes, weights, threshold=None, names=["roc_auc"])
        row = dict(
            zip(
                AUDIT_COLUMNS[:-1],  # all but the grade, which reads the row
                [
                    factor,
                    len(set(strata)),
                    *_interval(pooled, pooled_draws),
                    *_interval(within, within_draws),
                    *_interval(pooled - within, pooled_draws - within_draws),
                    *_interval(roc_auc(y, alone), alone_draws["roc_auc"]),
                ],
                strict=True,
            )
        )
        rows.append({**row, "grade": grade(row)})
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def audit_sentence(row: pd.Series) -> str:
    """The verdict on one factor in plain words, with the figures it rests on."""
    unit = FACTOR_NAMES.get(row["factor"], row["factor"])
    figures = (
        f"pooled ROC-AUC {row['pooled_auc']:.3f} ({row['pooled_low']:.3f}-{row['pooled_high']:.3f}), "
        f"within-{unit} (stratified) ROC-AUC {row['stratified_auc']:.3f} "
        f"({row['stratified_low']:.3f}-{row['stratified_high']:.3f}), difference {row['gap']:+.3f} "
        f"({row['gap_low']:+.3f} to {row['gap_high']:+.3f}); the {unit} alone gives ROC-AUC "
        f"{row['factor_only_auc']:.3f} ({row['factor_only_low']:.3f}-{row['factor_only_high']:.3f})"
    )
    return {
        "scanner-driven": f"Scanner-driven ({unit}): the pooled figure exceeds what the score ranks within a "
        f"{unit}, and within a {unit} it ranks no better than chance ({figures}). Its pooled ROC-AUC rests on "
        f"telling {unit}s apart.",
        "partly": f"Partly {unit}-driven: the score ranks cancers within a {unit}, but the pooled figure "
        f"exceeds that ({figures}): part of the pooled ROC-AUC comes from telling {unit}s apart, so quote "
        f"the within-{unit} figure.",
        "no": f"Not {unit}-driven: the score ranks cancers within a {unit} about as well as over the whole "
        f"cohort ({figures}).",
        "undetermined": f"Too few cancers within {unit}s to compare pooled and within-{unit} ranking.",
    }[row["grade"]]
