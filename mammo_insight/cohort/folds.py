"""Cross-validation folds: one policy for every stage (train, fuse-train, the leakage audit).

The policy (``POLICY``): folds are grouped by patient (a woman never sits on both sides of a split)
and stratified on the patient's label (positive when any of her rows is), drawn by scikit-learn's
``StratifiedGroupKFold(shuffle=True, random_state=seed)`` over one row per woman. Too few women, or
too few positive women, for k folds is a :class:`MammoInsightError` naming the counts: k is never
lowered behind the user's back.

Rows flagged as augmented copies or external-only samples (any truthy column in
``TRAIN_ONLY_COLUMNS``) are never in a validation fold (:func:`assign_folds`). They take their
patient's fold when that patient also has ordinary rows, so they are also left out of training in the
fold that validates on that patient (an augmented copy of a validation image is a leak too);
otherwise fold -1: they train in every fold and are validated in none.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.errors import MammoInsightError

TRAIN_ONLY_COLUMNS = ("is_augmented", "external_only")
POLICY = "patient-grouped, stratified on the patient's label (StratifiedGroupKFold, shuffled with the seed)"


TRUE_WORDS = {"true", "t", "yes", "y", "1", "1.0"}
FALSE_WORDS = {"false", "f", "no", "n", "0", "0.0"}


def flag_values(values: pd.Series, where: str, ids: pd.Series | None = None) -> pd.Series:
    """A train-only flag as booleans, missing = False: booleans, 0/1, or the words true/false, yes/no.

    A dataset's own table writes flags as text ("False" is a non-empty, truthy string), so text is read as
    words; anything else stops with `where` (the column and its file), the first such value and its row.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.fillna(False).astype(bool)
    text = values.astype("string").str.strip().str.lower()
    known = text.isna() | (text == "") | text.isin(TRUE_WORDS | FALSE_WORDS)
    if not known.all():
        row = int((~known).to_numpy().argmax())
        name = f"image {ids.iloc[row]}" if ids is not None else f"row {row + 1}"
        raise MammoInsightError(
            f"{where} holds {values.iloc[row]!r} ({name}; {int((~known).sum())} such row(s)): a train-only flag "
            "must be true/false, yes/no or 1/0 (empty = false)"
        )
    return text.isin(TRUE_WORDS).fillna(False).astype(bool)


def train_only_mask(table: pd.DataFrame) -> pd.Series:
    """True for rows that may train but never validate or test."""
    mask = pd.Series(False, index=table.index)
    ids = table.get("image_id")
    for column in TRAIN_ONLY_COLUMNS:
        if column in table:
            mask |= flag_values(table[column], f"column {column}", ids)
    return mask


def check_fold_counts(n_patients: int, n_positive: int, k: int) -> None:
    """The policy's one rule on sizes: at least k women, and k positive women when any is positive."""
    if k < 2:
        raise MammoInsightError(f"cross-validation needs at least 2 folds, got {k}")
    if n_patients < k:
        raise MammoInsightError(
            f"{n_patients} woman/women with validatable rows ({n_positive} positive): "
            f"too few for {k} patient-grouped folds"
        )
    if 0 < n_positive < k:
        raise MammoInsightError(
            f"only {n_positive} positive woman/women (of {n_patients}): too few for {k} "
            "folds stratified on the patient's label; use fewer folds"
        )


def patient_labels(patient_id: pd.Series | np.ndarray, label: pd.Series | np.ndarray) -> pd.Series:
    """1 per woman when any of her rows is positive, else 0 (unknown labels count as negative); sorted by id."""
    frame = pd.DataFrame({"patient_id": np.asarray(patient_id), "label": pd.to_numeric(np.asarray(label))})
    return (frame.groupby("patient_id")["label"].max().fillna(0) > 0).astype(int)


def patient_folds(
    patient_id: pd.Series | np.ndarray, label: pd.Series | np.ndarray, k: int, seed: int
) -> np.ndarray:
    """Fold number (0..k-1) per row under the one policy: every row of a woman in her fold."""
    patients = patient_labels(patient_id, label)
    check_fold_counts(len(patients), int(patients.sum()), k)
    folds = stratified_group_folds(patients.to_numpy(), k, seed)
    return folds[patients.index.get_indexer(np.asarray(patient_id))].astype(int)


