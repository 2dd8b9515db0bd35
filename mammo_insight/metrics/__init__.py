"""The one metrics module that train, evaluate, fuse-train and explain share.

Point metrics (core), patient-resampling bootstrap intervals and paired tests (bootstrap), image to
breast aggregation and the metrics.json body (aggregate), per-subgroup tables (subgroups) and
baselines scored by the same functions (baselines).
"""

from mammo_insight.metrics.aggregate import (
    aggregate_to_breast,
    evaluate_predictions,
    metrics_frame,
    save_metrics_json,
    thresholds_of,
    to_jsonable,
)
from mammo_insight.metrics.baselines import (
    BASELINES,
    baseline_predictions,
    evaluate_baselines,
    features_logreg_baseline,
    majority_baseline,
    pixel_logreg_baseline,
    prevalence_random_baseline,
)
from mammo_insight.metrics.bootstrap import delong_test, metrics_with_ci, paired_bootstrap
from mammo_insight.metrics.core import (
    METRIC_NAMES,
    ThresholdRule,
    average_precision,
    calibration_table,
    net_benefit,
    pf1,
    point_metrics,
    roc_auc,
    tune_threshold,
)
from mammo_insight.metrics.subgroups import add_age_band, subgroup_metrics

__all__ = [
    "BASELINES",
    "METRIC_NAMES",
    "ThresholdRule",
    "add_age_band",
    "aggregate_to_breast",
    "average_precision",
    "baseline_predictions",
    "calibration_table",
    "delong_test",
    "evaluate_baselines",
    "evaluate_predictions",
    "features_logreg_baseline",
    "majority_baseline",
    "metrics_frame",
    "metrics_with_ci",
    "net_benefit",
    "paired_bootstrap",
    "pf1",
    "pixel_logreg_baseline",
    "point_metrics",
    "prevalence_random_baseline",
    "roc_auc",
    "save_metrics_json",
    "subgroup_metrics",
    "thresholds_of",
    "to_jsonable",
    "tune_threshold",
]
