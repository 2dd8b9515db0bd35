"""Headline counts of a cohort table, shared by the cohort command, eda and the reports."""

from __future__ import annotations

import pandas as pd


def cohort_counts(table: pd.DataFrame) -> dict[str, int]:
    """Image, woman and breast counts; positive counts only where some image carries a label (a table
    without labels has no positives to count, not zero of them)."""
    counts = {
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()),
        "n_breasts": int(table["breast_id"].nunique()),
        "n_labelled_images": int(table["cancer"].notna().sum()),
    }
    if counts["n_labelled_images"]:
        positive = table["cancer"] == 1
        counts["n_positive_images"] = int(positive.sum())
        counts["n_positive_breasts"] = int(table.loc[positive, "breast_id"].nunique())
    return counts
