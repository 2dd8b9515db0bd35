"""Cross-validated LightGBM at breast level, with embedding PCA fitted inside each training fold only.

Folds follow the one folds policy (:mod:`mammo_insight.cohort.folds`: grouped by patient, so a woman's two
breasts never sit on both sides of a split, and stratified on the patient's label). When the
embeddings come from a CNN run, its folds are reused, so a validation breast's embedding always comes
from a CNN that never saw her and the LightGBM fold that scores her never trained on her either.
"""

from __future__ import annotations

import inspect
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

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, cols: list[str]) -> ImageFeatures:
        """Embedding columns and, when the table has it, the CNN logit of the given rows."""
        logit = frame["cnn_logit"].to_numpy(np.float64) if "cnn_logit" in frame.columns else None
        return cls(frame[cols].to_numpy(np.float64), logit)

    def missing(self) -> np.ndarray:
        """True for rows without an embedding."""
        return np.isnan(self.emb).any(axis=1)


# the in-fold regularisation search: (num_leaves, min_child_samples, reg_lambda) candidates, from near-stumps
# (2 leaves) to small trees; each is early-stopped on the inner split
SEARCH_GRID = ((3, 200, 10.0), (7, 100, 5.0))


@dataclass
class LgbmParams:
    """Settings for a 2 %-prevalence tabular problem: shallow trees, slow learning, subsampling.

    Inside each training fold, ``search`` candidates (num_leaves, min_child_samples, reg_lambda) are each
    fitted on a patient-grouped inner split and early-stopped on its held-out women (binary log-loss,
    ``early_stopping_rounds``); the one with the lowest inner log-loss is refitted on the whole training
    fold with its early-stopped number of trees. ``n_estimators`` is the ceiling. ``monotone_age``: the risk
    may only rise with age (a constraint trees otherwise break on noise). On RSNA metadata the old fixed
    settings (200 trees, 15 leaves, no early stopping) gave ROC-AUC 0.618, these 0.642 (same folds).
    """

    n_estimators: int = 400
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
    search: tuple[tuple[int, int, float], ...] = SEARCH_GRID
    early_stopping_rounds: int = 30
    inner_folds: int = 4  # the inner split holds out one woman in inner_folds
    monotone_age: bool = True

    def estimator(self, seed: int, *, columns: list[str] | None = None, **overrides):
        """An LGBMClassifier with these settings, ``overrides`` (num_leaves=..., n_estimators=...) on top."""
        import lightgbm as lgb

        fixed = {k: v for k, v in asdict(self).items() if k not in TUNING_FIELDS}
        fixed.update(overrides)
        if self.monotone_age and columns is not None and "age" in columns:
            fixed["monotone_constraints"] = [1 if c == "age" else 0 for c in columns]
        return lgb.LGBMClassifier(
            **fixed, random_state=seed, deterministic=True, force_row_wise=True, verbose=-1
        )


TUNING_FIELDS = ("search", "early_stopping_rounds", "inner_folds", "monotone_age")
CANDIDATE_KEYS = ("num_leaves", "min_child_samples", "reg_lambda")
MIN_LEAF_SHARE = 20  # a candidate's minimum leaf size is capped at 1/20 of the rows it is fitted on


@dataclass(frozen=True)
class CvFit:
    """Out-of-fold probabilities and, per fold, the settings the in-fold search chose."""

    prob: np.ndarray
    settings: list[dict]


def tune_and_fit(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, params: LgbmParams, seed: int):
    """(model fitted on all of X, the chosen settings): in-fold search with patient-grouped early stopping.

    Without a search grid, or with too few women or positives for an inner split, ``params`` as they are.
    """
    base = {
        "num_leaves": params.num_leaves,
        "min_child_samples": params.min_child_samples,
        "reg_lambda": params.reg_lambda,
        "n_estimators": params.n_estimators,
    }
    columns = list(X.columns)
    inner = inner_split(y, groups, params.inner_folds, seed) if params.search else None
    if inner is None:
        return params.estimator(seed, columns=columns, **base).fit(X, y), {**base, "searched": False}
    import lightgbm as lgb

    fit_rows, valid_rows = inner
    best: dict | None = None
    for candidate in params.search:
        settings = dict(zip(CANDIDATE_KEYS, candidate, strict=True))
        # a leaf of 200 breasts is regularisation on 20,000 but forbids every split on 300
        settings["min_child_samples"] = min(
            settings["min_child_samples"], max(5, len(fit_rows) // MIN_LEAF_SHARE)
        )
        model = params.estimator(seed, columns=columns, **settings).fit(
            X.iloc[fit_rows],
            y[fit_rows],
            **_eval_arguments(X.iloc[valid_rows], y[valid_rows]),
            eval_metric="binary_logloss",
            callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)],
        )
        loss = float(model.best_score_["valid_0"]["binary_logloss"])
        if best is None or loss < best["inner_logloss"]:
            trees = max(1, int(model.best_iteration_ or params.n_estimators))
            best = {**settings, "n_estimators": trees, "inner_logloss": loss}
    # the inner fit saw (k-1)/k of the women: scale the tree count to the whole training fold
    trees = min(
        params.n_estimators,
        max(1, round(best["n_estimators"] * params.inner_folds / (params.inner_folds - 1))),
    )
    chosen = {**best, "n_estimators": trees, "searched": True}
    model = params.estimator(
        seed, columns=columns, **{k: chosen[k] for k in (*CANDIDATE_KEYS, "n_estimators")}
    )
    return model.fit(X, y), chosen


