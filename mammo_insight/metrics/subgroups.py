"""The same metrics per subgroup (age band, density, site, machine, view): where detection is harder."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammo_insight.metrics.aggregate import require_columns
from mammo_insight.metrics.bootstrap import metrics_with_ci
from mammo_insight.metrics.core import METRIC_NAMES, tune_threshold

AGE_BINS = [0, 50, 60, 70, 200]
AGE_LABELS = ["<50", "50-59", "60-69", "70+"]
DEFAULT_FACTORS = ["age_band", "density", "site_id", "machine_id", "view"]
SUBGROUP_COLUMNS = ["factor", "level", "n", "n_pos", "metric", "value", "ci_low", "ci_high"]


def add_age_band(df: pd.DataFrame, age: str = "age") -> pd.DataFrame:
    """A copy with an age_band column (<50, 50-59, 60-69, 70+) from age; unchanged when age is absent."""
    if age not in df.columns or "age_band" in df.columns:
        return df
    out = df.copy()
    out["age_band"] = pd.cut(
        pd.to_numeric(out[age], errors="coerce"), AGE_BINS, right=False, labels=AGE_LABELS
    )
    return out


def subgroup_metrics(
    df: pd.DataFrame,
    by: list[str] | None = None,
    label: str = "cancer",
    prob: str = "prob",
    *,
    threshold: float | None = None,
    n_boot: int = 200,
    seed: int = 0,
    metrics: list[str] | None = None,
) -> pd.DataFrame:
    """Tidy rows (factor, level, n, n_pos, metric, value, ci_low, ci_high) for every level of each factor.

    One threshold serves every subgroup (tuned best-F1 on the whole of `df` when None) so subgroups are
    compared at the same operating point. Factors absent from `df` are skipped; "age_band" is derived
    from "age" when needed; rows with a missing level are left out. Intervals resample women
    (patient_id; rows when the table has none).
    """
    df = add_age_band(df)
    require_columns(df, [label, prob], "subgroup table")
    by = [f for f in (by or DEFAULT_FACTORS) if f in df.columns]
    metrics = metrics or METRIC_NAMES
    labelled = df[df[label].notna()]
    if threshold is None:
        threshold = tune_threshold(labelled[label], labelled[prob])
    rows = []
    for factor in by:
        for level, part in labelled.groupby(factor, sort=True, dropna=True, observed=True):
            groups = part["patient_id"] if "patient_id" in part.columns else None
            res = metrics_with_ci(part[label], part[prob], groups, threshold, n_boot=n_boot, seed=seed)
            for name in metrics:
                rows.append(
                    {
                        "factor": factor,
                        "level": str(level),
                        "n": res["n"],
                        "n_pos": res["n_pos"],
                        "metric": name,
                        **res[name],
                    }
                )
    out = pd.DataFrame(rows, columns=SUBGROUP_COLUMNS)
    out[["value", "ci_low", "ci_high"]] = out[["value", "ci_low", "ci_high"]].astype(float).fillna(np.nan)
    return out
