"""Does the image score carry information beyond the metadata? Its odds ratio, crude and adjusted.

A logistic GLM of breast-level cancer on the image score (per standard deviation), with and without
the metadata factors (age per 10 years, density with a missing level, machine one-hot with rare
machines pooled, implant, and the cohort's own factors such as mini-MIAS's background tissue), standard errors clustered by woman (the eda stage's fit,
:func:`mammo_insight.stats.regression.fit_logistic`). An adjusted odds ratio whose interval excludes 1
says the score ranks cancers within strata of age, density and scanner, not only through them.

The score is the CNN's out-of-fold logit when the embeddings carry it, otherwise the logit of the
image-only model's out-of-fold probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import logit

from mammo_insight.stats.regression import fit_logistic, odds_ratio_rows, on_one_blas_thread

MIN_MACHINE_EVENTS = 5  # machines with fewer cancers are pooled into one level
SCORE_TERM = "image score (per SD)"
ADJUSTERS = ("age", "density", "machine_id", "implant")


def image_score(cnn_logit: np.ndarray | None, image_prob: np.ndarray) -> tuple[np.ndarray, str]:
    """(score per breast, its name): the CNN logit when present, else the image-only model's logit."""
    if cnn_logit is not None and np.isfinite(cnn_logit).all():
        return np.asarray(cnn_logit, dtype=float), "the CNN's out-of-fold logit"
    return logit(
        np.clip(image_prob, 1e-6, 1 - 1e-6)
    ), "the logit of the image-only model's out-of-fold probability"


def adjustment_design(breasts: pd.DataFrame, factors: Sequence[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Metadata columns of the adjusted model (no intercept) and the factors used; ``factors`` names the
    cohort's own feature columns in ``breasts`` (Cohort.factors), adjusted for too."""
    cols: dict[str, np.ndarray] = {}
    used = []
    y = breasts["cancer"].to_numpy()
    if "age" in breasts and pd.to_numeric(breasts["age"], errors="coerce").nunique() > 1:
        age = pd.to_numeric(breasts["age"], errors="coerce")
        cols["age (per 10 years)"] = ((age.fillna(age.median()) - 60.0) / 10.0).to_numpy()
        used.append("age")
    if "density" in breasts and breasts["density"].notna().any():
        # B, C, D against A; an unrecorded density has no dummy of its own: where it is missing for a whole
        # site (RSNA site 2) a missing level would duplicate that site's machine dummies
        level = breasts["density"].round().map({1.0: "A", 2.0: "B", 3.0: "C", 4.0: "D"})
        for v in ("B", "C", "D"):
            if ((level == v) & (y == 1)).any() and (level == "A").any():
                cols[f"density {v} vs A"] = (level == v).to_numpy(float)
        used.append("density")
    if "machine_id" in breasts and breasts["machine_id"].nunique() > 1:
        machine = breasts["machine_id"].astype(str)
        events = pd.Series(y).groupby(machine.to_numpy()).sum()
        rare = set(events.index[events < MIN_MACHINE_EVENTS])
        cols.update(_dummies(machine.where(~machine.isin(rare), "other"), "machine", y))
        used.append("machine_id")
    if "implant" in breasts and pd.to_numeric(breasts["implant"], errors="coerce").fillna(0).nunique() > 1:
        cols["implant"] = pd.to_numeric(breasts["implant"], errors="coerce").fillna(0).to_numpy(float)
        used.append("implant")
    for factor in factors:  # the dataset's own (mini-MIAS's background tissue: its density)
        if factor in breasts and breasts[factor].nunique() > 1:
            if pd.api.types.is_numeric_dtype(breasts[factor]):
                values = pd.to_numeric(breasts[factor], errors="coerce")
                cols[factor] = ((values - values.mean()) / (values.std() or 1.0)).fillna(0.0).to_numpy()
            else:
                cols.update(_dummies(breasts[factor], factor, y))
            used.append(factor)
    return pd.DataFrame(cols, index=breasts.index), used


def _dummies(level: pd.Series, name: str, y: np.ndarray) -> dict[str, np.ndarray]:
    """One-hot columns with the most common level as reference; levels without any cancer are pooled with it
    (a level with no event has no finite odds ratio)."""
    level = level.astype(str)
    reference = level.value_counts().index[0]
    events = pd.Series(y).groupby(level.to_numpy()).sum()
    level = level.where(~level.isin(events.index[events == 0]), reference)
    return {f"{name} {v}": (level == v).to_numpy(float) for v in sorted(set(level)) if v != reference}


@on_one_blas_thread
def adjusted_odds_ratio(
    breasts: pd.DataFrame, score: np.ndarray, score_name: str, factors: Sequence[str] = ()
) -> dict:
    """Crude and adjusted odds ratio of the image score (per SD), clustered by woman, as one dict."""
    z = (score - score.mean()) / (score.std() or 1.0)
    y = breasts["cancer"].astype(int).reset_index(drop=True)
    groups = breasts["patient_id"].astype(str).reset_index(drop=True)
    adjusters, used = adjustment_design(breasts.reset_index(drop=True), factors)
    out: dict = {
        "score": score_name,
        "adjusted_for": used,
        "n_breasts": len(y),
        "n_cancer": int(y.sum()),
    }
    for label, extra in (("crude", pd.DataFrame(index=y.index)), ("adjusted", adjusters)):
        design = pd.concat([pd.DataFrame({"const": 1.0, SCORE_TERM: z}), extra], axis=1)
        result, converged = fit_logistic(design, y, groups)
        rows, _ = odds_ratio_rows(label, result, list(design.columns))
        row = next((r for r in rows if r["term"] == SCORE_TERM), None)
        out[label] = {
            "odds_ratio": row["odds_ratio"] if row else float("nan"),
            "ci_low": row["ci_low"] if row else float("nan"),
            "ci_high": row["ci_high"] if row else float("nan"),
            "p_value": row["p_value"] if row else float("nan"),
            "converged": converged,
        }
        if label == "adjusted":
            out["adjusted_terms"] = rows
    return out
