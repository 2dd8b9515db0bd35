"""fuse-train from a cohort table (and optional embeddings) to scores, comparisons and SHAP.

Imports no torch: LightGBM/libgomp and torch's OpenMP runtime are kept in separate processes
(`embed` runs torch, `fuse-train` runs LightGBM), so their import order can never matter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from mammo_insight.cohort.folds import folds_record
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.errors import MammoInsightError
from mammo_insight.fusion.compare import AGE_ONLY, CNN, STACKED, best_metadata_model, paired_comparisons
from mammo_insight.fusion.emb_table import embedding_columns
from mammo_insight.fusion.features import WORKUP_FEATURES, breast_features, leaky_columns_of
from mammo_insight.fusion.lgbm import (
    CANDIDATE_KEYS,
    IMAGE_PREFIX,
    CvFit,
    ImageFeatures,
    LgbmParams,
    consensus_settings,
    cross_validate,
    fill_folds,
    fit_final,
    grouped_folds,
)
from mammo_insight.fusion.logistic import LogisticSettings, cross_validate_logistic
from mammo_insight.metrics.compare import score_models
from mammo_insight.progress import Timings

log = logging.getLogger(__name__)

PER_VIEWS = ("CC", "MLO")
LEAK_WARNING = (
    "WARNING: post-outcome / leaky column(s) {cols} were included as features (--include-leaky). "
    "They are decided after the outcome or predict it implausibly well: every figure below is "
    "optimistic and must not be read as screening performance."
)


WORKUP_WARNING = (
    "Work-up proxies {cols} were included as features (--include-workup): extra images are often taken "
    "after a suspicious finding, so the metadata and fused figures may read the work-up, not the screen."
)


@dataclass
class FusionConfig:
    folds: int = 5
    seed: int = 0
    include_leaky: Sequence[str] = ()
    include_workup: bool = False  # the image counts (fusion.features.WORKUP_FEATURES) as features
    n_pca: int = 16
    shap_rows: int = 3000
    interaction_rows: int = 200
    workers: int = 2  # folds fitted at once (threads)
    n_top_risk: int = 5
    n_boot: int = 1000
    min_coverage: float = (
        0.9  # share of the labelled breasts the embeddings must cover (unless allow_partial)
    )
    allow_partial: bool = False
    params: LgbmParams = field(default_factory=LgbmParams)
    logistic: LogisticSettings = field(default_factory=LogisticSettings)


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


@dataclass(frozen=True)
class ScannerChecks:
    """What the images add beyond the metadata, and whether the image model reads the scanner."""

    odds_ratio: dict  # fusion.incremental.adjusted_odds_ratio
    probes: pd.DataFrame  # fusion.probes.run_probes
    within: pd.DataFrame  # the image score's ROC-AUC per machine and site
    heterogeneity: dict  # factor -> Cochran's Q test
    verdict: str
    stratified: pd.DataFrame = field(default_factory=pd.DataFrame)  # fusion.stratified.stratified_audit


def _image_features(frame: pd.DataFrame, cols: list[str]) -> ImageFeatures:
    """Embedding columns and, when the table has it, the CNN logit of the given rows."""
    logit = frame["cnn_logit"].to_numpy(np.float64) if "cnn_logit" in frame.columns else None
    return ImageFeatures(frame[cols].to_numpy(np.float64), logit)


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
    return _image_features(aligned, cols), fold


def _view_embeddings(emb: pd.DataFrame, breast_ids: pd.Series, cols: list[str], view: str) -> ImageFeatures:
    """Mean image embedding (and logit) of the breast's images of one view (NaN rows for breasts without it)."""
    rows = emb[(emb["level"] == "image") & (emb["view"] == view)]
    mean = rows.groupby("breast_id")[[c for c in [*cols, "cnn_logit"] if c in rows.columns]].mean()
    return _image_features(mean.reindex(breast_ids.astype(str).to_numpy()), cols)


def _per_view_auc(
    emb: pd.DataFrame, b: pd.DataFrame, cols: list[str], cfg: FusionConfig, image_settings: list[dict]
) -> pd.DataFrame:
    """Image-only model from one view's embeddings (CC only, MLO only) on the breasts that have that view.

    Fitted with the settings the two-view image model chose (no search of its own): the question is which
    view carries the signal, not the best model per view, and it halves the time.
    """
    from mammo_insight.metrics import metrics_with_ci

    chosen = consensus_settings(image_settings)
    params = replace(
        cfg.params, search=(), **{k: chosen[k] for k in (*CANDIDATE_KEYS, "n_estimators") if k in chosen}
    )
    out = []
    for view in PER_VIEWS:
        matrix = _view_embeddings(emb, b["breast_id"], cols, view)
        have = ~matrix.missing()
        y, fold = b["cancer"].to_numpy()[have], b["fold"].to_numpy()[have]
        if have.sum() < 10 or len(np.unique(y)) < 2:
            continue
        prob = cross_validate(
            None,
            matrix[have],
            y,
            fold,
            params=params,
            groups=b["patient_id"].astype(str).to_numpy()[have],
            n_pca=cfg.n_pca,
            seed=cfg.seed,
            workers=cfg.workers,
        ).prob
        m = metrics_with_ci(y, prob, b["patient_id"].to_numpy()[have], None, n_boot=cfg.n_boot, seed=cfg.seed)
        out.append(
            {
                "embeddings": f"{view} only",
                "n_breasts": int(have.sum()),
                "n_positive": int(y.sum()),
                "roc_auc": m["roc_auc"]["value"],
                "ci_low": m["roc_auc"]["ci_low"],
                "ci_high": m["roc_auc"]["ci_high"],
            }
        )
    return pd.DataFrame(
        out, columns=["embeddings", "n_breasts", "n_positive", "roc_auc", "ci_low", "ci_high"]
    )


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


