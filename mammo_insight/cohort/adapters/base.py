"""The one contract every dataset adapter honours."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from mammo_insight.cohort.schema import Cohort


class DatasetAdapter(ABC):
    """Maps one dataset's files onto the canonical cohort table.

    ``load`` returns a Cohort whose table passed :func:`validate_cohort`: one row per image,
    canonical columns (absent ones empty), labels 1.0/0.0/NaN, ``image_path`` absolute or None,
    ``breast_id`` = patient_id + "_" + laterality. ``annotations`` hold lesion circles in original
    pixel coordinates (x right, y down). ``label_meaning`` is shown in every report.
    """

    name: str = ""
    label_meaning: str = ""

    @abstractmethod
    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        """Read the dataset under ``root`` (and the optional TOML mapping) into a Cohort."""
