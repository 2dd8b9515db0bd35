"""Kept for `cli/eda.py` until the eda stage calls :func:`mammo_insight.cohort.source.load_cohort_source`."""

from __future__ import annotations

from pathlib import Path

from mammo_insight.cohort.schema import Cohort
from mammo_insight.cohort.source import PARQUET_LABEL, load_cohort_source

__all__ = ["PARQUET_LABEL", "load_study_cohort"]


def load_study_cohort(dataset: str | None, root: Path | None, mapping: Path | None, cohort: Path | None
                      ) -> tuple[Cohort, dict[str, Path]]:
    """(cohort, input files to hash in the manifest): :func:`load_cohort_source` under its old name."""
    return load_cohort_source(cohort=cohort, dataset=dataset, root=root, mapping=mapping)
