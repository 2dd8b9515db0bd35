"""Leakage audit: which columns are known at screening time, and how well each alone predicts the label.

Two layers decide that a column leaks. The first is knowledge: the cohort's ``post_outcome`` list, which
its adapter declares (RSNA's BIRADS, biopsy, invasive, difficult_negative_case; CMMD's classification,
subtype, abnormality ...), is leaky by definition, whatever the data say. The second is an automatic
check of the data, for the columns nobody declared:

- label-conditional recording: the column is recorded (or missing) in one class only, e.g. a tumour
  subtype present for cancers only, or an age missing for every normal breast. Flagged when one class
  has none of a state (recorded / missing) that the other class has so often that the empty cell has a
  chance below ``ZERO_CELL_P`` under independence;
- label-exclusive values: at least ``EXCLUSIVE_SHARE`` of one class's recorded images hold values that
  never occur in the other class;
- an AUC alone implausibly high for a screening-time factor (>= ``LEAKY_AUC`` and above its null).

The missingness indicator of every partly recorded column is audited like a column (a row with
``audited = 'missingness'``); when it leaks, the column leaks with it, since a model reads an empty cell
as a value. :func:`leaky_columns` lists what later stages leave out.

The AUC alone: each column is turned into levels (deciles for a continuous column, "missing" as a level
of its own), each image is scored by its level's cancer rate and a breast by its images' mean score,
against the breast label. With few levels (<= ``MAX_IN_SAMPLE_LEVELS``) the rates are in-sample: the
ranking can only be in the right direction, so an uninformative column lands near 0.5, not below it,
and the optimism of fitting a handful of rates is shown by the permutation null. With more levels
(identifier-like columns) in-sample rates would memorise women, so the rates come from the other folds
(patient-grouped, the one folds policy) and the AUC of the better direction is reported (an out-of-fold
AUC of a column without information falls below 0.5). Either way ``null_low``-``null_high`` is the
central 95% of the same statistic over ``N_PERMUTATIONS`` permutations of the breast labels: an AUC
inside it is what chance gives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from mammo_insight.cohort.folds import patient_folds
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.errors import MammoInsightError

log = logging.getLogger(__name__)

# Identifiers and file locations are not metadata: they are never model inputs (study_id, accession_id and
# file: the hashed study ids and relative paths of a DICOM tree, cohort.adapters.dicom).
NOT_AUDITED = ["patient_id", "image_id", "breast_id", "image_path", "study_id", "accession_id", "file"]
LEAKY_AUC = 0.9
N_FOLDS = 5
MAX_LEVELS_AS_IS = 20  # a numeric column with more distinct values is cut into deciles
MAX_IN_SAMPLE_LEVELS = 12  # deciles plus 'missing' fit; more levels get out-of-fold rates
PRIOR_WEIGHT = 10.0  # pseudo-count pulling rare levels toward the overall rate (out-of-fold scoring)
N_PERMUTATIONS = 200
ZERO_CELL_P = 1e-3
EXCLUSIVE_SHARE = 0.9
MIN_CLASS_N = 10  # a class with fewer recorded images is too small for the label-exclusive-values check
IN_SAMPLE = "in-sample level rates"
OUT_OF_FOLD = "out-of-fold level rates, better direction"
VALUES, MISSINGNESS = "values", "missingness"
LEAKAGE_COLUMNS = [
    "column",
    "audited",
    "available_at_screening",
    "auc_alone",
    "null_low",
    "null_high",
    "auc_method",
    "verdict",
    "reason",
]


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


def _grouped_auc(score: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC of groups of breasts sharing one score (ties count one half), from per-group counts."""
    values, inverse = np.unique(score, return_inverse=True)
    pos_v = np.bincount(inverse, weights=pos, minlength=len(values))
    neg_v = np.bincount(inverse, weights=neg, minlength=len(values))
    below = np.cumsum(neg_v) - neg_v
    total = pos_v.sum() * neg_v.sum()
    return float((pos_v * (below + 0.5 * neg_v)).sum() / total) if total else float("nan")