def _eval_arguments(X: pd.DataFrame, y: np.ndarray) -> dict:
    """The held-out set as LightGBM's fit takes it: eval_X/eval_y from 4.7 (eval_set warns there), else eval_set."""
    import lightgbm as lgb

    if "eval_X" in inspect.signature(lgb.LGBMClassifier.fit).parameters:
        return {"eval_X": (X,), "eval_y": (y,)}
    return {"eval_set": [(X, y)]}


def inner_split(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(fit rows, held-out rows): one patient-grouped fold of k held out, or None when the women are too few."""
    try:
        inner = grouped_folds(y, groups, k, seed)
    except MammoInsightError:
        return None
    fit_rows, valid_rows = np.flatnonzero(inner != 0), np.flatnonzero(inner == 0)
    if not (has_both_classes(y[fit_rows]) and has_both_classes(y[valid_rows])):
        return None
    return fit_rows, valid_rows


def consensus_settings(settings: list[dict]) -> dict:
    """The settings the folds chose most often, with their median tree count (for the final model)."""
    searched = [s for s in settings if s.get("searched")]
    if not searched:
        return settings[0] if settings else {}
    keys = [tuple(s[k] for k in CANDIDATE_KEYS) for s in searched]
    top = max(set(keys), key=keys.count)
    trees = [s["n_estimators"] for s, key in zip(searched, keys, strict=True) if key == top]
    return {
        **dict(zip(CANDIDATE_KEYS, top, strict=True)),
        "n_estimators": int(np.median(trees)),
        "searched": True,
    }


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


def has_both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


@dataclass(frozen=True)
class FoldFitting:
    """How each fold's model is fitted: the tree settings, the embedding's PCA size and the seed."""

    params: LgbmParams
    n_pca: int = 16
    seed: int = 0


def _fit_predict_fold(
    meta: pd.DataFrame | None,
    emb: ImageFeatures | None,
    y: np.ndarray,
    fold: np.ndarray,
    *,
    f: int,
    groups: np.ndarray,
    fitting: FoldFitting,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(validation rows, their probabilities, chosen settings) of fold f: PCA, search and trees on the
    other folds only."""
    params, n_pca, seed = fitting.params, fitting.n_pca, fitting.seed
    train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
    if not has_both_classes(y[train]):
        return test, np.full(len(test), y[train].mean()), {"fold": int(f), "searched": False}
    pca = fit_fold_pca(emb.emb, train, components_for(y[train], n_pca), seed) if emb is not None else None
    model, chosen = tune_and_fit(design_matrix(meta, emb, pca, train), y[train], groups[train], params, seed)
    return test, model.predict_proba(design_matrix(meta, emb, pca, test))[:, 1], {"fold": int(f), **chosen}


def cross_validate(
    meta: pd.DataFrame | None,
    emb: ImageFeatures | None,
    y: np.ndarray,
    fold: np.ndarray,
    *,
    fitting: FoldFitting,
    groups: np.ndarray | None = None,
    workers: int = 1,
) -> CvFit:
    """Out-of-fold probability per row; rows of a fold whose training part holds one class get its rate.

    ``groups`` (the patient of each row) keeps the inner early-stopping split patient-grouped; without it
    each row is its own group.

    ``workers`` folds are fitted at once in threads (LightGBM and BLAS release the GIL), each model on
    ``params.n_jobs`` threads: on 2 cores, 2 workers x 1 thread beats 1 worker x 2 OpenMP threads.
    """
    if meta is None and emb is None:
        raise ValueError("cross_validate needs metadata, embeddings or both")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    prob = np.full(len(y), np.nan)
    settings = []
    folds = sorted(set(fold))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = pool.map(
            lambda f: _fit_predict_fold(meta, emb, y, fold, f=f, groups=groups, fitting=fitting),
            folds,
        )
        for test, p, chosen in done:
            prob[test] = p
            settings.append(chosen)
    return CvFit(prob, settings)


def fit_final(
    meta: pd.DataFrame | None,
    emb: ImageFeatures | None,
    y: np.ndarray,
    params: LgbmParams,
    *,
    settings: dict | None = None,
    n_pca: int = 16,
    seed: int = 0,
):
    """The model fitted on every labelled breast (what SHAP explains) and its design matrix.

    ``settings``: the folds' consensus (:func:`consensus_settings`), so the explained model is the one the
    cross-validation scored; without it, ``params`` as they are.
    """
    rows = np.arange(len(y))
    pca = fit_fold_pca(emb.emb, rows, components_for(y, n_pca), seed) if emb is not None else None
    X = design_matrix(meta, emb, pca, rows)
    overrides = (
        {k: settings[k] for k in (*CANDIDATE_KEYS, "n_estimators") if k in settings} if settings else {}
    )
    return params.estimator(seed, columns=list(X.columns), **overrides).fit(X, y), X
