"""Headline counts of a cohort table, shared by the cohort command, eda and the reports."""

from __future__ import annotations

import pandas as pd

from mammo_insight.cohort.schema import UNITS


def cohort_counts(table: pd.DataFrame, known_units: tuple[str, ...] = UNITS) -> dict[str, int | None]:
    """Images, women, breasts and positives; None for a unit the source cannot identify (no invented
    women); positive counts only where some image carries a label (a table without labels has no
    positives to count, not zero of them)."""
    patients, breasts = "patient" in known_units, "breast" in known_units
    counts = {
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()) if patients else None,
        "n_breasts": int(table["breast_id"].nunique()) if breasts else None,
        "n_labelled_images": int(table["cancer"].notna().sum()),
    }
    if counts["n_labelled_images"]:
        positive = table["cancer"] == 1
        counts["n_positive_images"] = int(positive.sum())
        counts["n_positive_breasts"] = int(table.loc[positive, "breast_id"].nunique()) if breasts else None
    return counts
