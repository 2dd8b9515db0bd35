"""fuse-train's settings: folds, leaky and work-up columns, PCA size, SHAP sample sizes, the model settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mammo_insight.fusion.lgbm import LgbmParams
from mammo_insight.fusion.logistic import LogisticSettings


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
