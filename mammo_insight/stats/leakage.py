"""Leakage audit: which columns are known at screening time, and how well each alone predicts the label.

Two layers decide that a column leaks. The first is knowledge: the cohort's ``post_outcome`` list, which
its adapter declares (RSNA's BIRADS, biopsy, invasive, difficult_negative_case; CMMD's classification,
subtype, abnormality ...), is leaky by definition, whatever the data say. The second is a graded check of
the data, for the columns nobody declared, from an effect size and its uncertainty, never from one cell:

- label-conditional recording: the odds ratio of a breast's column being missing, cancers against
  non-cancers, with its exact conditional 95 % interval (Fisher's; finite and valid with a zero cell, so
  one record cannot switch the verdict). ``leaky`` when the whole interval lies beyond ``LEAK_OR`` (or
  below its inverse), ``suspect`` when it excludes 1 and the estimate lies beyond ``SUSPECT_OR``;
- label-exclusive values: at least ``EXCLUSIVE_SHARE`` of one class's recorded images hold values that
  never occur in the other class (``leaky``);
- the column's AUC alone against its own permutation band: ``leaky`` at ``LEAKY_AUC`` or more,
  ``suspect`` at ``SUSPECT_AUC`` or more (no screening-time factor of a screening cohort comes near:
  RSNA's age scores about 0.6), in both cases only above the band. The suspect bar is not applied to the
  canonical columns known before any outcome (``KNOWN_BEFORE_OUTCOME``: age, view ...), whose strength
  is a finding (age ranks biopsied masses at about 0.75).

The missingness indicator of every partly recorded column is audited like a column (a row with
``audited = 'missingness'``); the column takes its indicator's verdict when that is worse, since a model
reads an empty cell as a value. :func:`flagged_columns` lists what later stages leave out (leaky and
suspect alike, each with its reason).

The AUC alone is out of fold for every column: each column is turned into levels (deciles for a
continuous column, "missing" as a level of its own); in each of ``N_FOLDS`` patient-grouped folds (the
one folds policy) the levels' cancer rates are counted among the other folds' women, each held-out image
scored by its level's rate and a breast by its images' mean, and the AUC counts the pairs of a cancer and
a non-cancer of the same held-out fold. The rates never see the labels they score, so a column without
information centres on 0.5, in either direction. ``null_low``-``null_high`` is the central 95 % of the
same statistic over ``N_PERMUTATIONS`` permutations of the breast labels: an AUC inside it is what
chance gives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats.contingency import odds_ratio

from mammo_insight.cohort.folds import patient_folds
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.errors import MammoInsightError

log = logging.getLogger(__name__)

# Identifiers and file locations are not metadata: they are never model inputs (study_id, accession_id and
# file: the hashed study ids and relative paths of a DICOM tree, cohort.adapters.dicom).
NOT_AUDITED = ["patient_id", "image_id", "breast_id", "image_path", "study_id", "accession_id", "file"]
LEAKY_AUC = 0.9
SUSPECT_AUC = 0.7
LEAK_OR = 5.0  # missingness odds ratio whose whole interval lies beyond this (or below 1/this): leaky
SUSPECT_OR = 2.0  # ... whose interval excludes 1 and estimate lies beyond this: suspect
N_FOLDS = 5
MAX_LEVELS_AS_IS = 20  # a numeric column with more distinct values is cut into deciles
PRIOR_WEIGHT = 10.0  # pseudo-count pulling rare levels toward the overall rate (out-of-fold scoring)
N_PERMUTATIONS = 200
ZERO_CELL_P = 1e-3
EXCLUSIVE_SHARE = 0.9
MIN_CLASS_N = 10  # a class with fewer recorded images is too small for the label-exclusive-values check
OUT_OF_FOLD = "out-of-fold level rates, pairs within held-out folds"
LEAKY, SUSPECT, OK = "leaky", "suspect", "ok"
# canonical columns known before any outcome (a woman's age, the film's view ...): a strong AUC of theirs is a
# finding (age predicts malignancy among biopsied lesions at about 0.75), not a sign of a proxy, so only the
# leaky bar, the recording and the exclusive-values checks apply to them
KNOWN_BEFORE_OUTCOME = ("age", "laterality", "view", "density", "site_id", "machine_id", "implant")
SEVERITY = {OK: 0, SUSPECT: 1, LEAKY: 2}
VALUES, MISSINGNESS = "values", "missingness"
LEAKAGE_COLUMNS = [
    "column",
    "audited",
    "available_at_screening",
    "auc_alone",
    "null_low",
    "null_high",
    "auc_method",
    "missing_or",
    "or_low",
    "or_high",
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


def _auc_parts(score: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(concordant pair weight, all pair weight) per row, for groups of breasts sharing one score (columns;
    ties count one half), from the groups' positive and negative counts. Rows are scored at once."""
    n_rows, m = score.shape
    order = np.argsort(score, axis=1, kind="stable")
    s = np.take_along_axis(score, order, 1)
    new = np.ones(s.shape, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    tie_group = (np.cumsum(new, axis=1) - 1 + np.arange(n_rows)[:, None] * m).ravel()
    pos_g, neg_g = (
        np.bincount(tie_group, np.take_along_axis(w, order, 1).ravel(), n_rows * m).reshape(n_rows, m)
        for w in (pos, neg)
    )
    below = np.cumsum(neg_g, axis=1) - neg_g
    return (pos_g * (below + 0.5 * neg_g)).sum(axis=1), pos_g.sum(axis=1) * neg_g.sum(axis=1)


class _OutOfFold:
    """Out-of-fold AUC of one column, for the real labels and every permutation at once.

    In each fold the levels' cancer rates are counted among the other folds' women (shrunk toward their
    overall rate by ``PRIOR_WEIGHT`` pseudo-images), each held-out breast scored by its images' mean rate,
    and the AUC counts the pairs of a cancer and a non-cancer of the same held-out fold. Pooling the
    folds' scores instead would pull an uninformative column below 0.5 (a held-out cancer lowers its own
    level's rate in the other folds). Breasts whose images hold the same count of each level ('patterns')
    share a score, so the work is per pattern, not per breast.
    """

    def __init__(self, codes: np.ndarray, breast: np.ndarray, n_breasts: int, fold: np.ndarray) -> None:
        k = int(codes.max()) + 1
        counts = np.bincount(breast * k + codes, minlength=n_breasts * k).reshape(n_breasts, k)
        dims = counts.max(axis=0) + 1
        if np.prod(dims.astype(float)) < 2**62:  # one integer per row: hashing beats sorting rows
            of_breast = pd.factorize(np.ravel_multi_index(counts.T, dims))[0]
            patterns = counts[np.unique(of_breast, return_index=True)[1]]
        else:
            patterns, of_breast = np.unique(counts, axis=0, return_inverse=True)
            of_breast = of_breast.ravel()
        n_pat = len(patterns)
        self.patterns = patterns.astype(float)
        self.n_images = np.maximum(self.patterns.sum(axis=1), 1.0)
        # pattern x breast, one sparse matrix per side of each fold: times the labels, positives per pattern
        self.sides = []
        for f in np.unique(fold):
            side = []
            for members in (fold != f, fold == f):
                rows, cols = of_breast[members], np.flatnonzero(members)
                side.append(sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), (n_pat, n_breasts)))
            self.sides.append(tuple(side))

    def aucs(self, labels: np.ndarray) -> np.ndarray:
        """AUC per column of ``labels`` (breasts x label vectors, 0/1, C-ordered float)."""
        num, den = np.zeros(labels.shape[1]), np.zeros(labels.shape[1])
        for to_train, to_test in self.sides:
            n_tr = np.asarray(to_train.sum(axis=1)).ravel()
            n_te = np.asarray(to_test.sum(axis=1)).ravel()
            present = np.flatnonzero(n_te)
            if not present.size:
                continue
            pos_img = (to_train @ labels).T @ self.patterns  # positive images per level, per label vector
            all_img = n_tr @ self.patterns
            prior = pos_img.sum(axis=1, keepdims=True) / max(all_img.sum(), 1.0)
            rate = (pos_img + PRIOR_WEIGHT * prior) / (all_img + PRIOR_WEIGHT)
            # rounded: breasts of one level mix (1 of A, 2 of A ...) tie exactly, not an ulp apart
            score = np.round((rate @ self.patterns[present].T) / self.n_images[present], 12)
            pos_te = (to_test @ labels).T[:, present]
            a, b = _auc_parts(score, pos_te, n_te[present] - pos_te)
            num += a
            den += b
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den


