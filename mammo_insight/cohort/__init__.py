"""The canonical cohort table and the adapters that map datasets onto it."""

from mammo_insight.cohort.schema import CANONICAL_COLUMNS, LABEL_COLUMNS, Cohort, validate_cohort

__all__ = ["CANONICAL_COLUMNS", "LABEL_COLUMNS", "Cohort", "validate_cohort"]
