"""fuse-train from a cohort table (and optional embeddings) to scores, comparisons and SHAP.

Imports no torch: LightGBM/libgomp and torch's OpenMP runtime are kept in separate processes
(`embed` runs torch, `fuse-train` runs LightGBM), so their import order can never matter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from mammo_insight.cohort.folds import folds_record
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.errors import MammoInsightError
from mammo_insight.fusion.analyses import ScannerChecks, explain, per_view_auc, scanner_checks
from mammo_insight.fusion.compare import AGE_ONLY, CNN, STACKED, best_metadata_model, paired_comparisons
from mammo_insight.fusion.config import FusionConfig
from mammo_insight.fusion.emb_table import embedding_columns
from mammo_insight.fusion.features import WORKUP_FEATURES, breast_features, leaky_columns_of
from mammo_insight.fusion.lgbm import (
    CvFit,
    FoldFitting,
    ImageFeatures,
    cross_validate,
    fill_folds,
    grouped_folds,
)
from mammo_insight.fusion.logistic import cross_validate_logistic
from mammo_insight.metrics.compare import score_models
from mammo_insight.progress import Timings

log = logging.getLogger(__name__)

LEAK_WARNING = (
    "WARNING: post-outcome / leaky column(s) {cols} were included as features (--include-leaky). "
    "They are decided after the outcome or predict it implausibly well: every figure below is "
    "optimistic and must not be read as screening performance."
)


WORKUP_WARNING = (
    "Work-up proxies {cols} were included as features (--include-workup): extra images are often taken "
    "after a suspicious finding, so the metadata and fused figures may read the work-up, not the screen."
)


@dataclass(frozen=True)
class FusionResult:
    """Everything the outputs and the report need, built complete by run_fusion."""

    breasts: pd.DataFrame  # breast_id, patient_id, cancer, fold, metadata features
    meta_features: list[str]
    probs: dict[str, np.ndarray]  # model -> out-of-fold probability per breast (rows of `breasts`)
    settings: dict[str, list[dict]]  # model -> the settings each fold used (chosen by the in-fold search)
    best_metadata: str | None  # the metadata-only model with the higher ROC-AUC: what the images must beat
    scores: dict
    comparisons: dict
    per_view: pd.DataFrame
    excluded_leaky: list[str]
    included_leaky: list[str]
    warnings: list[str]
    explained_model: str
    shap_X: pd.DataFrame
    shap_explanation: Any
    shap_rows: np.ndarray  # positions in `breasts` of the explained rows
    feature_groups: dict[str, str]
    interactions: pd.DataFrame | None
    top_risk: np.ndarray  # positions in `breasts` of the highest-risk breasts
    emb_dim: int
    folds: dict  # the folds actually used (cohort.folds.folds_record + requested, source)
    timings: Timings
    scanner: ScannerChecks | None = None  # with embeddings: adjusted odds ratio, probes, within-machine AUC


def _breast_embeddings(
    emb: pd.DataFrame, breast_ids: pd.Series, cols: list[str]
) -> tuple[ImageFeatures, np.ndarray]:
    """(features aligned to breast_ids with NaN rows where absent, fold per breast with -1 where unknown)."""
    rows = emb[emb["level"] == "breast"].drop_duplicates("breast_id").set_index("breast_id")
    aligned = rows.reindex(breast_ids.astype(str).to_numpy())
    fold = (
        pd.to_numeric(aligned["fold"], errors="coerce").fillna(-1).astype(int).to_numpy()
        if "fold" in aligned.columns
        else np.full(len(aligned), -1)
    )
    return ImageFeatures.from_frame(aligned, cols), fold


def _coverage(absent: np.ndarray, cfg: FusionConfig) -> str:
    """The sentence stating how many labelled breasts the embeddings cover; below cfg.min_coverage a
    MammoInsightError unless cfg.allow_partial (embeddings of another cohort match a few ids by chance)."""
    n, covered = len(absent), int((~absent).sum())
    share = covered / n
    text = (
        f"Embeddings cover {covered:,} of the cohort's {n:,} labelled breasts ({share:.1%}); "
        f"{n - covered:,} breast(s) without one were left out of every model."
    )
    if share >= cfg.min_coverage:
        return text
    if not cfg.allow_partial:
        raise MammoInsightError(
            f"the embeddings cover {covered:,} of the cohort's {n:,} labelled breasts ({share:.1%}), under the "
            f"{cfg.min_coverage:.0%} fuse-train requires: are they from this cohort? (--allow-partial fits "
            "the covered breasts only)"
        )
    log.warning(text)
    return f"WARNING: {text} (--allow-partial: the figures describe only the covered breasts)"


def _has_cnn_score(emb: ImageFeatures) -> bool:
    """The embeddings carry the CNN's own out-of-fold logit for every breast (embed writes cnn_logit)."""
    return emb.logit is not None and bool(np.isfinite(emb.logit).all())


