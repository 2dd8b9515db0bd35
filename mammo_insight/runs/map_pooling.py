"""A trained pooling of the lesion map: a few statistics per film, a stacked logistic regression over them.

Why: the max of a film's lesion map is a weak film score when the map also lights up dense normal
tissue (mini-MIAS: patch ROC-AUC 0.82, max-pooled film ROC-AUC about 0.60). How much of the breast is
lit, and how strongly, says what the single hottest cell cannot. The pooling stays cheap and honest: five
statistics of the tissue cells of the out-of-fold map, and a logistic regression fitted, for each outer
fold k, on the other folds' films and applied to fold k's, so no film's learned score comes from a model
that saw its label.

Stacking caveat: the statistics of a fold-j film come from fold j's patch model, which trained on the
patches of fold k's women; the regression for fold k learns on those statistics. Fold k's labels never
reach its own scores, but the inputs the regression learns from are not independent of fold k.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)
TOP_K = 5  # cells averaged by map_top_mean: a lesion covers a few cells at the default stride
MAP_STATISTICS = ["map_max", "map_top_mean", "map_share_above_half", "map_mean", "map_std"]
# Fixed L2 penalty on standardised inputs: the statistics are strongly correlated (max and top-k mean
# nearly coincide), and C=1 keeps their weights stable and shared between them; fixed rather than tuned
# because an inner search on a few hundred films would need folds inside folds for little gain.
PENALTY_C = 1.0


def map_statistics(cells: np.ndarray) -> dict[str, float]:
    """The film's pooling inputs from the scores of its tissue cells (all 0 when no cell is on tissue)."""
    scores = np.asarray(cells, dtype=np.float64)
    if scores.size == 0:
        return dict.fromkeys(MAP_STATISTICS, 0.0)
    top = np.sort(scores)[-TOP_K:]
    return {
        "map_max": float(scores.max()),
        "map_top_mean": float(top.mean()),
        "map_share_above_half": float((scores > 0.5).mean()),
        "map_mean": float(scores.mean()),
        "map_std": float(scores.std()),
    }


def standardised_logistic() -> Any:
    """Standardised inputs and an L2 logistic regression (C = PENALTY_C): the learned pooling's model."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=PENALTY_C, max_iter=1000))


def learned_film_scores(
    films: pd.DataFrame, label: str, *, features: list[str] = MAP_STATISTICS
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """(learned score per film, each fold's fit): fold k's scores from a fit on the other folds.

    A fold's fit holds the intercept and one weight per statistic (on standardised inputs, so the weights
    compare), and under ``centre`` and ``scale`` the standardisation, so :func:`pooled_probability` scores a
    new film exactly as the fold's pipeline does.

    A fold whose training films hold a single class gets their prevalence as a constant score (no
    ranking, ROC-AUC 0.5 by construction) and a warning, so the run goes on.
    """
    x = films[features].to_numpy(dtype=np.float64)
    y = films[label].to_numpy(dtype=np.float64)
    fold = films["fold"].to_numpy()
    scores = np.full(len(films), np.nan)
    coefficients: dict[str, dict[str, Any]] = {}
    for k in np.unique(fold):
        held = fold == k
        train = ~held & ~np.isnan(y)
        if len(np.unique(y[train])) < 2:
            log.warning("fold %s: the other folds' films hold one class; learned score is constant", k)
            scores[held] = float(y[train].mean()) if train.any() else 0.5
            continue
        model = standardised_logistic().fit(x[train], y[train].astype(int))
        scores[held] = model.predict_proba(x[held])[:, 1]
        scaler, regression = model[0], model[-1]
        coefficients[str(k)] = {
            "intercept": float(regression.intercept_[0]),
            **{name: float(w) for name, w in zip(features, regression.coef_[0], strict=True)},
            "centre": dict(zip(features, map(float, scaler.mean_), strict=True)),
            "scale": dict(zip(features, map(float, scaler.scale_), strict=True)),
        }
    return scores, coefficients


def pooled_probability(statistics: pd.DataFrame, fit: dict[str, Any]) -> np.ndarray:
    """The learned pooling of one fold (``learned_film_scores``'s fit) on films' map statistics."""
    names = list(fit["centre"])
    x = statistics[names].to_numpy(dtype=np.float64)
    centre = np.array([fit["centre"][n] for n in names])
    scale = np.array([fit["scale"][n] for n in names])
    weights = np.array([fit[n] for n in names])
    return 1.0 / (1.0 + np.exp(-(fit["intercept"] + ((x - centre) / scale) @ weights)))