def _auc_with_null(
    codes: np.ndarray, breast: np.ndarray, labels: np.ndarray, fold: np.ndarray
) -> tuple[float, float, float]:
    """(out-of-fold AUC, null 2.5 %, null 97.5 %) of one column's level codes.

    ``labels``: breasts x (the breast labels, then their permutations), C-ordered; ``fold`` per breast.
    """
    aucs = _OutOfFold(codes, breast, labels.shape[0], fold).aucs(labels)
    low, high = np.nanpercentile(aucs[1:], [2.5, 97.5]) if len(aucs) > 1 else (np.nan, np.nan)
    return float(aucs[0]), float(low), float(high)


def missing_odds_ratio(
    recorded: np.ndarray, breast: np.ndarray, breast_label: np.ndarray
) -> tuple[float, float, float]:
    """(odds ratio of a breast's column being missing, cancers against non-cancers, exact 95 % interval).

    A breast counts as recorded when one of its images is. The conditional (Fisher) estimate and interval
    stay defined with a zero cell (the estimate is then 0 or infinite, the interval finite on one side).
    """
    rec = np.bincount(breast, weights=recorded.astype(float), minlength=len(breast_label)) > 0
    table = [
        [int((~rec & breast_label).sum()), int((rec & breast_label).sum())],
        [int((~rec & ~breast_label).sum()), int((rec & ~breast_label).sum())],
    ]
    if min(sum(table[0]), sum(table[1]), table[0][0] + table[1][0], table[0][1] + table[1][1]) == 0:
        return float("nan"), float("nan"), float("nan")
    result = odds_ratio(table, kind="conditional")
    ci = result.confidence_interval(0.95)
    return float(result.statistic), float(ci.low), float(ci.high)


