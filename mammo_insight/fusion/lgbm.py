"""Cross-validated LightGBM at breast level, with embedding PCA fitted inside each training fold only.

Folds follow the one folds policy (:mod:`mammo_insight.cohort.folds`: grouped by patient, so a woman's two
breasts never sit on both sides of a split, and stratified on the patient's label). When the
embeddings come from a CNN run, its folds are reused, so a validation breast's embedding always comes
from a CNN that never saw her and the LightGBM fold that scores her never trained on her either.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from mammo_insight.cohort.folds import patient_folds
from mammo_insight.errors import MammoInsightError

log = logging.getLogger(__name__)

IMAGE_PREFIX = "img_"  # every image feature's name starts so (img_cnn_logit, img_pc01 ...)


@dataclass(frozen=True)
class ImageFeatures:
    """What the images give LightGBM, one row per breast.

    ``emb``: the CNN embedding, reduced by a PCA fitted inside each training fold. ``logit``: the CNN's
    own out-of-fold logit, used as it is: every fold model has its own embedding space (trees fitted on
    other folds' components misread a held-out fold's), but their logits share one scale.
    """

    emb: np.ndarray
    logit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.emb)

    def __getitem__(self, rows) -> ImageFeatures:
        return ImageFeatures(self.emb[rows], None if self.logit is None else self.logit[rows])

    def missing(self) -> np.ndarray:
        """True for rows without an embedding."""
        return np.isnan(self.emb).any(axis=1)


@dataclass
class LgbmParams:
    """Conservative defaults for a 2 %-prevalence tabular problem: shallow trees, slow learning, subsampling."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 15
    max_bin: int = 63
    min_child_samples: int = 20
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    n_jobs: int = (
        1  # OpenMP threads spin when cores are oversubscribed: 2 threads on a busy 2-core box ran 30x slower
    )

    def estimator(self, seed: int):
        import lightgbm as lgb

        return lgb.LGBMClassifier(
            **asdict(self), random_state=seed, deterministic=True, force_row_wise=True, verbose=-1
        )


def grouped_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number per breast under the one folds policy (:mod:`mammo_insight.cohort.folds`): grouped by
    patient, stratified on the patient's label; too few women or positive women for k is an error."""
    return patient_folds(groups, y, k, seed)


def fill_folds(fold: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, *, k: int = 5) -> np.ndarray:
    """Keep the given folds; rows without one (-1: never in the CNN run) get patient-grouped folds of their own.

    The rows without a fold are split into as many folds as were given, under the same policy. With fewer
    than two given folds there is nothing to keep: k new patient-grouped folds are drawn.
    """
    fold = fold.copy()
    missing = fold < 0
    if missing.any():
        known = sorted(set(fold[~missing]))
        if len(known) < 2:
            return grouped_folds(y, groups, k, seed)
        try:
            sub = grouped_folds(y[missing], groups[missing], len(known), seed)
        except MammoInsightError as exc:
            raise MammoInsightError(
                f"{int(missing.sum())} breast(s) have an embedding but no CNN fold, and they "
                f"cannot be split into the run's {len(known)} folds: {exc}"
            ) from exc
        fold[missing] = np.asarray(known)[sub]
    return fold


def components_for(y_train: np.ndarray, n_components: int) -> int:
    """At most one component per 10 positive training breasts (events per variable): on a small cohort,
    16 components of noise drowned a CNN logit worth ROC-AUC 0.73 (image-only 0.56; 0.64 with one)."""
    return max(1, min(n_components, int(np.sum(y_train)) // 10))


def fit_fold_pca(emb: np.ndarray, train_idx: np.ndarray, n_components: int, seed: int) -> PCA:
    """PCA on the training rows only: the validation rows must not shape the components."""
    k = max(1, min(n_components, emb.shape[1], len(train_idx) - 1))
    return PCA(n_components=k, random_state=seed).fit(emb[train_idx])


def design_matrix(
    meta: pd.DataFrame | None, img: ImageFeatures | None, pca: PCA | None, rows: np.ndarray
) -> pd.DataFrame:
    """Metadata columns, the CNN logit (img_cnn_logit) and the embedding's components (img_pc01 ...)."""
    parts = []
    if meta is not None:
        parts.append(meta.iloc[rows].reset_index(drop=True))
    if img is not None:
        if img.logit is not None:
            parts.append(pd.DataFrame({f"{IMAGE_PREFIX}cnn_logit": img.logit[rows]}))
        scores = pca.transform(img.emb[rows])
        parts.append(
            pd.DataFrame(scores, columns=[f"{IMAGE_PREFIX}pc{i + 1:02d}" for i in range(scores.shape[1])])
        )
    return pd.concat(parts, axis=1)


def _has_both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _fit_predict_fold(
    meta: pd.DataFrame | None,
    emb: ImageFeatures | None,
    y: np.ndarray,
    fold: np.ndarray,
    *,
    f: int,
    params: LgbmParams,
    n_pca: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(validation rows, their probabilities) of fold f, PCA and trees fitted on the other folds only."""
    train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
    if not _has_both_classes(y[train]):
        return test, np.full(len(test), y[train].mean())
    pca = fit_fold_pca(emb.emb, train, components_for(y[train], n_pca), seed) if emb is not None else None
    model = params.estimator(seed).fit(design_matrix(meta, emb, pca, train), y[train])
    return test, model.predict_proba(design_matrix(meta, emb, pca, test))[:, 1]


def cross_validate(
    meta: pd.DataFrame | None,
    emb: ImageFeatures | None,
    y: np.ndarray,
    fold: np.ndarray,
    *,
    params: LgbmParams,
    n_pca: int = 16,
    seed: int = 0,
    workers: int = 1,
) -> np.ndarray:
    """Out-of-fold probability per row; rows of a fold whose training part holds one class get its rate.

    ``workers`` folds are fitted at once in threads (LightGBM and BLAS release the GIL), each model on
    ``params.n_jobs`` threads: on 2 cores, 2 workers x 1 thread beats 1 worker x 2 OpenMP threads.
    """
    if meta is None and emb is None:
        raise ValueError("cross_validate needs metadata, embeddings or both")
    prob = np.full(len(y), np.nan)
    folds = sorted(set(fold))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = pool.map(
            lambda f: _fit_predict_fold(meta, emb, y, fold, f=f, params=params, n_pca=n_pca, seed=seed), folds
        )
        for test, p in done:
            prob[test] = p
    return prob


def fit_final(
    meta: pd.DataFrame | None,
    emb: ImageFeatures | None,
    y: np.ndarray,
    params: LgbmParams,
    *,
    n_pca: int = 16,
    seed: int = 0,
):
    """The model fitted on every labelled breast (what SHAP explains) and its design matrix."""
    rows = np.arange(len(y))
    pca = fit_fold_pca(emb.emb, rows, components_for(y, n_pca), seed) if emb is not None else None
    X = design_matrix(meta, emb, pca, rows)
    return params.estimator(seed).fit(X, y), X
