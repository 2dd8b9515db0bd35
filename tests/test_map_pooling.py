"""The learned pooling of lesion maps: out-of-fold by construction, and better than the max where the max misleads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mammo_insight.runs.map_pooling import (
    MAP_STATISTICS,
    learned_film_scores,
    map_statistics,
    pooled_probability,
)


def _films(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Synthetic map statistics where the max is mostly noise and the mean over tissue carries the label.

    Like dense normal tissue: every film has a hot cell somewhere (max near 1 whatever the label), but a
    film with a lesion has more of its breast lit.
    """
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n).astype(float)
    mean = 0.2 + 0.1 * label + rng.normal(0, 0.04, n)
    frame = pd.DataFrame(
        {
            "map_max": np.clip(0.9 + rng.normal(0, 0.05, n) + 0.01 * label, 0, 1),
            "map_top_mean": np.clip(0.85 + rng.normal(0, 0.05, n), 0, 1),
            "map_share_above_half": np.clip(mean - 0.1 + rng.normal(0, 0.02, n), 0, 1),
            "map_mean": mean,
            "map_std": 0.2 + rng.normal(0, 0.03, n),
        }
    )
    return frame.assign(cancer=label, fold=np.arange(n) % 4)


def test_map_statistics_of_known_cells() -> None:
    stats = map_statistics(np.array([0.1, 0.2, 0.6, 0.9, 0.3, 0.4, 0.7]))
    assert stats["map_max"] == pytest.approx(0.9)
    assert stats["map_top_mean"] == pytest.approx(np.mean([0.9, 0.7, 0.6, 0.4, 0.3]))
    assert stats["map_share_above_half"] == pytest.approx(3 / 7)
    assert stats["map_mean"] == pytest.approx(np.mean([0.1, 0.2, 0.6, 0.9, 0.3, 0.4, 0.7]))
    assert stats["map_std"] > 0
    assert map_statistics(np.zeros(0)) == dict.fromkeys(MAP_STATISTICS, 0.0)


def test_fold_k_learned_scores_ignore_fold_k_labels() -> None:
    films = _films()
    before, _ = learned_film_scores(films, "cancer")
    flipped = films.copy()
    held = flipped["fold"] == 2
    flipped.loc[held, "cancer"] = 1 - flipped.loc[held, "cancer"]
    after, coefficients = learned_film_scores(flipped, "cancer")
    np.testing.assert_array_equal(before[held.to_numpy()], after[held.to_numpy()])
    # the other folds trained on fold 2's (now flipped) labels: their scores must move
    assert np.abs(before[~held.to_numpy()] - after[~held.to_numpy()]).min() > 0
    assert sorted(coefficients) == ["0", "1", "2", "3"]


def test_learned_pooling_beats_the_max_when_the_mean_carries_the_label() -> None:
    films = _films()
    learned, coefficients = learned_film_scores(films, "cancer")
    auc_max = roc_auc_score(films["cancer"], films["map_max"])
    auc_learned = roc_auc_score(films["cancer"], learned)
    assert auc_max < 0.65 and auc_learned > 0.9
    assert all(c["map_mean"] > 0 for c in coefficients.values())


def test_a_fold_whose_other_folds_hold_one_class_gets_a_constant_score() -> None:
    films = _films(40).assign(fold=lambda f: np.where(f["cancer"] == 1, 0, 1))
    scores, coefficients = learned_film_scores(films, "cancer")
    fold0 = films["fold"].to_numpy() == 0
    assert np.all(scores[fold0] == 0.0) and np.all(scores[~fold0] == 1.0)
    assert coefficients == {}


def test_a_recorded_fold_fit_scores_new_films_as_the_fitted_pipeline_did() -> None:
    """The fit recorded in metrics.json (weights, centre, scale) rescores fold k's films exactly."""
    films = _films()
    learned, coefficients = learned_film_scores(films, "cancer")
    for k, fit in coefficients.items():
        held = (films["fold"] == int(k)).to_numpy()
        np.testing.assert_allclose(pooled_probability(films[held], fit), learned[held], rtol=1e-9)
