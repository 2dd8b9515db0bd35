"""A DICOM tree read from its headers (``--dataset dicom --root DIR``): a hospital's research export.

Every file under the root is scanned without its pixels (cohort.dicom_scan); each mammogram becomes one
row (cohort.dicom_record: hashed ids, laterality, view and view modifiers, age, hashed site and machine,
manufacturer and model, acquisition and geometry columns). Files that are not used are listed in the
``scan_failures`` report with their kind and reason. Labels come from an outcomes table
(``--outcomes FILE.csv --on patient|study|accession``, cohort.outcomes); without one every label is empty.

The salt of the hashed ids is the project's: the environment variable MAMMO_INSIGHT_SALT, else a random
one drawn on the first scan of this root and kept (mode 0600) beside the scan's journal, under
MAMMO_INSIGHT_SCAN_HOME (default ~/.cache/mammo-insight/dicom-scans/<hash of the root's path>).
An optional TOML mapping tunes the scan::

    [dicom]
    workers = 4          # header-reading processes (default: the CPUs this process may use)
    backend = "dask"     # or "local" (default); scheduler = "tcp://host:8786" for a cluster
    [dicom.tags]         # further tags kept as text columns: column = DICOM keyword
    series = "SeriesDescription"

``folder_cohort`` is predict's folder mode on the same scan: patient = the first sub-folder (RSNA layout),
else the hashed PatientID under a key drawn for that run only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.cohort.adapters.base import CohortDetails, DatasetAdapter
from mammo_insight.cohort.dicom_record import ACQUISITION_FACTORS, EXPOSURE_FACTORS
from mammo_insight.cohort.dicom_scan import DUPLICATE, FAILURE_COLUMNS, ScanConfig, ScanResult, scan_tree
from mammo_insight.cohort.outcomes import OutcomesSpec, join_outcomes, match_notes, read_outcomes
from mammo_insight.cohort.schema import CANONICAL_COLUMNS, Cohort, empty_canonical, validate_cohort
from mammo_insight.errors import CohortError, MammoInsightError
from mammo_insight.files import atomic_write

SALT_ENV, HOME_ENV = "MAMMO_INSIGHT_SALT", "MAMMO_INSIGHT_SCAN_HOME"
SALT_FILE = "salt"
DROPPED_FROM_TABLE = ["image_key", "modality"]
LABEL_MEANING = (
    "cancer = the outcome joined from the outcomes table (by patient, study or accession; "
    "per breast when it has a laterality column); empty without an outcomes table"
)


@dataclass(frozen=True)
class DicomOptions:
    """A mapping file's [dicom] table."""

    workers: int = 0  # 0: the CPUs this process may use
    backend: str = "local"
    scheduler: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def read_options(mapping: Path | None) -> DicomOptions:
    if mapping is None:
        return DicomOptions()
    try:
        data = tomllib.loads(Path(mapping).read_text()).get("dicom", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CohortError(f"cannot read the mapping {mapping}: {exc}") from exc
    known = {"workers", "backend", "scheduler", "tags"}
    if unknown := sorted(set(data) - known):
        raise CohortError(
            f"{mapping}: unknown key(s) {', '.join(unknown)} in [dicom]; known: {', '.join(sorted(known))}"
        )
    tags = data.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise CohortError(f"{mapping}: [dicom.tags] must map column names to DICOM keywords (text)")
    clash = sorted(set(tags) & set(CANONICAL_COLUMNS))
    if clash:
        raise CohortError(f"{mapping}: [dicom.tags] may not replace canonical column(s) {', '.join(clash)}")
    return DicomOptions(
        int(data.get("workers", 0)), str(data.get("backend", "local")), data.get("scheduler"), tags
    )


def scan_home(root: Path) -> Path:
    """Where the scan of ``root`` keeps its journal and salt."""
    base = Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "mammo-insight" / "dicom-scans")
    return base / hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]


