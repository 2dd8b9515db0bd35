"""Headline counts of a cohort table, shared by the cohort command, eda and the reports."""

from __future__ import annotations

import pandas as pd


def cohort_counts(table: pd.DataFrame) -> dict[str, int]:
    positive = table["cancer"] == 1
    return {
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()),
        "n_breasts": int(table["breast_id"].nunique()),
        "n_positive_images": int(positive.sum()),
        "n_positive_breasts": int(table.loc[positive, "breast_id"].nunique()),
    }
