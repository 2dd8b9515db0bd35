"""Where a command's cohort comes from: ``--cohort FILE.parquet``, or ``--dataset/--root[/--mapping]``.

Every command that reads a cohort goes through :func:`load_cohort_source`, so each one accepts the same
two forms, validates the same way and hashes the same input files into its manifest. A cohort file
written by :func:`write_cohort_file` (the ``cohort`` command) keeps what its adapter declared: dataset
name, label meaning, factors and post-outcome columns; any other canonical parquet gets the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mammo_insight.cohort.outcomes import OutcomesSpec
from mammo_insight.cohort.schema import COHORT_KINDS, POST_OUTCOME_COLUMNS, UNITS, Cohort, validate_cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.files import atomic_write

PARQUET_LABEL = "as recorded in the cohort file (cancer = 1 positive, 0 negative, empty unknown)"
ATTRS_KEY = "mammo_insight_cohort"  # parquet metadata (pandas DataFrame.attrs) written by write_cohort_file
# dataset files hashed into the manifest when they sit in --root
ROOT_FILES = ("train.csv", "test.csv", "Info.txt", "manifest.csv")


def load_cohort_source(
    *,
    cohort: Path | None,
    dataset: str | None,
    root: Path | None,
    mapping: Path | None,
    outcomes: OutcomesSpec | None = None,
) -> tuple[Cohort, dict[str, Path]]:
    """(the validated cohort, input files to hash in the manifest) from exactly one of the two forms;
    ``outcomes``: the labels of a dicom tree (``--outcomes``), hashed into the manifest too."""
    if cohort is not None and (root is not None or mapping is not None or outcomes is not None):
        raise MammoInsightError(
            "give either --cohort FILE.parquet or --dataset/--root (with --mapping for generic, --outcomes "
            "for dicom), not both"
        )
    if cohort is not None:
        return read_cohort_file(Path(cohort), dataset=dataset), {"cohort": Path(cohort)}
    if dataset is None or root is None:
        raise MammoInsightError(
            "give --dataset NAME and --root DIR (and --mapping M.toml for generic), or --cohort FILE.parquet"
        )
    from mammo_insight.cohort.adapters import load_cohort

    root = Path(root)
    loaded = load_cohort(dataset, root, mapping, outcomes)
    inputs: dict[str, Path] = {"mapping": Path(mapping)} if mapping else {}
    if outcomes is not None:
        inputs["outcomes"] = Path(outcomes.path)
    for name in ROOT_FILES:
        if (root / name).is_file():
            inputs[name] = root / name
    return loaded, inputs


def read_cohort_file(path: Path, dataset: str | None = None) -> Cohort:
    """A canonical cohort .parquet, validated; ``dataset`` names it when the file does not."""
    if not path.is_file():
        raise MammoInsightError(f"cohort file {path} does not exist")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise MammoInsightError(f"cannot read {path} as parquet: {exc}") from exc
    meta: dict[str, Any] = dict(table.attrs.get(ATTRS_KEY) or {})
    table.attrs.clear()
    cohort = Cohort(
        validate_cohort(table, source=str(path)),
        dataset=dataset or meta.get("dataset") or path.stem,
        label_meaning=meta.get("label_meaning") or PARQUET_LABEL,
        factors=dict(meta.get("factors") or {}),
        post_outcome=list(meta.get("post_outcome") or POST_OUTCOME_COLUMNS),
        exposure=[str(c) for c in meta.get("exposure") or []],
        known_units=tuple(meta.get("known_units") or UNITS),
        notes=list(meta.get("notes") or []),
        row_unit=str(meta.get("row_unit") or "image"),
        kind=meta["kind"] if meta.get("kind") in COHORT_KINDS else "screening",
    )
    annotations = path.with_name(path.stem + "_annotations.parquet")
    if annotations.is_file():
        cohort.annotations = pd.read_parquet(annotations)
    return cohort


def write_cohort_file(cohort: Cohort, path: Path) -> Path:
    """The cohort as a canonical .parquet that keeps its declarations (and its lesions beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = cohort.table.copy()
    table.attrs = {
        ATTRS_KEY: {
            "dataset": cohort.dataset,
            "label_meaning": cohort.label_meaning,
            "factors": dict(cohort.factors),
            "post_outcome": list(cohort.post_outcome),
            "exposure": list(cohort.exposure),
            "known_units": list(cohort.known_units),
            "notes": list(cohort.notes),
            "row_unit": cohort.row_unit,
            "kind": cohort.kind,
        }
    }
    atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
    if len(cohort.annotations):
        lesions = path.with_name(path.stem + "_annotations.parquet")
        atomic_write(lesions, lambda tmp: cohort.annotations.to_parquet(tmp, index=False))
    return path