def project_salt(home: Path) -> bytes:
    """MAMMO_INSIGHT_SALT, else the salt kept in ``home`` (drawn once, never written to any output)."""
    if value := os.environ.get(SALT_ENV):
        return value.encode()
    path = home / SALT_FILE
    if not path.is_file():
        home.mkdir(parents=True, exist_ok=True)
        # made private before the salt is written into it
        atomic_write(path, lambda p: (p.chmod(0o600), p.write_text(secrets.token_hex(32))))
    return path.read_text().strip().encode()


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def dicom_table(scan: ScanResult, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(canonical table with the header columns, failures with duplicates added, notes) from a scan."""
    images = scan.images.reset_index(drop=True)
    ids = images["image_key"]  # the hashed SOPInstanceUID (else file path): one file per image
    copies = ids.duplicated(keep="first")
    failures = scan.failures
    if copies.any():
        dup = pd.DataFrame(
            {
                "file": images.loc[copies, "file"],
                "kind": DUPLICATE,
                "reason": [
                    f"{f}: the same SOPInstanceUID as an earlier file; kept once"
                    for f in images.loc[copies, "file"]
                ],
            }
        )
        failures = pd.concat([failures, dup[FAILURE_COLUMNS]], ignore_index=True)
    images, ids = images[~copies].reset_index(drop=True), ids[~copies].reset_index(drop=True)
    notes = []
    table = empty_canonical(len(images))
    extras = [c for c in images.columns if c not in CANONICAL_COLUMNS and c not in DROPPED_FROM_TABLE]
    for col in [c for c in CANONICAL_COLUMNS if c in images.columns]:
        table[col] = images[col].to_numpy()
    table["image_id"] = ids.to_numpy()
    no_patient = table["patient_id"].isna()
    if no_patient.any():
        notes.append(f"{int(no_patient.sum())} image(s) without a PatientID: each is its own woman")
        table.loc[no_patient, "patient_id"] = "q" + table.loc[no_patient, "image_id"].str[1:]
    table["image_path"] = [str(root / f) for f in images["file"]]
    for col in extras:
        table[col] = images[col].to_numpy()
    unit = table["study_id"].fillna(table["patient_id"])
    table["images_in_study"] = unit.map(unit.value_counts()).astype(float)
    no_side = table["laterality"].isna()
    table["breast_id"] = table["patient_id"] + "_" + table["laterality"].fillna(table["image_id"])
    if no_side.any():
        notes.append(
            f"{int(no_side.sum())} image(s) without ImageLaterality/Laterality: each is its own breast"
        )
    return table, failures, notes


def _scan_notes(scan: ScanResult, failures: pd.DataFrame) -> list[str]:
    counts = dict(failures["kind"].value_counts())
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
    resumed = f" ({scan.resumed} from the journal of an earlier scan)" if scan.resumed else ""
    return [f"DICOM scan: {scan.n_files} file(s){resumed}; not used: {shown} (listed in scan_failures.csv)"]


class DicomAdapter(DatasetAdapter):
    name = "dicom"
    label_meaning = LABEL_MEANING
    post_outcome = ()  # nothing declared: the work-up markers are audited from the data (stats.leakage)

    def load(self, root: Path, mapping: Path | None = None, outcomes: OutcomesSpec | None = None) -> Cohort:
        options = read_options(mapping)
        home = scan_home(root)
        salt = project_salt(home)
        scan = scan_tree(
            ScanConfig(
                root=root,
                salt=salt,
                journal_dir=home,
                workers=options.workers or available_cpus(),
                engine=options.backend,
                address=options.scheduler,
                extra_tags=options.tags,
                show_progress=True,
            )
        )
        table, failures, notes = dicom_table(scan, root)
        notes = [*_scan_notes(scan, failures), *notes]
        if table.empty:
            raise CohortError(
                f"dicom: no mammogram header under {root} ({len(failures)} file(s) not used: "
                f"{', '.join(sorted(set(failures['kind']))) or 'no files'})"
            )
        reports = {"scan_failures": failures}
        if outcomes is not None:
            labels = read_outcomes(outcomes, salt)
            table, match = join_outcomes(table, labels, outcomes.on)
            reports["outcome_match"] = match
            notes.extend(match_notes(match, len(labels), outcomes.path))
        post_outcome = []
        if table["workup_view"].notna().any():  # a count of a study's images counts its work-up views too
            post_outcome.append("images_in_study")
            notes.append(
                f"{int(table['workup_view'].notna().sum())} work-up image(s) (spot compression, magnification: "
                "taken because a finding was seen); images_in_study counts them, so it is declared post-outcome"
            )
        factors = {
            c: k
            for c, k in {**ACQUISITION_FACTORS, **dict.fromkeys(options.tags, "categorical")}.items()
            if c in table
        }
        cohort = self.cohort(
            table,
            source=str(root),
            details=CohortDetails(
                factors=factors,
                post_outcome=post_outcome,
                exposure=[c for c in EXPOSURE_FACTORS if c in factors],
                notes=notes,
            ),
            laterality_may_be_unknown=True,
            image_root=root,
        )
        cohort.reports = reports
        return cohort


ADAPTER = DicomAdapter()


def _unique_ids(candidates: list[str]) -> list[str]:
    """The candidates with later duplicates suffixed -2, -3, ... (never an id already taken)."""
    taken, out = set(candidates), []
    seen: set[str] = set()
    for value in candidates:
        if value in seen:
            k = 2
            while f"{value}-{k}" in taken:
                k += 1
            value = f"{value}-{k}"
            taken.add(value)
        seen.add(value)
        out.append(value)
    return out


def _folder_row(rel: Path, image_id: str, record: dict[str, Any] | None) -> tuple[str | None, list[str]]:
    """(patient id, notes) of one file in predict's folder mode."""
    notes = []
    if len(rel.parts) > 1:
        patient: str | None = rel.parts[0]
    elif record is not None and record.get("patient_id"):
        patient = "pid-" + str(record["patient_id"])[1:13]
    else:
        patient = f"file-{image_id}"
        notes.append("patient unknown (no sub-folder, no PatientID)")
    if record is not None:
        if record.get("laterality") is None:
            notes.append("laterality unknown: scored as its own breast")
        if record.get("view") is None:
            notes.append("view unknown")
    return patient, notes


def folder_cohort(images_dir: Path, workers: int = 1) -> tuple[Cohort, pd.DataFrame]:
    """predict's folder mode: a canonical table for a folder of DICOMs without a CSV (image id = file stem,
    made unique), plus the files that could not be used (patient_id, image_id, file, reason, notes).

    The PatientID is hashed under a key drawn for this call only and kept in memory: images of one woman
    share an id within a run, and no id can be traced back to a PatientID by hashing guesses.
    """
    with tempfile.TemporaryDirectory(prefix="mammo-folder-scan-") as tmp:
        scan = scan_tree(ScanConfig(images_dir, secrets.token_bytes(32), Path(tmp), workers=workers))
    if not scan.n_files:
        raise MammoInsightError(f"{images_dir} holds no file to predict on")
    rows = {r["file"]: r for r in scan.images.to_dict("records")}
    reasons = dict(zip(scan.failures["file"], scan.failures["reason"], strict=True))
    files = sorted([*rows, *reasons])
    stems = pd.Series([Path(f).stem for f in files])
    image_ids = _unique_ids(
        [
            "_".join(Path(f).with_suffix("").parts) if dup else stem
            for f, stem, dup in zip(files, stems, stems.duplicated(keep=False), strict=True)
        ]
    )
    kept, failed = [], []
    for rel, image_id in zip(files, image_ids, strict=True):
        record = rows.get(rel)
        patient, notes = _folder_row(Path(rel), image_id, record)
        if record is None:  # no breast to attach it to: listed in the image table only
            nested = len(Path(rel).parts) > 1
            failed.append(
                {
                    "patient_id": patient if nested else None,
                    "image_id": image_id,
                    "file": rel,
                    "reason": reasons[rel],
                    "notes": "",
                }
            )
            continue
        lat = record.get("laterality")
        kept.append(
            {
                "patient_id": patient,
                "image_id": image_id,
                "laterality": lat,
                "view": record.get("view"),
                "breast_id": f"{patient}_{lat}" if lat else f"{patient}_{image_id}",
                "image_path": str(images_dir / rel),
                "file": rel,
                "notes": "; ".join(notes),
            }
        )
    table = pd.DataFrame(kept, columns=[*CANONICAL_COLUMNS, "file", "notes"])
    for col in CANONICAL_COLUMNS:
        if col not in ("patient_id", "image_id", "laterality", "view", "breast_id", "image_path"):
            table[col] = np.nan
    if len(table):  # no readable file at all is reported by the caller, with the reasons
        table = validate_cohort(table, source=str(images_dir), laterality_may_be_unknown=True)
    cohort = Cohort(table, dataset="folder", label_meaning="unknown (unlabelled)", image_root=images_dir)
    return cohort, pd.DataFrame(failed)
