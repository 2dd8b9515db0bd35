"""The one folds policy (cohort.folds) and the stages that use it: train, fuse-train, the leakage audit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_insight.cohort.folds import POLICY, assign_folds, folds_record, patient_folds
from mammo_insight.errors import MammoInsightError
from mammo_insight.fusion import lgbm
from mammo_insight.stats import leakage


def _women(n: int, n_pos: int, images: int = 2) -> tuple[np.ndarray, np.ndarray]:
    patient = np.repeat([f"W{i:03d}" for i in range(n)], images)
    label = np.repeat([1.0 if i < n_pos else 0.0 for i in range(n)], images)
    return patient, label


def test_every_fold_is_patient_grouped_and_holds_its_share_of_positive_women() -> None:
    patient, label = _women(103, 21, images=3)
    fold = patient_folds(patient, label, 5, seed=4)
    frame = pd.DataFrame({"patient_id": patient, "label": label, "fold": fold})
    assert (frame.groupby("patient_id")["fold"].nunique() == 1).all()
    women = frame.groupby("patient_id").agg(fold=("fold", "first"), label=("label", "max"))
    assert sorted(women.groupby("fold")["label"].sum()) == [4, 4, 4, 4, 5]
    assert women.groupby("fold").size().between(20, 21).all()
    np.testing.assert_array_equal(patient_folds(patient, label, 5, seed=4), fold)  # seeded


@pytest.mark.parametrize(
    ("n", "n_pos", "match"),
    [(4, 2, "4 woman/women .* too few for 5"), (40, 3, "only 3 positive woman/women \\(of 40\\)")],
)
def test_too_few_women_or_positive_women_is_an_error_naming_the_counts(n, n_pos, match) -> None:
    patient, label = _women(n, n_pos)
    with pytest.raises(MammoInsightError, match=match):
        patient_folds(patient, label, 5, seed=0)


def test_fusion_no_longer_lowers_k_silently() -> None:
    patient, label = _women(40, 3)
    with pytest.raises(MammoInsightError, match="only 3 positive"):
        lgbm.grouped_folds(label.astype(int), patient, 5, seed=0)
    patient, label = _women(40, 10)
    np.testing.assert_array_equal(
        lgbm.grouped_folds(label.astype(int), patient, 5, 0), patient_folds(patient, label, 5, 0)
    )


def test_train_folds_and_fusion_folds_are_the_same_policy() -> None:
    patient, label = _women(60, 12)
    table = pd.DataFrame({"patient_id": patient, "cancer": label})
    np.testing.assert_array_equal(
        assign_folds(table, 5, seed=2).to_numpy(), lgbm.grouped_folds(label.astype(int), patient, 5, seed=2)
    )


def test_folds_record_counts_women_and_positive_women_per_fold() -> None:
    patient, label = _women(30, 10)
    fold = patient_folds(patient, label, 3, seed=1)
    fold[:2] = -1  # one train-only woman (her two rows)
    record = folds_record(patient, label, fold, seed=1)
    assert record["k"] == 3 and record["seed"] == 1 and record["policy"] == POLICY
    assert sum(f["patients"] for f in record["per_fold"]) == 29 and record["train_only_patients"] == 1
    assert sum(f["positive_patients"] for f in record["per_fold"]) == 9
    assert [f["fold"] for f in record["per_fold"]] == [0, 1, 2]


def test_leakage_audit_uses_the_policy_and_leaves_aucs_empty_when_too_small(caplog) -> None:
    patient, label = _women(50, 10)
    groups = pd.Series(patient)
    folds = leakage._patient_folds(groups, label)
    expected = patient_folds(patient, label, leakage.N_FOLDS, 0)
    for f, (train, test) in enumerate(folds):
        np.testing.assert_array_equal(test, np.flatnonzero(expected == f))
        assert label[test].sum() > 0 and not set(patient[train]) & set(patient[test])
    # a many-level categorical column (scored out of fold) with fewer positive women than folds
    n = 20
    few = pd.DataFrame({"patient_id": [f"W{i}" for i in range(n)], "cancer": [1.0] * 3 + [0.0] * (n - 3)})
    audit = leakage.audit_leakage(few.assign(machine_id=[f"M{i % (n - 2)}" for i in range(n)]))
    assert audit["auc_alone"].isna().all() and "no out-of-fold AUC" in caplog.text


def test_the_fast_split_is_sklearns_stratified_group_k_fold_exactly() -> None:
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    from mammo_insight.cohort.folds import stratified_group_folds

    rng = np.random.default_rng(5)
    for trial in range(40):
        n, k = int(rng.integers(10, 300)), int(rng.integers(2, 8))
        y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int) if trial % 4 else rng.integers(0, 3, n)
        if np.bincount(y).min() < k:
            continue
        expected = np.empty(n, dtype=int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits = StratifiedGroupKFold(k, shuffle=True, random_state=trial).split(
                np.zeros(n), y, np.arange(n)
            )
            for f, (_, test) in enumerate(splits):
                expected[test] = f
        np.testing.assert_array_equal(stratified_group_folds(y, k, trial), expected)
