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
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from mammo_insight.cohort.folds import patient_folds
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.errors import MammoInsightError
from mammo_insight.stats.exact_odds import conditional_odds_ratio
from mammo_insight.stats.oof_auc import auc_with_null

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
    return conditional_odds_ratio(table)


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


@dataclass
class _Labelled:
    """The audit's labelled rows at breast level, shared by every column's AUC and odds ratio."""

    known: pd.DataFrame  # the rows with a label
    y: np.ndarray  # each labelled image's label
    groups: pd.Series  # each labelled image's woman (the folds' groups)
    breast: np.ndarray  # each labelled image's breast, 0 .. n_breasts - 1
    breast_label: np.ndarray  # each breast's label (positive if any of its images is)
    both_classes: bool
    labels: np.ndarray | None  # breasts x (the labels, then N_PERMUTATIONS permutations); None with one class
    post_outcome: Sequence[str]

    @cached_property
    def fold(self) -> np.ndarray | None:
        """Each breast's fold, computed on the first column that needs an out-of-fold AUC."""
        return _breast_fold(self.groups, self.y, self.breast, len(self.breast_label))


def _labelled(table: pd.DataFrame, label: str, post_outcome: Sequence[str], seed: int) -> _Labelled:
    """The rows of ``table`` with a label, grouped into breasts and women, with ``seed``'s label permutations."""
    known = table[table[label].notna()].reset_index(drop=True)
    y = known[label].to_numpy(dtype=float)
    groups = known["patient_id"] if "patient_id" in known.columns else pd.Series(np.arange(len(known)))
    breast = pd.factorize(known["breast_id"] if "breast_id" in known.columns else groups)[0]
    breast_label = np.bincount(breast, weights=y) > 0 if len(y) else np.array([], dtype=bool)
    both_classes = bool(len(y)) and 0 < breast_label.sum() < len(breast_label)
    labels = None
    if both_classes:
        rng = np.random.default_rng(seed)
        rows = np.empty((N_PERMUTATIONS + 1, len(breast_label)), dtype=bool)  # one label vector per row
        rows[0] = breast_label
        for i in range(1, N_PERMUTATIONS + 1):
            rows[i] = rng.permutation(breast_label)
        # breasts x vectors, float32: counts of 0/1 labels stay exact, at half the memory of float64
        labels = np.ascontiguousarray(rows.T).astype(np.float32)
    return _Labelled(known, y, groups, breast, breast_label, both_classes, labels, post_outcome)


def _audit_row(
    data: _Labelled, column: str, codes: np.ndarray, *, audited: str, reasons: list[str], grade: str
) -> dict:
    """One row of the audit: the AUC alone of ``codes`` with its band, graded together with ``grade``
    (from the data's other checks, ``reasons`` saying why); a post-outcome column is leaky whatever they say."""
    available = column not in data.post_outcome
    auc = low = high = float("nan")
    if data.labels is not None and len(np.unique(codes)) > 1 and data.fold is not None:
        auc, low, high = auc_with_null(codes, data.breast, data.labels, data.fold)
    by_auc = _auc_grade(auc, high, known=column in KNOWN_BEFORE_OUTCOME and audited == VALUES)
    if by_auc != OK:
        bar = LEAKY_AUC if by_auc == LEAKY else SUSPECT_AUC
        reasons.append(f"predicts the label alone with out-of-fold AUC {auc:.3f} (>= {bar}, above chance)")
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


def _audit_column(data: _Labelled, col: str) -> list[dict]:
    """The rows of one column: its values, and its missingness indicator when it is partly recorded (whose
    verdict the column takes when worse, since a model reads an empty cell as a value)."""
    values = data.known[col]
    recorded = values.notna().to_numpy()
    value_reasons = [r for r in [_exclusive_values(values, data.y)] if r] if data.both_classes else []
    value_row = _audit_row(
        data,
        col,
        _level_codes(values),
        audited=VALUES,
        reasons=value_reasons,
        grade=LEAKY if value_reasons else OK,
    )
    rows = [value_row]
    if 0 < recorded.sum() < len(recorded):
        breast, breast_label = data.breast, data.breast_label
        odds = missing_odds_ratio(recorded, breast, breast_label) if data.both_classes else (np.nan,) * 3
        grade = _or_grade(*odds)
        why = [_missing_reason(recorded, breast, breast_label, *odds)] if grade != OK else []
        miss_row = _audit_row(
            data, col, (~recorded).astype(np.int64), audited=MISSINGNESS, reasons=why, grade=grade
        )
        miss_row.update(missing_or=odds[0], or_low=odds[1], or_high=odds[2])
        rows.append(miss_row)
        if miss_row["verdict"] != OK and col not in data.post_outcome:
            value_row["verdict"] = _worse(value_row["verdict"], miss_row["verdict"])
            value_row["reason"] = "; ".join(
                r
                for r in [value_row["reason"], f"its missingness encodes the label: {miss_row['reason']}"]
                if r
            )
    log.debug("leakage %s: auc %.3f, %s", col, value_row["auc_alone"], value_row["verdict"])
    return rows


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
    data = _labelled(table, label, post_outcome, seed)
    rows = [row for col in audited_columns(table, label) for row in _audit_column(data, col)]
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
