"""The attention-MIL head over tile features: finds a planted instance the mean hides, out-of-fold by construction."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
sys.path.insert(0, str(ANALYSES))  # the study's own module lives beside its script
from tile_mil import MilRecipe, fit_attention_mil, out_of_fold_scores, score_bags

pytestmark = pytest.mark.slow  # each test trains heads

DIM = 6


def _bags(n: int = 120, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, list[int | None]]:
    """(bags, labels, index of the planted instance): a bag is positive iff one of its 40-80 standard normal
    instances comes from a distribution shifted by 6 along feature 0; the bag's mean moves by about 0.1,
    inside its noise (like one lesion tile among a breast's tissue tiles)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(float)
    bags, planted = [], []
    for label in labels:
        bag = rng.normal(size=(int(rng.integers(40, 81)), DIM))
        where = None
        if label:
            where = int(rng.integers(len(bag)))
            bag[where, 0] += 6.0
        bags.append(bag.astype(np.float32))
        planted.append(where)
    return bags, labels, planted


def test_head_finds_the_planted_instance_the_mean_hides() -> None:
    bags, labels, planted = _bags(120)
    folds = np.arange(len(bags)) % 2
    scores = out_of_fold_scores(lambda k: bags, labels, folds)
    assert roc_auc_score(labels, scores["attention_mil"]) > 0.9
    assert roc_auc_score(labels, scores["mean_logistic"]) < 0.65

    train = folds == 0
    head = fit_attention_mil([b for b, t in zip(bags, train, strict=True) if t], labels[train])
    held_positive = [i for i in np.flatnonzero(~train) if planted[i] is not None]
    with torch.no_grad():
        weight_on_planted = [
            float(head.weights(torch.from_numpy(bags[i]))[planted[i]]) for i in held_positive
        ]
    share_if_uniform = np.mean([1 / len(bags[i]) for i in held_positive])
    assert np.mean(weight_on_planted) > 0.5 > 4 * share_if_uniform


def test_fold_k_scores_come_from_fold_k_bags_and_other_folds_labels() -> None:
    bags, labels, _ = _bags(60)
    folds = np.arange(len(bags)) % 4
    recipe = MilRecipe(epochs=5)
    calls: list[int] = []

    def bags_of_fold(k: int) -> list[np.ndarray]:
        calls.append(k)
        return [b + 0.1 * k for b in bags]  # each fold's model gives its own features

    before = out_of_fold_scores(bags_of_fold, labels, folds, recipe)
    assert sorted(calls) == [0, 1, 2, 3]
    flipped = labels.copy()
    flipped[folds == 2] = 1 - flipped[folds == 2]
    after = out_of_fold_scores(bags_of_fold, flipped, folds, recipe)
    for name in ("attention_mil", "mean_logistic"):
        assert np.array_equal(before[name][folds == 2], after[name][folds == 2])
        assert not np.allclose(before[name][folds != 2], after[name][folds != 2])

    def fold_3_changes(k: int) -> list[np.ndarray]:
        return [(b[:, ::-1] if k == 3 else b) + 0.1 * k for b in bags]

    other_bags = out_of_fold_scores(fold_3_changes, labels, folds, recipe)
    assert np.array_equal(other_bags["attention_mil"][folds == 2], before["attention_mil"][folds == 2])
    assert not np.allclose(other_bags["attention_mil"][folds == 3], before["attention_mil"][folds == 3])


def test_same_seed_same_scores_other_seed_other_scores() -> None:
    bags, labels, _ = _bags(30)
    first = score_bags(fit_attention_mil(bags, labels, MilRecipe(epochs=3, seed=1)), bags)
    again = score_bags(fit_attention_mil(bags, labels, MilRecipe(epochs=3, seed=1)), bags)
    other = score_bags(fit_attention_mil(bags, labels, MilRecipe(epochs=3, seed=2)), bags)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
