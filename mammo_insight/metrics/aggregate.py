"""From image-level predictions to breast level, and the image + breast evaluation every run writes.

In RSNA the label belongs to the breast (prediction_id = patient_laterality): a breast is positive
when any of its images is. Its probability is the mean (the usual competition choice) or the max of
its images' probabilities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.errors import MammoInsightError
from mammo_insight.files import write_text_atomic
from mammo_insight.metrics.bootstrap import metrics_with_ci
from mammo_insight.metrics.core import BEST_F1, ThresholdRule

BREAST_LEVEL_COLUMNS = [
    "fold",
    "laterality",
    "age",
    "age_band",
    "density",
    "site_id",
    "machine_id",
    "implant",
    "dataset",
    "model",
]
LEVELS = {"image": None, "breast": "mean", "breast_max": "max"}


def require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MammoInsightError(f"{source}: missing column(s) {', '.join(missing)}")


def aggregate_to_breast(
    preds: pd.DataFrame, how: str = "mean", label: str = "cancer", prob: str = "prob"
) -> pd.DataFrame:
    """One row per breast_id: patient_id, prob (mean or max over its images), label (max over its images).

    Columns that describe the breast (fold, laterality, age, density, site, machine, ...) are carried
    over from its first image when present; image-level columns (view, image_id) are dropped.
    A breast whose images are all unlabelled keeps a NaN label.
    """
    if how not in ("mean", "max"):
        raise ValueError(f"unknown aggregation {how!r} (mean or max)")
    require_columns(preds, ["breast_id", "patient_id", prob], "predictions")
    agg: dict[str, tuple[str, str]] = {"patient_id": ("patient_id", "first"), prob: (prob, how)}
    if label in preds.columns:
        agg[label] = (label, "max")
    for col in BREAST_LEVEL_COLUMNS:
        if col in preds.columns and col not in agg:
            agg[col] = (col, "first")
    return preds.groupby("breast_id", sort=False, dropna=False).agg(**agg).reset_index()


def _threshold_for(threshold: float | Mapping[str, float] | None, level: str) -> float | None:
    if threshold is None or isinstance(threshold, (int, float)):
        return threshold
    return threshold.get(level)


def evaluate_predictions(
    preds: pd.DataFrame,
    threshold: float | Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    label: str = "cancer",
    prob: str = "prob",
    breast_preds: pd.DataFrame | None = None,
    rule: ThresholdRule = BEST_F1,
) -> dict:
    """The metrics.json body: {"image": ..., "breast": ..., "breast_max": ...}.

    Each level holds every metric as {"value", "ci_low", "ci_high"} (see `metrics_with_ci`), with
    intervals resampling patients. "breast" aggregates by the mean of the breast's images, "breast_max"
    by the max. `threshold` is one number for every level, a mapping level -> number (e.g. the
    thresholds a training run stored, for external validation), or None to tune one per level on
    these predictions by ``rule`` (`ThresholdRule`: best_f1, prevalence, or the highest cut reaching a
    target sensitivity; optimistic, and each level's
    "threshold_source" says so; read the tuned values back with `thresholds_of`).
    breast_preds: a model's own breast-level predictions (breast_id, patient_id, prob, label; e.g. a
    multi-view model): "breast" then scores them as they are instead of the mean over images.
    """
    require_columns(preds, ["breast_id", "patient_id", prob, label], "predictions")
    result: dict = {}
    for level, how in LEVELS.items():
        if level == "breast" and breast_preds is not None:
            require_columns(breast_preds, ["patient_id", prob, label], "breast predictions")
            frame = breast_preds
        else:
            frame = preds if how is None else aggregate_to_breast(preds, how, label, prob)
        result[level] = metrics_with_ci(
            frame[label],
            frame[prob],
            frame["patient_id"],
            _threshold_for(threshold, level),
            n_boot=n_boot,
            seed=seed,
            rule=rule,
        )
    return result


def thresholds_of(metrics: Mapping) -> dict[str, float]:
    """The per-level thresholds stored in a metrics.json body (to reuse them on external data)."""
    return {
        level: float(body["threshold"])
        for level, body in metrics.items()
        if isinstance(body, Mapping) and "threshold" in body and body["threshold"] is not None
    }


def to_jsonable(obj):
    """NaN and infinities as null, numpy scalars as Python numbers (strict JSON readers reject NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    return obj


def save_metrics_json(path: str | Path, metrics: Mapping) -> Path:
    """Write metrics as strict JSON (NaN -> null)."""
    return write_text_atomic(path, json.dumps(to_jsonable(metrics), indent=2))


def metrics_frame(metrics: Mapping, levels: list[str] | None = None) -> pd.DataFrame:
    """A tidy table (level, metric, value, ci_low, ci_high) of a metrics.json body; null reads as NaN."""
    rows = []
    for level, body in metrics.items():
        if levels is not None and level not in levels or not isinstance(body, Mapping):
            continue
        for name, cell in body.items():
            if isinstance(cell, Mapping) and "value" in cell:
                rows.append(
                    {
                        "level": level,
                        "metric": name,
                        **{
                            k: np.nan if cell.get(k) is None else float(cell[k])
                            for k in ("value", "ci_low", "ci_high")
                        },
                    }
                )
    return pd.DataFrame(rows, columns=["level", "metric", "value", "ci_low", "ci_high"])