def run_fusion(
    table: pd.DataFrame,
    embeddings: pd.DataFrame | None = None,
    config: FusionConfig | None = None,
    *,
    post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS),
    planted_risk: pd.Series | None = None,
) -> FusionResult:
    """Cross-validate metadata-only (LightGBM and logistic), image-only and fused LightGBM at breast level;
    explain with SHAP.

    ``post_outcome``: the cohort's post-outcome columns (Cohort.post_outcome), left out unless included.
    ``planted_risk``: a synthetic cohort's true cancer probability per breast_id (synth's planted_risk.csv),
    scored beside the models as "oracle": the best any metadata-only model could do.
    """
    cfg = config or FusionConfig()
    timings = Timings()
    warnings: list[str] = []
    with timings.part("leakage audit"):
        leaky = leaky_columns_of(table, post_outcome)
    included = list(cfg.include_leaky)
    excluded = [c for c in leaky if c not in included]
    if included:
        warnings.append(LEAK_WARNING.format(cols=", ".join(included)))
        log.warning(warnings[-1])
    with timings.part("features"):
        breasts, meta_features = breast_features(
            table, exclude=excluded, include_leaky=included, workup=cfg.include_workup
        )
        if cfg.include_workup:
            warnings.append(
                WORKUP_WARNING.format(cols=", ".join(f for f in WORKUP_FEATURES if f in meta_features))
            )
        unlabelled = int(breasts["cancer"].isna().sum())
        if unlabelled:
            warnings.append(f"{unlabelled} breast(s) have no cancer label and were left out")
        breasts = breasts[breasts["cancer"].notna()].reset_index(drop=True)
        emb_matrix, fold, cols = None, np.full(len(breasts), -1), []
        if embeddings is not None:
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
                breasts, emb_matrix, fold = breasts[keep].reset_index(drop=True), emb_matrix[keep], fold[keep]
    if len(breasts) == 0 or breasts["cancer"].nunique() < 2:
        raise MammoInsightError("fuse-train needs labelled breasts of both classes (cancer 0 and 1)")
    y = breasts["cancer"].to_numpy(dtype=int)
    groups = breasts["patient_id"].astype(str).to_numpy()
    if (fold >= 0).any():
        n_given = len(set(fold[fold >= 0]))
        if n_given != cfg.folds:
            log.warning(
                "using the embeddings' %d CNN folds (not --folds %d) so no breast is scored by a model "
                "that saw it",
                n_given,
                cfg.folds,
            )
        fold = fill_folds(fold, y, groups, cfg.seed, k=cfg.folds)
        source = "the embeddings' CNN folds (breasts without one split under the same policy)"
    else:
        fold = grouped_folds(y, groups, cfg.folds, cfg.seed)
        source = "drawn for this run"
    breasts["fold"] = fold
    folds_used = {**folds_record(groups, y, fold, seed=cfg.seed), "requested": cfg.folds, "source": source}
    meta = breasts[meta_features] if meta_features else None
    if meta is None and emb_matrix is None:
        raise MammoInsightError(
            "no feature left: every metadata column is leaky or empty and no embeddings given"
        )
    fits: dict[str, CvFit] = {}
    with timings.part("cross-validation (4 models)"):
        fitting = {
            "params": cfg.params,
            "groups": groups,
            "n_pca": cfg.n_pca,
            "seed": cfg.seed,
            "workers": cfg.workers,
        }
        if meta is not None:
            fits["metadata"] = cross_validate(meta, None, y, fold, **fitting)
            fits["metadata_logistic"] = cross_validate_logistic(
                meta, y, fold, settings=cfg.logistic, workers=cfg.workers
            )
        fits.update(_reference_fits(meta, emb_matrix, y, fold, cfg))
        if emb_matrix is not None:
            fits["image"] = cross_validate(None, emb_matrix, y, fold, **fitting)
        if meta is not None and emb_matrix is not None:
            fits["fused"] = cross_validate(meta, emb_matrix, y, fold, **fitting)
    probs = {name: fit.prob for name, fit in fits.items()}
    if emb_matrix is not None and _has_cnn_score(emb_matrix):
        probs = {CNN: expit(emb_matrix.logit), **probs}
    settings = {name: fit.settings for name, fit in fits.items()}
    per_view = pd.DataFrame()
    if embeddings is not None:
        with timings.part("per-view image models"):
            per_view = _per_view_auc(embeddings, breasts, cols, cfg, settings["image"])
    with timings.part("metrics + paired tests"):
        scores = score_models(y, probs, groups, cfg.n_boot, seed=cfg.seed)
        best_metadata = best_metadata_model(probs)
        if planted_risk is not None:
            risk = planted_risk.reindex(breasts["breast_id"].astype(str)).to_numpy(float)
            if np.isnan(risk).any():
                warnings.append(
                    f"{int(np.isnan(risk).sum())} breast(s) have no planted risk: no oracle shown"
                )
            else:
                scores["oracle"] = score_models(y, {"oracle": risk}, groups, cfg.n_boot, seed=cfg.seed)[
                    "oracle"
                ]
        comparisons = paired_comparisons(
            y, probs, groups, cfg.n_boot, best_metadata=best_metadata, seed=cfg.seed
        )
    scanner = None
    if emb_matrix is not None and "image" in probs:
        with timings.part("incremental value + scanner probes"):
            scanner = scanner_checks(table, embeddings, breasts, emb_matrix, probs["image"], cols, cfg)
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


