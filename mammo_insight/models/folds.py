"""Patient-grouped stratified k-fold, with rows that may never be validated on kept out of validation.

Rows flagged as augmented copies or external-only samples (any truthy column in
``TRAIN_ONLY_COLUMNS``) are never in a validation fold. They take their patient's fold when that
patient also has ordinary rows, so they are also left out of training in the fold that validates
on that patient (an augmented copy of a validation image is a leak too); otherwise fold -1: they
train in every fold and are validated in none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from mammo_insight.errors import MammoInsightError

TRAIN_ONLY_COLUMNS = ("is_augmented", "external_only")


def train_only_mask(table: pd.DataFrame) -> pd.Series:
    """True for rows that may train but never validate or test."""
    mask = pd.Series(False, index=table.index)
    for column in TRAIN_ONLY_COLUMNS:
        if column in table:
            mask |= table[column].fillna(False).astype(bool)
    return mask


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int, label_column: str = "cancer") -> pd.Series:
    """Fold number per row (0..k-1, or -1 for train-only rows of train-only patients).

    Stratified on the patient's label (positive when any of their rows is), grouped by patient.
    """
    train_only = train_only_mask(table)
    eligible = table[~train_only]
    patients = eligible.groupby("patient_id")[label_column].max().fillna(0)
    if len(patients) < n_folds:
        raise MammoInsightError(f"{len(patients)} patient(s) with validatable images: too few for {n_folds} folds")
    n_pos = int((patients > 0).sum())
    if 0 < n_pos < n_folds:
        raise MammoInsightError(f"only {n_pos} positive patient(s): too few for {n_folds} stratified folds")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    ids = patients.index.to_numpy()
    fold_of = {}
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(ids)), (patients > 0).astype(int), groups=ids)):
        fold_of.update(dict.fromkeys(ids[val], k))
    return table["patient_id"].map(fold_of).fillna(-1).astype(int).rename("fold")


def fold_split(table: pd.DataFrame, folds: pd.Series, fold: int) -> tuple[pd.Index, pd.Index]:
    """(train index, validation index) of one fold; train-only rows never validate."""
    train_only = train_only_mask(table)
    val = table.index[(folds == fold) & ~train_only]
    train = table.index[folds != fold]
    return train, val