class _InSample:
    """In-sample AUC of one few-level column, computed from breast 'patterns' so permutations are cheap.

    Breasts whose images hold the same count of each level always share a score, so the AUC needs only
    the positive and negative breasts per pattern; under a permutation of breast labels the level rates
    follow from the patterns' positive breasts, for all permutations at once.
    """

    def __init__(self, codes: np.ndarray, breast: np.ndarray, n_breasts: int) -> None:
        self.codes, self.k = codes, int(codes.max()) + 1
        counts = np.bincount(breast * self.k + codes, minlength=n_breasts * self.k).reshape(n_breasts, self.k)
        dims = counts.max(axis=0) + 1
        if np.prod(dims.astype(float)) < 2**62:  # one integer per row: hashing beats sorting rows
            of_breast = pd.factorize(np.ravel_multi_index(counts.T, dims))[0]
            first = np.unique(of_breast, return_index=True)[1]
            self.patterns, self.of_breast = counts[first], of_breast
        else:
            self.patterns, of_breast = np.unique(counts, axis=0, return_inverse=True)
            self.of_breast = of_breast.ravel()
        self.n_level = np.maximum(np.bincount(codes, minlength=self.k), 1)
        self.n_images = self.patterns.sum(axis=1)
        self.n_breasts = np.bincount(self.of_breast, minlength=len(self.patterns)).astype(float)

    def _auc(self, rate: np.ndarray, pos: np.ndarray) -> float:
        return _grouped_auc(self.patterns @ rate / self.n_images, pos, self.n_breasts - pos)

    def auc(self, image_label: np.ndarray, breast_label: np.ndarray) -> float:
        rate = np.bincount(self.codes, weights=image_label, minlength=self.k) / self.n_level
        pos = np.bincount(self.of_breast, weights=breast_label, minlength=len(self.patterns))
        return self._auc(rate, pos)

    def null(self, permuted: list[np.ndarray]) -> list[float]:
        """The AUC under each permutation (``permuted``: the positive breasts' indices of each)."""
        n = len(self.patterns)
        pos = np.stack([np.bincount(self.of_breast[p], minlength=n) for p in permuted]).astype(float)
        rates = pos @ self.patterns / self.n_level
        return [self._auc(rate, p) for rate, p in zip(rates, pos)]


def _as_row(positives: np.ndarray, n_breasts: int) -> np.ndarray:
    """0/1 breast labels from the positive breasts' indices."""
    row = np.zeros(n_breasts)
    row[positives] = 1.0
    return row


def _better_direction(auc: float) -> float:
    return 0.5 + abs(auc - 0.5)


def _auc_with_null(
    codes: np.ndarray,
    y: np.ndarray,
    breast: np.ndarray,
    breast_label: np.ndarray,
    *,
    permuted: list[np.ndarray],
    folds: Callable[[], list[tuple[np.ndarray, np.ndarray]]],
) -> tuple[float, float, float, str]:
    """(AUC, null 2.5%, null 97.5%, method) of one column's level codes.

    ``permuted``: the positive breasts' indices under each permutation of the breast labels (indices, not
    0/1 rows: at a million images a few thousand positives per permutation, not half a million floats).
    """
    if len(np.unique(codes)) <= MAX_IN_SAMPLE_LEVELS:
        scorer = _InSample(codes, breast, len(breast_label))
        auc = scorer.auc(y, breast_label.astype(float))
        null = scorer.null(permuted)
        method = IN_SAMPLE
    else:
        fold_list = folds()
        if not fold_list:
            return float("nan"), float("nan"), float("nan"), ""
        auc = _better_direction(column_auc(codes, y, breast, fold_list))
        null = [
            _better_direction(column_auc(codes, _as_row(p, len(breast_label))[breast], breast, fold_list))
            for p in permuted
        ]
        method = OUT_OF_FOLD
    low, high = np.nanpercentile(null, [2.5, 97.5])
    return float(auc), float(low), float(high), method