def _or_grade(estimate: float, low: float, high: float) -> str:
    """leaky / suspect / ok from a missingness odds ratio and its interval (see the module docstring)."""
    if np.isnan(estimate) or np.isnan(low) or np.isnan(high):
        return OK
    if low > LEAK_OR or high < 1 / LEAK_OR:
        return LEAKY
    if (low > 1 and estimate > SUSPECT_OR) or (high < 1 and estimate < 1 / SUSPECT_OR):
        return SUSPECT
    return OK


def _auc_grade(auc: float, high: float, known: bool = False) -> str:
    """leaky / suspect / ok from the AUC alone and its band's top; ``known``: a KNOWN_BEFORE_OUTCOME column."""
    if np.isnan(auc) or not auc > high:
        return OK
    return LEAKY if auc >= LEAKY_AUC else SUSPECT if auc >= SUSPECT_AUC and not known else OK


def _worse(a: str, b: str) -> str:
    return a if SEVERITY[a] >= SEVERITY[b] else b


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


def _breast_fold(groups: pd.Series, y: np.ndarray, breast: np.ndarray, n_breasts: int) -> np.ndarray | None:
    """Each breast's fold under the one folds policy (a woman's breasts share hers), None when too few women."""
    folds = _patient_folds(groups, y)
    if not folds:
        return None
    fold = np.empty(len(y), dtype=np.int64)
    for f, (_, test) in enumerate(folds):
        fold[test] = f
    out = np.zeros(n_breasts, dtype=np.int64)
    out[breast] = fold
    return out


def _missing_reason(recorded, breast, breast_label, estimate, low, high) -> str:
    rec = np.bincount(breast, weights=recorded.astype(float), minlength=len(breast_label)) > 0
    n_pos, n_neg = int(breast_label.sum()), int((~breast_label).sum())
    m_pos, m_neg = int((~rec & breast_label).sum()), int((~rec & ~breast_label).sum())
    zero = _one_class_state(recorded, breast, breast_label)
    return (
        f"missing for {m_pos:,} of {n_pos:,} cancers and {m_neg:,} of {n_neg:,} non-cancers (breasts): "
        f"odds ratio {estimate:.3g}, 95% exact interval {low:.3g}-{high:.3g}" + (f"; {zero}" if zero else "")
    )


