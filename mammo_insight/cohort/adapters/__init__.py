"""Dataset adapters: each maps one dataset layout onto the canonical cohort table.

The contract (every adapter honours it, see base.DatasetAdapter): ``load(root, mapping)`` returns a
validated :class:`~mammo_insight.cohort.schema.Cohort` whose table is row-aligned with the images,
labels 1/0/NaN, canonical column names, and whose ``label_meaning`` says what "cancer" means here.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mammo_insight.cohort.adapters.base import DatasetAdapter
from mammo_insight.cohort.schema import Cohort, label_conflicts
from mammo_insight.errors import CohortError

if TYPE_CHECKING:
    from mammo_insight.cohort.outcomes import OutcomesSpec

log = logging.getLogger(__name__)

# name -> module that defines ADAPTER; imported lazily so one broken optional reader cannot break the rest.
ADAPTER_MODULES = {
    "rsna": "mammo_insight.cohort.adapters.rsna",
    "mias": "mammo_insight.cohort.adapters.mias",
    "cbis": "mammo_insight.cohort.adapters.cbis",
    "cmmd": "mammo_insight.cohort.adapters.cmmd",
    "inbreast": "mammo_insight.cohort.adapters.inbreast",
    "generic": "mammo_insight.cohort.adapters.generic",
    "dicom": "mammo_insight.cohort.adapters.dicom",
}


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter registered under ``name`` (rsna, mias, cbis, cmmd, inbreast, generic, dicom)."""
    key = name.lower()
    if key not in ADAPTER_MODULES:
        raise CohortError(f"unknown dataset '{name}'; choose one of {', '.join(ADAPTER_MODULES)}")
    return importlib.import_module(ADAPTER_MODULES[key]).ADAPTER


def load_cohort(
    dataset: str, root: str | Path, mapping: str | Path | None = None, outcomes: OutcomesSpec | None = None
) -> Cohort:
    """Load and validate any supported dataset; ``outcomes`` (a table of labels joined by patient, study or
    accession) only for the dicom dataset, whose tree carries no labels of its own."""
    root = Path(root)
    if not root.exists():
        raise CohortError(f"dataset root {root} does not exist")
    mapping = Path(mapping) if mapping else None
    if outcomes is not None:
        if dataset.lower() != "dicom":
            raise CohortError(
                f"--outcomes joins labels to a DICOM tree: use it with --dataset dicom, not {dataset!r}"
            )
        cohort = get_adapter(dataset).load(root, mapping, outcomes)
    else:
        cohort = get_adapter(dataset).load(root, mapping)
    if cohort.image_root is None:
        cohort.image_root = root
    conflicts = label_conflicts(cohort.table)
    if len(conflicts):
        log.warning(
            "%s: %d breast(s) have images labelled both 0 and 1 (e.g. %s): each counts as positive "
            "(a breast's label is the maximum of its images'); eda lists them in tables/label_conflicts.csv",
            dataset,
            len(conflicts),
            ", ".join(conflicts["breast_id"].astype(str)[:5]),
        )
    return cohort
