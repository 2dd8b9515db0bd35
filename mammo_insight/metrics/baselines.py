"""Baselines scored by the same metrics as the CNN, so a model's figures have a floor to stand on.

- majority: every row gets the training folds' majority class (prob 1 or 0): AUC 0.5, pF1 0 at 2% prevalence.
- prevalence_random: each row is positive with the training folds' prevalence (seeded): chance level.
- pixel_logreg: logistic regression on downsampled pixels, out-of-fold: what brightness and shape alone give.
- frozen_features (runs with a pretrained backbone): logistic regression on the backbone's pooled features
  before any fine-tuning, out-of-fold: what the pretrained features give for free.
Every baseline is fitted on the training folds only and predicts the held-out fold, like the CNN.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from mammo_insight.metrics.aggregate import evaluate_predictions, require_columns

logger = logging.getLogger(__name__)

BASELINES = ["majority", "prevalence_random", "pixel_logreg", "frozen_features"]
HARD_LABEL_THRESHOLD = {"majority": 0.5, "prevalence_random": 0.5}
PIXEL_SIZE = (32, 24)  # (height, width) of the pixel baseline's input


def _fold_splits(labels: np.ndarray, folds: np.ndarray):
    """(held-out mask, training mask) per fold; training rows need a label and another fold."""
    labelled = ~np.isnan(labels)
    for fold in np.unique(folds[~pd.isna(folds)]):
        held = folds == fold
        yield held, labelled & ~held


def majority_baseline(labels, folds) -> np.ndarray:
    """Out-of-fold prob: 1.0 when positives are the majority of the training folds, else 0.0."""
    y, f = np.asarray(labels, dtype=float), np.asarray(folds)
    prob = np.full(y.size, np.nan)
    for held, train in _fold_splits(y, f):
        prob[held] = float(np.nanmean(y[train]) > 0.5) if train.any() else 0.0
    return prob


def prevalence_random_baseline(labels, folds, seed: int = 0) -> np.ndarray:
    """Out-of-fold prob: 1.0 with probability equal to the training folds' prevalence, else 0.0 (seeded)."""
    y, f = np.asarray(labels, dtype=float), np.asarray(folds)
    rng = np.random.default_rng(seed)
    prob = np.full(y.size, np.nan)
    for held, train in _fold_splits(y, f):
        rate = float(np.nanmean(y[train])) if train.any() else 0.0
        prob[held] = (rng.random(int(held.sum())) < rate).astype(float)
    return prob


def downsample(images: np.ndarray, size: tuple[int, int] = PIXEL_SIZE) -> np.ndarray:
    """(n, H, W) images as (n, h*w) float32 rows, area-averaged to size (h, w)."""
    from PIL import Image

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (n, H, W), got {images.shape}")
    h, w = size
    if images.shape[1:] == (h, w):
        return images.reshape(len(images), -1)
    out = np.empty((len(images), h * w), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.Resampling.BOX)).ravel()
    return out


def pixel_logreg_baseline(
    images: np.ndarray, labels, folds, size: tuple[int, int] = PIXEL_SIZE, *, c: float = 0.1, seed: int = 0
) -> np.ndarray:
    """Out-of-fold prob of an L2 logistic regression on standardised downsampled pixels.

    Unweighted (no class weights), so its probabilities stay on the prevalence scale that pF1 reads.
    A fold whose training rows hold a single class predicts that class's rate.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = downsample(images, size)
    y, f = np.asarray(labels, dtype=float), np.asarray(folds)
    if len(x) != y.size:
        raise ValueError(f"{len(x)} images but {y.size} labels")
    prob = np.full(y.size, np.nan)
    for held, train in _fold_splits(y, f):
        if np.unique(y[train]).size < 2:
            prob[held] = float(np.nanmean(y[train])) if train.any() else 0.0
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        model.fit(x[train], y[train].astype(int))
        prob[held] = model.predict_proba(x[held])[:, 1]
    return prob


def features_logreg_baseline(features: np.ndarray, labels, folds, *, seed: int = 0) -> np.ndarray:
    """Out-of-fold prob of an L2 logistic regression on standardised feature vectors (n, d).

    The strength of the penalty is chosen inside each training fold (3-fold cross-validated log-loss over
    10^-4 .. 10^1), never on the held-out fold: a 1280-d feature vector on a few hundred images needs far
    more shrinkage than 768 pixels do, and no fixed value suits every backbone.
    """
    import inspect

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # scikit-learn >= 1.8 warns unless told the L2-only penalty and the fitted attributes it will default to
    newer = {"use_legacy_attributes": False, "l1_ratios": (0.0,)}
    newer = newer if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters else {}
    x = np.asarray(features, dtype=np.float64)
    y, f = np.asarray(labels, dtype=float), np.asarray(folds)
    if len(x) != y.size:
        raise ValueError(f"{len(x)} feature rows but {y.size} labels")
    prob = np.full(y.size, np.nan)
    for held, train in _fold_splits(y, f):
        classes, counts = np.unique(y[train], return_counts=True)
        if classes.size < 2 or counts.min() < 3:
            prob[held] = float(np.nanmean(y[train])) if train.any() else 0.0
            continue
        model = make_pipeline(
            StandardScaler(),
            LogisticRegressionCV(
                Cs=np.logspace(-4, 1, 11).tolist(),
                cv=3,
                scoring="neg_log_loss",
                max_iter=2000,
                random_state=seed,
                **newer,
            ),
        )
        model.fit(x[train], y[train].astype(int))
        prob[held] = model.predict_proba(x[held])[:, 1]
    return prob


def baseline_predictions(
    table: pd.DataFrame,
    images: np.ndarray | None = None,
    seed: int = 0,
    label: str = "cancer",
    *,
    features: np.ndarray | None = None,
) -> pd.DataFrame:
    """Long table: the rows of `table` (image_id, breast_id, patient_id, fold, label) once per baseline,
    with columns model and prob. pixel_logreg needs `images`, frozen_features `features` (row-aligned with
    `table`)."""
    require_columns(table, ["breast_id", "patient_id", "fold", label], "baseline table")
    y, f = table[label].to_numpy(dtype=float), table["fold"].to_numpy()
    probs = {"majority": majority_baseline(y, f), "prevalence_random": prevalence_random_baseline(y, f, seed)}
    if images is not None:
        probs["pixel_logreg"] = pixel_logreg_baseline(images, y, f, seed=seed)
    if features is not None:
        probs["frozen_features"] = features_logreg_baseline(features, y, f, seed=seed)
    keep = [c for c in ["image_id", "breast_id", "patient_id", "fold", label] if c in table.columns]
    frames = [table[keep].assign(model=name, prob=p) for name, p in probs.items()]
    return pd.concat(frames, ignore_index=True)


def evaluate_baselines(
    table: pd.DataFrame,
    images: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    label: str = "cancer",
    features: np.ndarray | None = None,
) -> dict:
    """{baseline: evaluate_predictions body} (image, breast, breast_max levels) for RUN/baselines.json.

    Rows without a fold (never held out) get no prediction and are not scored. The hard-label baselines
    (majority, prevalence_random) are read at threshold 0.5, their own decision; pixel_logreg's and
    frozen_features' thresholds are tuned best-F1 on their out-of-fold predictions, as the CNN's is.
    """
    preds = baseline_predictions(table, images, seed, label, features=features)
    preds = preds[preds["prob"].notna()]
    return {
        name: evaluate_predictions(part, HARD_LABEL_THRESHOLD.get(name), n_boot, seed, label=label)
        for name, part in preds.groupby("model", sort=False)
    }