def stratified_group_folds(group_label: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold per group (one label each), exactly as ``StratifiedGroupKFold(k, shuffle=True, random_state=seed)``
    splits one row per group with the groups in sorted order, in time linear in the groups.

    scikit-learn's greedy loop (shuffle the groups, take them by decreasing spread of their class counts,
    put each in the fold that keeps the class shares most even, ties to the smaller fold) scores each
    candidate fold with numpy calls on tiny arrays: 7 s for RSNA's 11,913 women, 36 s for 20 times as
    many. A group here holds one label, so adding it to a fold changes one class's column only: the
    other classes' spreads are kept, and the changed one is recomputed for the k candidates in plain
    floats, in the order numpy sums them, so the scores and the folds are identical (tested against
    sklearn).
    """
    rng = np.random.RandomState(seed)  # sklearn's check_random_state(seed) for an integer seed
    _, y_inv, y_cnt = np.unique(np.asarray(group_label), return_inverse=True, return_counts=True)
    n, n_classes = len(y_inv), len(y_cnt)
    perm = np.arange(n)
    rng.shuffle(perm)
    label_shuffled = y_inv[perm].tolist()
    inv_perm = np.empty_like(perm)
    inv_perm[perm] = np.arange(n)
    # sklearn orders groups by decreasing std of their class counts: the same for every one-label group
    counts = np.zeros((n, n_classes))
    counts[np.arange(n), y_inv[perm]] = 1
    order = np.argsort(-np.std(counts, axis=1), kind="stable").tolist()
    scale = [float(c) for c in y_cnt]
    per_fold = [[0.0] * k for _ in range(n_classes)]  # per class, the count in each fold
    spread = [0.0] * n_classes  # per class, the std over folds of count / class total
    sizes = [0.0] * k
    fold_of_shuffled = np.empty(n, dtype=int)
    for g in order:
        label = label_shuffled[g]
        column, total = per_fold[label], scale[label]
        if k < 8:
            scaled = [x / total for x in column]
            candidates = []
            for i in range(k):  # candidate i: the group added to fold i
                scaled_i = scaled.copy()
                scaled_i[i] = (column[i] + 1.0) / total
                changed = _std(scaled_i)
                summed = 0.0
                for c in range(n_classes):
                    summed += changed if c == label else spread[c]
                candidates.append(summed / n_classes)
        else:
            candidates = _scores_numpy(per_fold, label, y_cnt)
        best, min_eval, min_size = 0, math.inf, math.inf
        for i in range(
            k
        ):  # sklearn's tie-break in its order; np.isclose's test (finite once a fold is taken)
            if candidates[i] < min_eval or (
                abs(candidates[i] - min_eval) <= 1e-8 + 1e-5 * abs(min_eval) and sizes[i] < min_size
            ):
                best, min_eval, min_size = i, candidates[i], sizes[i]
        column[best] += 1.0
        sizes[best] += 1.0
        spread[label] = _std([x / total for x in column])
        fold_of_shuffled[g] = best
    return fold_of_shuffled[inv_perm]


def _std(values: list[float]) -> float:
    """numpy's std over the folds axis for fewer than 8 folds, in its order of operations (the same float)."""
    mean = 0.0
    for v in values:
        mean += v
    mean /= len(values)
    squares = 0.0
    for v in values:
        squares += (v - mean) * (v - mean)
    return math.sqrt(squares / len(values))


def _scores_numpy(per_fold: list[list[float]], label: int, y_cnt: np.ndarray) -> list[float]:
    """sklearn's score of each candidate fold, computed as sklearn does (numpy sums 8 or more folds pairwise)."""
    folds = np.array(per_fold).T  # folds x classes
    k = len(folds)
    added = np.zeros(len(y_cnt))
    added[label] = 1
    proposed = folds[None, :, :] + np.eye(k)[:, :, None] * added
    return np.mean(np.std(proposed / y_cnt.reshape(1, 1, -1), axis=1), axis=1).tolist()


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int, label_column: str = "cancer") -> pd.Series:
    """Fold number per row (0..k-1, or -1 for train-only rows of train-only patients)."""
    eligible = table[~train_only_mask(table)]
    folds = patient_folds(eligible["patient_id"], eligible[label_column], n_folds, seed)
    fold_of = dict(zip(eligible["patient_id"], folds, strict=True))
    return table["patient_id"].map(fold_of).fillna(-1).astype(int).rename("fold")


def fold_split(table: pd.DataFrame, folds: pd.Series, fold: int) -> tuple[pd.Index, pd.Index]:
    """(train index, validation index) of one fold; train-only rows never validate."""
    train_only = train_only_mask(table)
    val = table.index[(folds == fold) & ~train_only]
    train = table.index[folds != fold]
    return train, val


def folds_record(
    patient_id: pd.Series | np.ndarray,
    label: pd.Series | np.ndarray,
    fold: np.ndarray | pd.Series,
    *,
    seed: int | None,
    policy: str = POLICY,
) -> dict[str, Any]:
    """The folds actually used, for metrics.json: k, seed, policy, and women / positive women per fold.

    Rows with fold -1 (train-only) are counted apart as ``train_only_patients``.
    """
    frame = pd.DataFrame(
        {
            "patient_id": np.asarray(patient_id),
            "label": pd.to_numeric(np.asarray(label)),
            "fold": np.asarray(fold, dtype=int),
        }
    )
    per_fold = []
    for f, rows in frame[frame["fold"] >= 0].groupby("fold", sort=True):
        women = patient_labels(rows["patient_id"], rows["label"])
        per_fold.append({"fold": int(f), "patients": len(women), "positive_patients": int(women.sum())})
    record = {"k": len(per_fold), "seed": seed, "policy": policy, "per_fold": per_fold}
    train_only = frame.loc[frame["fold"] < 0, "patient_id"].nunique()
    if train_only:
        record["train_only_patients"] = int(train_only)
    return record


def fold_mismatch(a: pd.DataFrame, b: pd.DataFrame, *, names: tuple[str, str] = ("a", "b")) -> str | None:
    """The first image (by woman, then image id) scored in another fold, or in one table only; None when the
    two out-of-fold tables (image_id, patient_id, fold) validate every image in the same fold.

    Runs compared or averaged on out-of-fold predictions must share their folds: otherwise each image's two
    probabilities come from models that saw different women, and a paired test compares split luck.
    """
    keys = ["patient_id", "image_id"]
    merged = a[[*keys, "fold"]].merge(
        b[[*keys, "fold"]], on=keys, how="outer", suffixes=("_a", "_b"), indicator=True
    )
    merged = merged.astype({"patient_id": str, "image_id": str}).sort_values(keys, kind="stable")
    differ = merged[(merged["_merge"] != "both") | (merged["fold_a"] != merged["fold_b"])]
    if differ.empty:
        return None
    row = differ.iloc[0]

    def fold(value: Any) -> str:
        return "not scored" if pd.isna(value) else f"fold {int(value)}"

    return (
        f"woman {row['patient_id']}, image {row['image_id']}: {fold(row['fold_a'])} in {names[0]}, "
        f"{fold(row['fold_b'])} in {names[1]}"
    )