def _reference_fits(
    meta: pd.DataFrame | None, emb: ImageFeatures | None, y: np.ndarray, fold: np.ndarray, cfg: FusionConfig
) -> dict[str, CvFit]:
    """The references every model is read against, on the same folds: age alone (logistic), and with the
    CNN's score a logistic stacker on its logit plus the metadata (adds the metadata without re-learning
    the image score from a few hundred positive breasts, as the trees on the embeddings must)."""
    fits: dict[str, CvFit] = {}
    common = {"settings": cfg.logistic, "workers": cfg.workers}
    if meta is not None and "age" in meta.columns:
        fits[AGE_ONLY] = cross_validate_logistic(meta[["age"]], y, fold, **common)
    if meta is not None and emb is not None and _has_cnn_score(emb):
        fits[STACKED] = cross_validate_logistic(meta.assign(cnn_logit=emb.logit), y, fold, **common)
    return fits


def _leaky_columns(
    table: pd.DataFrame, post_outcome: Sequence[str], cfg: FusionConfig, warnings: list[str]
) -> tuple[list[str], list[str]]:
    """(excluded, included) leaky columns: the audit's finds are left out unless --include-leaky names them,
    and including any is warned about on the page and in the log."""
    leaky = leaky_columns_of(table, post_outcome)
    included = list(cfg.include_leaky)
    excluded = [c for c in leaky if c not in included]
    if included:
        warnings.append(LEAK_WARNING.format(cols=", ".join(included)))
        log.warning(warnings[-1])
    return excluded, included


def _labelled_breasts(
    table: pd.DataFrame,
    leaky: tuple[list[str], list[str]],
    factors: Mapping[str, str],
    cfg: FusionConfig,
    warnings: list[str],
) -> tuple[pd.DataFrame, list[str]]:
    """Breast-level features of the labelled breasts (the unlabelled ones are left out, with a warning);
    ``leaky`` is (excluded, included)."""
    excluded, included = leaky
    breasts, meta_features = breast_features(
        table, exclude=excluded, include_leaky=included, workup=cfg.include_workup, factors=factors
    )
    if cfg.include_workup:
        warnings.append(
            WORKUP_WARNING.format(cols=", ".join(f for f in WORKUP_FEATURES if f in meta_features))
        )
    unlabelled = int(breasts["cancer"].isna().sum())
    if unlabelled:
        warnings.append(f"{unlabelled} breast(s) have no cancer label and were left out")
    return breasts[breasts["cancer"].notna()].reset_index(drop=True), meta_features


def _with_embeddings(
    breasts: pd.DataFrame, embeddings: pd.DataFrame | None, cfg: FusionConfig, warnings: list[str]
) -> tuple[pd.DataFrame, ImageFeatures | None, np.ndarray, list[str]]:
    """(the breasts that have an embedding, their image features, their CNN fold or -1, the embedding
    columns); without embeddings every breast, no features, no folds and no columns."""
    if embeddings is None:
        return breasts, None, np.full(len(breasts), -1), []
    cols = embedding_columns(embeddings)
    emb_matrix, fold = _breast_embeddings(embeddings, breasts["breast_id"], cols)
    absent = emb_matrix.missing()
    if absent.all():
        raise MammoInsightError(
            "no breast of the cohort has an embedding: do the breast_id values of the "
            "embeddings file match the cohort's?"
        )
    warnings.append(_coverage(absent, cfg))
    if absent.any():
        keep = ~absent
        return breasts[keep].reset_index(drop=True), emb_matrix[keep], fold[keep], cols
    return breasts, emb_matrix, fold, cols


def _assign_folds(
    fold: np.ndarray, y: np.ndarray, groups: np.ndarray, cfg: FusionConfig
) -> tuple[np.ndarray, str]:
    """(fold per breast, where the folds come from): the embeddings' CNN folds when they carry them, so no
    breast is scored by a model that saw it; otherwise patient-grouped folds drawn for this run."""
    if not (fold >= 0).any():
        return grouped_folds(y, groups, cfg.folds, cfg.seed), "drawn for this run"
    n_given = len(set(fold[fold >= 0]))
    if n_given != cfg.folds:
        log.warning(
            "using the embeddings' %d CNN folds (not --folds %d) so no breast is scored by a model "
            "that saw it",
            n_given,
            cfg.folds,
        )
    return (
        fill_folds(fold, y, groups, cfg.seed, k=cfg.folds),
        "the embeddings' CNN folds (breasts without one split under the same policy)",
    )


def _cross_validate_models(
    meta: pd.DataFrame | None,
    emb_matrix: ImageFeatures | None,
    y: np.ndarray,
    fold: np.ndarray,
    groups: np.ndarray,
    cfg: FusionConfig,
) -> dict[str, CvFit]:
    """Every model the inputs allow, on the same folds: metadata-only (LightGBM and logistic), the
    references, image-only and fused."""
    fits: dict[str, CvFit] = {}
    fitting = FoldFitting(cfg.params, n_pca=cfg.n_pca, seed=cfg.seed)
    common = {"fitting": fitting, "groups": groups, "workers": cfg.workers}
    if meta is not None:
        fits["metadata"] = cross_validate(meta, None, y, fold, **common)
        fits["metadata_logistic"] = cross_validate_logistic(
            meta, y, fold, settings=cfg.logistic, workers=cfg.workers
        )
    fits.update(_reference_fits(meta, emb_matrix, y, fold, cfg))
    if emb_matrix is not None:
        fits["image"] = cross_validate(None, emb_matrix, y, fold, **common)
    if meta is not None and emb_matrix is not None:
        fits["fused"] = cross_validate(meta, emb_matrix, y, fold, **common)
    return fits