def scanner_checks(
    table: pd.DataFrame,
    embeddings: pd.DataFrame,
    breasts: pd.DataFrame,
    emb_matrix: ImageFeatures,
    image_prob: np.ndarray,
    cols: list[str],
    cfg: FusionConfig,
) -> ScannerChecks:
    """The image score's adjusted odds ratio, the probes on the image-level embeddings, AUC per machine/site."""
    from mammo_insight.fusion.incremental import adjusted_odds_ratio, image_score
    from mammo_insight.fusion.probes import run_probes, scanner_verdict, within_group_auc
    from mammo_insight.fusion.stratified import stratified_audit

    score, score_name = image_score(emb_matrix.logit, image_prob)
    odds = adjusted_odds_ratio(breasts, score, score_name)
    targets = [c for c in ("site_id", "machine_id", "laterality", "age", "density") if c in table.columns]
    images = embeddings[embeddings["level"] == "image"].drop(columns=targets, errors="ignore")
    images = images.merge(
        table[["image_id", *targets]].astype({"image_id": "string"}), on="image_id", how="inner"
    )
    probes = run_probes(images, cols, n_boot=min(cfg.n_boot, 100), seed=cfg.seed)
    within, tests = within_group_auc(breasts, score, n_boot=min(cfg.n_boot, 200), seed=cfg.seed)
    audit = stratified_audit(breasts, score, n_boot=min(cfg.n_boot, 200), seed=cfg.seed)
    return ScannerChecks(odds, probes, within, tests, scanner_verdict(probes, tests, audit), audit)


def explain(
    probs: dict[str, np.ndarray],
    y: np.ndarray,
    meta: pd.DataFrame | None,
    emb: ImageFeatures | None,
    *,
    cfg: FusionConfig,
    settings: dict[str, list[dict]],
    timings: Timings,
) -> dict[str, Any]:
    """Fit the final tree model (fused when possible) on every breast and explain a sample with SHAP.

    The final model uses the settings the folds chose most often. Returns the SHAP fields of FusionResult.
    """
    from mammo_insight.fusion.shap_tabular import top_interactions, tree_shap

    name = next(m for m in ("fused", "metadata", "image") if m in probs)
    use_meta = meta if name in ("fused", "metadata") else None
    use_emb = emb if name in ("fused", "image") else None
    with timings.part("final model"):
        model, X = fit_final(
            use_meta,
            use_emb,
            y,
            cfg.params,
            settings=consensus_settings(settings[name]),
            n_pca=cfg.n_pca,
            seed=cfg.seed,
        )
    rng = np.random.default_rng(cfg.seed)
    top = np.argsort(-probs[name], kind="stable")[: cfg.n_top_risk]
    sample = rng.permutation(len(X))[: cfg.shap_rows]
    rows = np.unique(np.concatenate([sample, top]))
    with timings.part("SHAP values"):
        explainer, explanation = tree_shap(model, X.iloc[rows], cfg.workers)
    groups = {f: ("image" if f.startswith(IMAGE_PREFIX) else "metadata") for f in X.columns}
    meta_cols = [f for f in X.columns if groups[f] == "metadata"]
    interactions = None
    if len(meta_cols) >= 2:
        with timings.part("SHAP interactions"):
            inter_rows = rng.permutation(len(X))[: cfg.interaction_rows]
            interactions = top_interactions(explainer, X.iloc[inter_rows], meta_cols)
    return {
        "explained_model": name,
        "shap_X": X.iloc[rows],
        "shap_explanation": explanation,
        "shap_rows": rows,
        "feature_groups": groups,
        "interactions": interactions,
        "top_risk": top,
    }
