"""The one contract every dataset adapter honours."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mammo_insight.cohort.schema import UNITS, Cohort, validate_cohort


@dataclass(frozen=True)
class CohortDetails:
    """What a load says about its cohort beyond the table: each field left empty takes the adapter's default.

    Bundled so that :meth:`DatasetAdapter.cohort` keeps a short signature while each adapter names only
    what it overrides (a generic mapping's label meaning and row unit, a DICOM tree's notes ...).
    """

    label_meaning: str | None = None
    post_outcome: Sequence[str] | None = None
    factors: Mapping[str, str] = field(default_factory=dict)
    exposure: Sequence[str] = ()
    known_units: tuple[str, ...] = UNITS
    notes: Sequence[str] = ()
    row_unit: str | None = None
    kind: str | None = None


class DatasetAdapter(ABC):
    """Maps one dataset's files onto the canonical cohort table.

    ``load`` returns a Cohort whose table passed :func:`validate_cohort`: one row per image,
    canonical columns (absent ones empty), labels 1.0/0.0/NaN, ``image_path`` absolute or None,
    ``breast_id`` = patient_id + "_" + laterality. ``annotations`` hold lesions (circles, boxes, masks:
    imaging.annotations) in original pixel coordinates (x right, y down). ``label_meaning`` is shown in every report.
    ``post_outcome`` names the columns decided after the outcome (the Cohort carries the list): the
    leakage audit, eda and fuse-train read it from the cohort, never from a global list.
    """

    name: str = ""
    label_meaning: str = ""
    post_outcome: tuple[str, ...] = ()
    row_unit: str = "image"  # what one row of the table is, in report words
    kind: str = "screening"  # schema.COHORT_KINDS: screening, diagnostic, biopsied lesions

    def cohort(
        self,
        table: pd.DataFrame,
        *,
        source: str,
        details: CohortDetails | None = None,
        annotations: pd.DataFrame | None = None,
        laterality_may_be_unknown: bool = False,
        image_root: Path | None = None,
        lines: Sequence[int] | None = None,
    ) -> Cohort:
        """The validated Cohort of ``table``, carrying this adapter's name, label meaning and post-outcome list
        unless ``details`` overrides them."""
        details = details or CohortDetails()
        label_meaning, post_outcome = details.label_meaning, details.post_outcome
        cohort = Cohort(
            validate_cohort(
                table, source=source, lines=lines, laterality_may_be_unknown=laterality_may_be_unknown
            ),
            dataset=self.name,
            label_meaning=self.label_meaning if label_meaning is None else label_meaning,
            factors=dict(details.factors),
            exposure=list(details.exposure),
            post_outcome=list(self.post_outcome if post_outcome is None else post_outcome),
            known_units=tuple(details.known_units),
            notes=list(details.notes),
            image_root=image_root,
            row_unit=details.row_unit or self.row_unit,
            kind=details.kind or self.kind,
        )
        if annotations is not None:
            cohort.annotations = annotations
        return cohort

    @abstractmethod
    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        """Read the dataset under ``root`` (and the optional TOML mapping) into a Cohort."""
