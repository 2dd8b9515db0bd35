"""CMMD (The Chinese Mammography Database, TCIA) layout.

root/CMMD_clinicaldata_revision.xlsx (or a CSV export of it, ',' or ';' separated) with columns
ID1, LeftRight, Age, number, abnormality, classification (Benign/Malignant), subtype: one row per
breast with a biopsied lesion. DICOMs under root/CMMD/ (or anywhere under root): TCIA's layout is
CMMD/<ID1>/<study>/<series>/1-N.dcm.

Laterality and view come from each DICOM header, never from file order (1-1, 1-2 ... follow no
documented convention): laterality from ImageLaterality (else Laterality), view from ViewPosition
(else ViewCodeSequence's SNOMED code or meaning). The patient is the header's PatientID (CMMD's
anonymised ID1), else the folder directly under the DICOM root. When a header lacks laterality and
the clinical table has exactly one side for that woman, that side is used (logged).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from mammo_insight.cohort.adapters.base import CohortDetails, DatasetAdapter
from mammo_insight.cohort.adapters.tables import file_lines, read_table, require_columns
from mammo_insight.cohort.dicom_header import HEADER_TAGS, laterality_of, view_of
from mammo_insight.cohort.schema import Cohort, empty_canonical
from mammo_insight.errors import CohortError
from mammo_insight.progress import track

log = logging.getLogger(__name__)

TABLE_NAMES = ["CMMD_clinicaldata_revision.xlsx", "CMMD_clinicaldata_revision.csv"]
REQUIRED = ["ID1", "LeftRight", "classification"]
LABEL = {"malignant": 1.0, "benign": 0.0}
# SNOMED CT codes of the two standard views (DICOM CID 4014) and their usual meanings.


def find_clinical_table(root: Path) -> Path:
    for name in TABLE_NAMES:
        if (root / name).exists():
            return root / name
    found = sorted([*root.glob("CMMD_clinicaldata*.xlsx"), *root.glob("CMMD_clinicaldata*.csv")])
    if not found:
        raise CohortError(f"cmmd: no clinical table ({' or '.join(TABLE_NAMES)}) in {root}")
    return found[0]


def read_clinical(path: Path) -> pd.DataFrame:
    """One row per (ID1, side): label, age, abnormality, subtype; malignant wins over duplicate rows."""
    raw = read_table(path, sep=None if path.suffix.lower() == ".csv" else ",")
    require_columns(raw, REQUIRED, path, "cmmd")
    side = raw["LeftRight"].str.upper()
    bad_side = ~side.isin(["L", "R"])
    if bad_side.any():
        raise CohortError(
            f"cmmd: {path} column 'LeftRight' has unknown value(s) {sorted(set(side[bad_side]))[:5]} "
            f"in {file_lines(bad_side.to_numpy().nonzero()[0])}; expected L or R"
        )
    label = raw["classification"].str.lower().map(LABEL)
    unknown = label.isna() & (raw["classification"] != "")
    if unknown.any():
        log.warning(
            "cmmd: %s column 'classification' has unknown value(s) %s in %s; label left empty",
            path,
            sorted(set(raw.loc[unknown, "classification"]))[:5],
            file_lines(unknown.to_numpy().nonzero()[0]),
        )
    table = pd.DataFrame(
        {
            "patient_id": raw["ID1"],
            "laterality": side,
            "cancer": label,
            "age": raw.get("Age", ""),
            "abnormality": raw.get("abnormality", ""),
            "classification": raw["classification"],
            "subtype": raw.get("subtype", ""),
        }
    )
    table = table.replace({"": None})
    table = table.sort_values("cancer", ascending=False, na_position="last", kind="stable")
    return table.drop_duplicates(["patient_id", "laterality"]).reset_index(drop=True)


def read_headers(dicom_root: Path) -> tuple[pd.DataFrame, list[str]]:
    """patient_id, laterality, view, image_path per DICOM under dicom_root, and the files that failed."""
    files = sorted(dicom_root.rglob("*.dcm"))
    rows, failures = [], []
    for path in track(files, "cmmd: reading DICOM headers", total=len(files)):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        except (InvalidDicomError, OSError, ValueError) as exc:
            failures.append(f"{path}: {exc}")
            continue
        rel = path.relative_to(dicom_root)
        folder_patient = rel.parts[0] if len(rel.parts) > 1 else None
        rows.append(
            {
                "patient_id": str(ds.get("PatientID", "") or "").strip() or folder_patient,
                "laterality": laterality_of(ds),
                "view": view_of(ds),
                "image_path": str(path.resolve()),
                "image_id": rel.with_suffix("").as_posix(),
            }
        )
    return pd.DataFrame(
        rows, columns=["patient_id", "laterality", "view", "image_path", "image_id"]
    ), failures


class CmmdAdapter(DatasetAdapter):
    name = "cmmd"
    kind = "biopsied lesions"
    # the biopsy's verdict and the tumour's molecular subtype; the lesion's type (calcification, mass, both) is
    # what a reader sees on the film before the biopsy: a factor, by the rule CBIS's abnormality_type follows
    post_outcome = ("classification", "subtype")
    label_meaning = (
        "cancer = 1 when CMMD's clinical table classifies the breast's biopsied lesion as Malignant, "
        "0 when Benign (every CMMD breast in the table holds a lesion: this is lesion malignancy, "
        "not screening detection). Images of a breast absent from the clinical table have an "
        "empty label. 'subtype' (molecular subtype, malignant cases only) is known after the outcome; "
        "'abnormality' (calcification/mass/both) is the lesion's appearance on the film, read before the "
        "biopsy, and is analysed as a factor."
    )

    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        table_path = find_clinical_table(root)
        clinical = read_clinical(table_path)
        dicom_root = root / "CMMD" if (root / "CMMD").is_dir() else root
        images, failures = read_headers(dicom_root)
        for failure in failures:
            log.warning("cmmd: unreadable DICOM %s", failure)
        if images.empty:
            log.warning(
                "cmmd: no DICOMs under %s; one row per breast of %s, without image paths",
                dicom_root,
                table_path,
            )
            images = clinical[["patient_id", "laterality"]].assign(
                view=None, image_path=None, image_id=clinical["patient_id"] + "_" + clinical["laterality"]
            )
        images = self._fill_laterality(images, clinical)
        merged = images.merge(
            clinical.drop(columns="age"), on=["patient_id", "laterality"], how="left", validate="many_to_one"
        )
        # Age belongs to the woman: images of a breast without a clinical row still get it.
        merged["age"] = merged["patient_id"].map(
            clinical.dropna(subset=["age"]).groupby("patient_id")["age"].first()
        )
        unknown = sorted(set(merged["patient_id"]) - set(clinical["patient_id"]))
        if unknown:
            log.warning(
                "cmmd: %d woman/women with DICOMs are not in %s (label empty), e.g. %s",
                len(unknown),
                table_path,
                ", ".join(unknown[:5]),
            )
        table = empty_canonical(len(merged))
        for col in ("patient_id", "image_id", "laterality", "view", "image_path", "age", "cancer"):
            table[col] = merged[col].to_numpy()
        for col in ("abnormality", "classification", "subtype"):
            table[col] = merged[col].to_numpy()
        return self.cohort(
            table, source=str(table_path), details=CohortDetails(factors={"abnormality": "categorical"})
        )

    @staticmethod
    def _fill_laterality(images: pd.DataFrame, clinical: pd.DataFrame) -> pd.DataFrame:
        """Header-less laterality from a one-sided clinical record; images still unknown are dropped (listed)."""
        sides = clinical.groupby("patient_id")["laterality"].agg(lambda s: s.iloc[0] if len(s) == 1 else None)
        missing = images["laterality"].isna()
        if missing.any():
            fill = images.loc[missing, "patient_id"].map(sides)
            images.loc[missing, "laterality"] = fill
            log.warning(
                "cmmd: %d DICOM(s) without ImageLaterality; side taken from the clinical table for %d",
                int(missing.sum()),
                int(fill.notna().sum()),
            )
        unresolved = images["laterality"].isna()
        if unresolved.any():
            log.warning(
                "cmmd: dropped %d DICOM(s) whose side is unknown: %s",
                int(unresolved.sum()),
                ", ".join(images.loc[unresolved, "image_path"].head(5)),
            )
        return images[~unresolved].reset_index(drop=True)


ADAPTER = CmmdAdapter()