def _patient_folds(
    groups: pd.Series, label: np.ndarray, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row positions of N_FOLDS folds under the one folds policy (cohort.folds); none when the
    cohort has too few women or positive women for it (out-of-fold AUCs are then left empty, with a warning)."""
    try:
        fold = patient_folds(groups, label, N_FOLDS, seed)
    except MammoInsightError as exc:
        log.warning("leakage audit: no out-of-fold AUC for many-level columns: %s", exc)
        return []
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(N_FOLDS)]


def _one_class_state(recorded: np.ndarray, breast: np.ndarray, breast_label: np.ndarray) -> str:
    """Why the column's recording depends on the label ('' when it does not), at breast level.

    A breast counts as recorded when one of its images is. One class with none of a state (recorded or
    missing) that the other class shows in a share q of its n breasts has chance (1 - q)^n under independence.
    """
    rec = np.bincount(breast, weights=recorded.astype(float), minlength=len(breast_label)) > 0
    classes = {"cancers": breast_label, "non-cancers": ~breast_label}
    for state, flags in (("recorded", rec), ("missing", ~rec)):
        for name, members in classes.items():
            other_name = "non-cancers" if name == "cancers" else "cancers"
            other = classes[other_name]
            n_here, n_other = int(members.sum()), int(other.sum())
            k_here, k_other = int(flags[members].sum()), int(flags[other].sum())
            if k_here or not n_here or not k_other:
                continue
            chance = (1 - k_other / n_other) ** n_here
            if chance < ZERO_CELL_P:
                return (
                    f"{state} only for {other_name} ({k_other:,} of {n_other:,} {other_name}, "
                    f"0 of {n_here:,} {name}; chance under no association {chance:.1g})"
                )
    return ""


def _exclusive_values(values: pd.Series, y: np.ndarray) -> str:
    """Why the recorded values depend on the label ('' when they do not): one class's values unseen in the other."""
    level_codes, levels = pd.factorize(values)  # each level formatted once, not each of a million cells
    recorded = level_codes >= 0
    if not recorded.any() or len(levels) > MAX_LEVELS_AS_IS:
        return ""
    text_codes, texts = pd.factorize(
        np.array([f"{v:g}" if isinstance(v, float) else str(v) for v in levels], dtype=object)
    )  # levels alike as text (1 and 1.0) are one
    codes = text_codes[level_codes[recorded]]
    positive = y[recorded] == 1
    for name, members, other_name in (
        ("cancers", positive, "non-cancers"),
        ("non-cancers", ~positive, "cancers"),
    ):
        if members.sum() < MIN_CLASS_N:
            continue
        seen_other = np.bincount(codes[~members], minlength=len(texts)) > 0
        exclusive = ~seen_other[codes[members]]
        if exclusive.mean() >= EXCLUSIVE_SHARE:
            levels = sorted(texts[np.unique(codes[members][exclusive])])
            shown = ", ".join(levels[:4]) + (" ..." if len(levels) > 4 else "")
            return (
                f"values recorded for {name} never occur among {other_name} ({int(exclusive.sum()):,} of "
                f"{int(members.sum()):,} recorded images of {name}: {shown})"
            )
    return ""


def audited_columns(table: pd.DataFrame, label: str = "cancer") -> list[str]:
    """Every column but the label, identifiers and file paths."""
    return [c for c in table.columns if c != label and c not in NOT_AUDITED]


def audit_leakage(
    table: pd.DataFrame,
    label: str = "cancer",
    *,
    post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS),
    seed: int = 0,
) -> pd.DataFrame:
    """One row per audited column (``audited = 'values'``) and per partly recorded column's missingness
    indicator (``'missingness'``): AUC alone with its permutation null and method, verdict ('leaky' or 'ok')
    and the reason for a leaky verdict.

    Post-outcome columns (``post_outcome``: the cohort's declaration, Cohort.post_outcome; the canonical
    ones by default) are never available at screening and always leaky. Entirely empty columns get no AUC.
    """
    known = table[table[label].notna()].reset_index(drop=True)
    y = known[label].to_numpy(dtype=float)
    groups = known["patient_id"] if "patient_id" in known.columns else pd.Series(np.arange(len(known)))
    breast = pd.factorize(known["breast_id"] if "breast_id" in known.columns else groups)[0]
    breast_label = np.bincount(breast, weights=y) > 0 if len(y) else np.array([], dtype=bool)
    both_classes = bool(len(y)) and 0 < breast_label.sum() < len(breast_label)
    rng = np.random.default_rng(seed)
    permuted = (
        [np.flatnonzero(rng.permutation(breast_label)) for _ in range(N_PERMUTATIONS)] if both_classes else []
    )
    folds = cache(lambda: _patient_folds(groups, y))  # only many-level columns need them
    rows = []

    def audit(column: str, codes: np.ndarray, *, audited: str, reasons: list[str]) -> dict:
        available = column not in post_outcome
        auc = low = high = float("nan")
        method = ""
        if both_classes and len(np.unique(codes)) > 1:
            auc, low, high, method = _auc_with_null(
                codes, y, breast, breast_label, permuted=permuted, folds=folds
            )
        if not available:
            reasons = ["decided after the outcome (declared by the dataset)", *reasons]
        if not np.isnan(auc) and auc >= LEAKY_AUC and not auc <= high:
            reasons.append(f"predicts the label alone with AUC {auc:.3f} (>= {LEAKY_AUC})")
        return {
            "column": column,
            "audited": audited,
            "available_at_screening": available,
            "auc_alone": auc,
            "null_low": low,
            "null_high": high,
            "auc_method": method,
            "verdict": "leaky" if reasons else "ok",
            "reason": "; ".join(reasons),
        }

    for col in audited_columns(table, label):
        values = known[col]
        recorded = values.notna().to_numpy()
        value_reasons = [r for r in [_exclusive_values(values, y)] if r] if both_classes else []
        value_row = audit(col, _level_codes(values), audited=VALUES, reasons=value_reasons)
        rows.append(value_row)
        if 0 < recorded.sum() < len(recorded):
            state = _one_class_state(recorded, breast, breast_label) if both_classes else ""
            miss_row = audit(
                col, (~recorded).astype(np.int64), audited=MISSINGNESS, reasons=[state] if state else []
            )
            rows.append(miss_row)
            if miss_row["verdict"] == "leaky" and col not in post_outcome:
                value_row["verdict"] = "leaky"
                why = miss_row["reason"].split("; ")[0]
                value_row["reason"] = "; ".join(
                    r for r in [value_row["reason"], f"its missingness encodes the label: {why}"] if r
                )
        log.debug("leakage %s: auc %.3f, %s", col, value_row["auc_alone"], value_row["verdict"])
    return pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)


def leaky_columns(
    table: pd.DataFrame, label: str = "cancer", *, post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS)
) -> list[str]:
    """The columns later stages exclude by default (post-outcome, label-conditional, or implausibly predictive)."""
    audit = audit_leakage(table, label, post_outcome=post_outcome)
    return list(dict.fromkeys(audit.loc[audit["verdict"] == "leaky", "column"]))