def audit_leakage(
    table: pd.DataFrame,
    label: str = "cancer",
    *,
    post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS),
    seed: int = 0,
) -> pd.DataFrame:
    """One row per audited column (``audited = 'values'``) and per partly recorded column's missingness
    indicator (``'missingness'``): out-of-fold AUC alone with its permutation band, the missingness odds
    ratio with its exact interval, the verdict ('leaky', 'suspect' or 'ok') and the reason for a flag.

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
    labels = (
        np.column_stack([breast_label, *(rng.permutation(breast_label) for _ in range(N_PERMUTATIONS))])
        .astype(np.float64)
        .copy(order="C")
        if both_classes
        else None
    )
    fold = cache(lambda: _breast_fold(groups, y, breast, len(breast_label)))
    rows = []

    def audit(column: str, codes: np.ndarray, *, audited: str, reasons: list[str], grade: str) -> dict:
        available = column not in post_outcome
        auc = low = high = float("nan")
        if labels is not None and len(np.unique(codes)) > 1 and fold() is not None:
            auc, low, high = _auc_with_null(codes, breast, labels, fold())
        by_auc = _auc_grade(auc, high, known=column in KNOWN_BEFORE_OUTCOME and audited == VALUES)
        if by_auc != OK:
            bar = LEAKY_AUC if by_auc == LEAKY else SUSPECT_AUC
            reasons.append(
                f"predicts the label alone with out-of-fold AUC {auc:.3f} (>= {bar}, above chance)"
            )
        if not available:
            reasons = ["decided after the outcome (declared by the dataset)", *reasons]
            grade = LEAKY
        return {
            "column": column,
            "audited": audited,
            "available_at_screening": available,
            "auc_alone": auc,
            "null_low": low,
            "null_high": high,
            "auc_method": OUT_OF_FOLD if np.isfinite(auc) else "",
            "missing_or": float("nan"),
            "or_low": float("nan"),
            "or_high": float("nan"),
            "verdict": _worse(grade, by_auc),
            "reason": "; ".join(reasons),
        }

    for col in audited_columns(table, label):
        values = known[col]
        recorded = values.notna().to_numpy()
        value_reasons = [r for r in [_exclusive_values(values, y)] if r] if both_classes else []
        value_row = audit(
            col,
            _level_codes(values),
            audited=VALUES,
            reasons=value_reasons,
            grade=LEAKY if value_reasons else OK,
        )
        rows.append(value_row)
        if 0 < recorded.sum() < len(recorded):
            odds = missing_odds_ratio(recorded, breast, breast_label) if both_classes else (np.nan,) * 3
            grade = _or_grade(*odds)
            why = [_missing_reason(recorded, breast, breast_label, *odds)] if grade != OK else []
            miss_row = audit(col, (~recorded).astype(np.int64), audited=MISSINGNESS, reasons=why, grade=grade)
            miss_row.update(missing_or=odds[0], or_low=odds[1], or_high=odds[2])
            rows.append(miss_row)
            if miss_row["verdict"] != OK and col not in post_outcome:
                value_row["verdict"] = _worse(value_row["verdict"], miss_row["verdict"])
                value_row["reason"] = "; ".join(
                    r
                    for r in [
                        value_row["reason"],
                        f"its missingness encodes the label: {miss_row['reason']}",
                    ]
                    if r
                )
        log.debug("leakage %s: auc %.3f, %s", col, value_row["auc_alone"], value_row["verdict"])
    return pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)


def flagged_columns(leakage: pd.DataFrame) -> list[str]:
    """The columns of an audit that later stages leave out: leaky or suspect."""
    return list(dict.fromkeys(leakage.loc[leakage["verdict"].isin([LEAKY, SUSPECT]), "column"]))


def leaky_columns(
    table: pd.DataFrame, label: str = "cancer", *, post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS)
) -> list[str]:
    """The columns later stages exclude by default: post-outcome, recorded by label, or predicting it too well
    (leaky or suspect)."""
    return flagged_columns(audit_leakage(table, label, post_outcome=post_outcome))