def _oracle_score(
    planted_risk: pd.Series,
    breasts: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    cfg: FusionConfig,
    warnings: list[str],
) -> dict | None:
    """The planted risk scored as a model ("oracle"), or None (with a warning) when a breast has none."""
    risk = planted_risk.reindex(breasts["breast_id"].astype(str)).to_numpy(float)
    if np.isnan(risk).any():
        warnings.append(f"{int(np.isnan(risk).sum())} breast(s) have no planted risk: no oracle shown")
        return None
    return score_models(y, {"oracle": risk}, groups, cfg.n_boot, seed=cfg.seed)["oracle"]


def run_fusion(
    table: pd.DataFrame,
    embeddings: pd.DataFrame | None = None,
    config: FusionConfig | None = None,
    *,
    post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS),
    factors: Mapping[str, str] | None = None,
    planted_risk: pd.Series | None = None,
) -> FusionResult:
    """Cross-validate metadata-only (LightGBM and logistic), image-only and fused LightGBM at breast level;
    explain with SHAP.

    ``post_outcome``: the cohort's post-outcome columns (Cohort.post_outcome), left out unless included.
    ``factors``: the cohort's own columns (Cohort.factors), metadata features beside the canonical ones.
    ``planted_risk``: a synthetic cohort's true cancer probability per breast_id (synth's planted_risk.csv),
    scored beside the models as "oracle": the best any metadata-only model could do.
    """
    cfg = config or FusionConfig()
    timings = Timings()
    warnings: list[str] = []
    with timings.part("leakage audit"):
        excluded, included = _leaky_columns(table, post_outcome, cfg, warnings)
    with timings.part("features"):
        breasts, meta_features = _labelled_breasts(table, (excluded, included), factors or {}, cfg, warnings)
        breasts, emb_matrix, fold, cols = _with_embeddings(breasts, embeddings, cfg, warnings)
    if len(breasts) == 0 or breasts["cancer"].nunique() < 2:
        raise MammoInsightError("fuse-train needs labelled breasts of both classes (cancer 0 and 1)")
    y = breasts["cancer"].to_numpy(dtype=int)
    groups = breasts["patient_id"].astype(str).to_numpy()
    fold, source = _assign_folds(fold, y, groups, cfg)
    breasts["fold"] = fold
    folds_used = {**folds_record(groups, y, fold, seed=cfg.seed), "requested": cfg.folds, "source": source}
    meta = breasts[meta_features] if meta_features else None
    if meta is None and emb_matrix is None:
        raise MammoInsightError(
            "no feature left: every metadata column is leaky or empty and no embeddings given"
        )
    with timings.part("cross-validation (4 models)"):
        fits = _cross_validate_models(meta, emb_matrix, y, fold, groups, cfg)
    probs = {name: fit.prob for name, fit in fits.items()}
    if emb_matrix is not None and _has_cnn_score(emb_matrix):
        probs = {CNN: expit(emb_matrix.logit), **probs}
    settings = {name: fit.settings for name, fit in fits.items()}
    per_view = pd.DataFrame()
    if embeddings is not None:
        with timings.part("per-view image models"):
            per_view = per_view_auc(embeddings, breasts, cols, cfg, settings["image"])
    with timings.part("metrics + paired tests"):
        scores = score_models(y, probs, groups, cfg.n_boot, seed=cfg.seed)
        best_metadata = best_metadata_model(probs)
        oracle = (
            None if planted_risk is None else _oracle_score(planted_risk, breasts, y, groups, cfg, warnings)
        )
        if oracle is not None:
            scores["oracle"] = oracle
        comparisons = paired_comparisons(
            y, probs, groups, cfg.n_boot, best_metadata=best_metadata, seed=cfg.seed
        )
    scanner = None
    if emb_matrix is not None and "image" in probs:
        with timings.part("incremental value + scanner probes"):
            own = [f for f in (factors or {}) if f in meta_features]
            scanner = scanner_checks(table, embeddings, breasts, emb_matrix, probs["image"], cols, cfg, own)
    shap_fields = explain(probs, y, meta, emb_matrix, cfg=cfg, settings=settings, timings=timings)
    return FusionResult(
        breasts=breasts,
        meta_features=meta_features,
        probs=probs,
        settings=settings,
        best_metadata=best_metadata,
        scores=scores,
        comparisons=comparisons,
        per_view=per_view,
        excluded_leaky=excluded,
        included_leaky=included,
        warnings=warnings,
        timings=timings,
        emb_dim=len(cols),
        folds=folds_used,
        scanner=scanner,
        **shap_fields,
    )
