"""Breast-level metadata features for the fusion model, with leaky columns kept out by default.

The label belongs to the breast (RSNA's prediction_id), so every feature is aggregated to one row per
breast: age, density (ordinal A=1..D=4 plus a missing flag), site and machine (categorical), implant,
laterality, which views exist and how many images, and the dataset's own factors (Cohort.factors: mini-MIAS's
background tissue, a mapping's declared columns), categorical or continuous as the cohort declares them. Columns decided after the outcome (the cohort's post-outcome list,
which its adapter declares) and those the leakage audit calls leaky never enter unless the caller names
them in ``include_leaky``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.errors import MammoInsightError

log = logging.getLogger(__name__)

DENSITY_ORDINAL = {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0}
MAIN_VIEWS = ("CC", "MLO")
CATEGORICAL = ("site_id", "machine_id")
# feature -> the cohort column it is derived from (used to drop features whose source column leaks)
FEATURE_SOURCES = {
    "age": "age",
    "density": "density",
    "density_missing": "density",
    "site_id": "site_id",
    "machine_id": "machine_id",
    "implant": "implant",
    "laterality_left": "laterality",
    "has_CC": "view",
    "has_MLO": "view",
    "n_other_views": "view",
    "n_images": "view",
}
# how many images a breast has: extra views are often diagnostic work-up taken after a suspicious finding,
# so they may carry the outcome; out of the default feature set, in (and named in a warning) on request
WORKUP_FEATURES = ("n_images", "n_other_views")


def leaky_columns_of(
    table: pd.DataFrame, post_outcome: Sequence[str] = tuple(POST_OUTCOME_COLUMNS)
) -> list[str]:
    """The leakage audit's leaky columns plus the cohort's post-outcome columns (Cohort.post_outcome)."""
    from mammo_insight.stats.leakage import leaky_columns

    return sorted(set(leaky_columns(table, post_outcome=post_outcome)) | set(post_outcome))


def breast_features(
    table: pd.DataFrame,
    exclude: Sequence[str] = (),
    include_leaky: Sequence[str] = (),
    *,
    workup: bool = False,
    factors: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per breast: breast_id, patient_id, cancer, then the feature columns (returned as a list).

    ``exclude``: cohort columns whose features are dropped (the leaky ones). ``include_leaky``: cohort
    columns added as features anyway (max over the breast's images), named ``leaky_<column>``.
    ``workup``: keep the image counts (WORKUP_FEATURES), which may mark work-up after a suspicious finding.
    ``factors``: the cohort's own columns (Cohort.factors, column -> "categorical" or "continuous"), each a
    feature under its own name (the breast's first level, or its mean), unless ``exclude`` names it.
    """
    missing = [c for c in ("breast_id", "patient_id", "cancer") if c not in table.columns]
    if missing:
        raise MammoInsightError(f"cohort table lacks column(s) {', '.join(missing)}")
    unknown = [c for c in include_leaky if c not in table.columns]
    if unknown:
        raise MammoInsightError(
            f"--include-leaky: column(s) {', '.join(unknown)} not in the cohort table "
            f"(columns: {', '.join(map(str, table.columns))})"
        )
    density = table["density"].astype(object).map(DENSITY_ORDINAL) if "density" in table else np.nan
    t = table.assign(
        _density=pd.to_numeric(density, errors="coerce").astype("float64"),
        _cc=(table["view"] == "CC").astype(float),
        _mlo=(table["view"] == "MLO").astype(float),
        _other=(~table["view"].isin(MAIN_VIEWS)).astype(float),
        _left=(table["laterality"] == "L").astype(float).where(table["laterality"].isin(("L", "R"))),
    )
    g = t.groupby("breast_id", sort=True)
    out = pd.DataFrame(
        {
            "patient_id": g["patient_id"].first(),
            "cancer": g["cancer"].max(),
            "age": g["age"].mean().astype("float64"),
            "density": g["_density"].mean(),
            "site_id": g["site_id"].first(),
            "machine_id": g["machine_id"].first(),
            "implant": g["implant"].max(),
            "laterality_left": g["_left"].first(),
            "has_CC": g["_cc"].max(),
            "has_MLO": g["_mlo"].max(),
            "n_other_views": g["_other"].sum(),
            "n_images": g.size().astype(float),
        }
    )
    out["density_missing"] = out["density"].isna().astype(float)
    for col in CATEGORICAL:
        out[col] = _levels(out[col])
    features = [
        f for f, src in FEATURE_SOURCES.items() if src not in exclude and (workup or f not in WORKUP_FEATURES)
    ]
    features += _factor_features(out, t, factors or {}, exclude)
    features = [f for f in features if not _constant(out[f])]
    for col in include_leaky:
        name = f"leaky_{col}"
        out[name] = pd.to_numeric(t[col], errors="coerce").astype("float64").groupby(t["breast_id"]).max()
        features.append(name)
    return out.reset_index()[["breast_id", "patient_id", "cancer", *features]], features


def _factor_features(
    out: pd.DataFrame, table: pd.DataFrame, factors: Mapping[str, str], exclude: Sequence[str]
) -> list[str]:
    """Add the cohort's own factor columns to ``out`` (one row per breast); returns their names.

    A name that collides with a built-in feature or a bookkeeping column is left out (the built-in wins).
    """
    taken = {"patient_id", "cancer", "breast_id", *FEATURE_SOURCES}
    names = [c for c in factors if c in table.columns and c not in exclude and c not in taken]
    g = table.groupby("breast_id", sort=True)
    for col in names:
        if factors[col] == "continuous":
            out[col] = pd.to_numeric(table[col], errors="coerce").groupby(table["breast_id"]).mean()
        else:
            out[col] = _levels(g[col].first())
    return names


def _levels(values: pd.Series) -> pd.Series:
    """A categorical feature's values as levels, an empty cell its own level "missing" (it may mean something)."""
    return values.astype("string").fillna("missing").astype("category")


def categorical_features(frame: pd.DataFrame) -> list[str]:
    """The columns the models treat as levels (one-hot in the logistic model): category or text dtype."""
    return [
        c
        for c in frame.columns
        if isinstance(frame[c].dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(frame[c].dtype)
    ]


def _constant(values: pd.Series) -> bool:
    """A feature with one value (or all empty) carries nothing; dropping it keeps SHAP plots readable."""
    return values.nunique(dropna=False) <= 1
