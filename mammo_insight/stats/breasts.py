"""From images to breasts, the unit of the label: each factor's breast-level value by a stated rule."""

from __future__ import annotations

import pandas as pd
import polars as pl

from mammo_insight.stats.factors import MISSING, Factor, constant_within

BREAST_RULE = {
    "continuous": "the highest value among the breast's images",
    "ordinal": "the highest recorded level among the breast's images",
    "categorical": "the level most of the breast's images hold (ties: the first in level order)",
}


def _levels(factor: Factor) -> list[str]:
    return [lv for lv in factor.levels if lv != MISSING]


def breast_table(frame: pl.DataFrame, factors: list[Factor]) -> pd.DataFrame:
    """One row per breast: patient, label, mean age and each factor by its documented rule (BREAST_RULE);
    'missing' only when no image of the breast has a value.

    Levels are ranked once over the images, then aggregated with min/max; the most frequent level (a
    per-group mode, slow at a million images) is computed only for the few breasts whose images disagree.
    """
    ranked = frame.with_columns(
        pl.col(f.name).replace_strict(
            {lv: i for i, lv in enumerate(_levels(f))}, default=None, return_dtype=pl.Int64
        )
        for f in factors
        if f.kind != "continuous"
    )
    aggs = [pl.col("patient_id").first(), pl.col("cancer").max(), pl.col("age").mean()]
    aggs += [pl.col(f.name).max() for f in factors]
    modal = [f.name for f in factors if f.kind != "continuous" and not f.ordered]
    aggs += [pl.col(name).min().alias(f"{name} min") for name in modal]
    breasts = ranked.group_by("breast_id", maintain_order=True).agg(aggs)
    for name in modal:  # most frequent recorded level; ties go to the lowest rank
        mixed = breasts.filter(pl.col(f"{name} min") != pl.col(name))["breast_id"]
        if len(mixed):
            mode = (
                ranked.filter(pl.col("breast_id").is_in(mixed.implode()))
                .group_by("breast_id")
                .agg(pl.col(name).drop_nulls().mode().min().alias("mode"))
            )
            breasts = (
                breasts.join(mode, on="breast_id", how="left", maintain_order="left")
                .with_columns(pl.coalesce("mode", name).alias(name))
                .drop("mode")
            )
        breasts = breasts.drop(f"{name} min")
    breasts = breasts.with_columns(
        pl.col(f.name)
        .replace_strict(dict(enumerate(_levels(f))), default=MISSING, return_dtype=pl.String)
        .fill_null(MISSING)
        for f in factors
        if f.kind != "continuous"
    )
    return breasts.to_pandas()


def mixed_breast_notes(frame: pl.DataFrame, factors: list[Factor]) -> list[str]:
    """For each breast-level factor, the breasts whose images hold two or more recorded levels, and how they count."""
    notes = []
    breast_level = constant_within(frame, [f.name for f in factors if not f.binned_from], "breast")
    for f in factors:
        if f.name not in breast_level:
            continue
        recorded = frame.filter(pl.col(f.name).is_not_null())
        if f.kind != "continuous":
            recorded = recorded.filter(pl.col(f.name) != MISSING)
        per_breast = recorded.group_by("breast_id").agg(pl.col(f.name).n_unique().alias("k"))
        n_mixed = int((per_breast["k"] > 1).sum())
        if n_mixed:
            notes.append(
                f"{f.name}: {n_mixed:,} breast(s) have images with different values; in the rates such a breast "
                f"counts under each of its levels (so the levels' breasts sum to more than the breasts), and "
                f"in the models it takes {BREAST_RULE[f.kind]}."
            )
    return notes


def model_factors(frame: pl.DataFrame, factors: list[Factor]) -> tuple[list[Factor], list[str]]:
    """Screening-time factors usable at breast level, with notes on those left out and why."""
    names = {f.name for f in factors}
    kept, notes = [], []
    candidates = [f for f in factors if not (f.post_outcome or f.binned_from)]
    per_breast = constant_within(frame, [f.name for f in candidates if f.kind != "continuous"], "breast")
    for f in candidates:
        if f.name == "machine_id" and "site_id" in names:
            notes.append(
                "machine_id is not a term: machines are nested in sites (see the site x machine table), "
                "so machine and site cannot be separated"
            )
            continue
        if f.kind != "continuous" and f.name not in per_breast:
            notes.append(f"{f.name} varies within a breast, so it is not a breast-level term")
            continue
        kept.append(f)
    return kept, notes
