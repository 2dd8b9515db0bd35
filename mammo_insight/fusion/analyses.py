"""What run_fusion does once the models are cross-validated: the image-only model per view, the scanner
checks on the image model, and the SHAP explanation of the final tree model fitted on every breast.

Imports no torch (see mammo_insight.fusion.pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.fusion.config import FusionConfig
from mammo_insight.fusion.lgbm import (
    CANDIDATE_KEYS,
    IMAGE_PREFIX,
    FoldFitting,
    ImageFeatures,
    consensus_settings,
    cross_validate,
    fit_final,
)
from mammo_insight.progress import Timings

PER_VIEWS = ("CC", "MLO")


@dataclass(frozen=True)
class ScannerChecks:
    """What the images add beyond the metadata, and whether the image model reads the scanner."""

    odds_ratio: dict  # fusion.incremental.adjusted_odds_ratio
    probes: pd.DataFrame  # fusion.probes.run_probes
    within: pd.DataFrame  # the image score's ROC-AUC per machine and site
    heterogeneity: dict  # factor -> Cochran's Q test
    verdict: str
    stratified: pd.DataFrame = field(default_factory=pd.DataFrame)  # fusion.stratified.stratified_audit


def _view_embeddings(emb: pd.DataFrame, breast_ids: pd.Series, cols: list[str], view: str) -> ImageFeatures:
    """Mean image embedding (and logit) of the breast's images of one view (NaN rows for breasts without it)."""
    rows = emb[(emb["level"] == "image") & (emb["view"] == view)]
    mean = rows.groupby("breast_id")[[c for c in [*cols, "cnn_logit"] if c in rows.columns]].mean()
    return ImageFeatures.from_frame(mean.reindex(breast_ids.astype(str).to_numpy()), cols)


def per_view_auc(
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
            fitting=FoldFitting(params, n_pca=cfg.n_pca, seed=cfg.seed),
            groups=b["patient_id"].astype(str).to_numpy()[have],
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


def scanner_checks(
    table: pd.DataFrame,
    embeddings: pd.DataFrame,
    breasts: pd.DataFrame,
    emb_matrix: ImageFeatures,
    image_prob: np.ndarray,
    cols: list[str],
    cfg: FusionConfig,
    factors: Sequence[str] = (),
) -> ScannerChecks:
    """The image score's adjusted odds ratio (adjusted for the canonical factors and the cohort's own
    ``factors``), the probes on the image-level embeddings, AUC per machine/site."""
    from mammo_insight.fusion.incremental import adjusted_odds_ratio, image_score
    from mammo_insight.fusion.probes import run_probes, scanner_verdict, within_group_auc
    from mammo_insight.fusion.stratified import stratified_audit

    score, score_name = image_score(emb_matrix.logit, image_prob)
    odds = adjusted_odds_ratio(breasts, score, score_name, factors)
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
