"""INbreast (Moreira et al. 2012) release layout.

root/INbreast.csv (';'-separated, as released) or root/INbreast.xls with columns Patient ID,
Patient age, Laterality, View, Acquisition date (or Date), File Name, ACR, Bi-Rads; DICOMs in
root/AllDICOMs/<File Name>_<patient hash>_MG_<L|R>_<view>_ANON.dcm.

The release blanks Patient ID and age ("removed"), so the woman is taken from the patient hash in
the DICOM file name. Without the DICOMs no woman (hence no breast) can be identified: the cohort then
declares only the image as a known unit, so eda gives image-level figures and says that woman- and
breast-level ones are unavailable, instead of counting each image as a woman. When only some images
lack their DICOM, those few are their own woman, and the cohort's notes say how many.

The official INbreast.xls ends with a totals row (counts under Bi-Rads and the finding columns, no File
Name); rows without a File Name are not images and are skipped, with a note naming their lines. The
finding columns (Mass, Micros, Distortion, Asymmetry, Findings notes) describe what the reading found:
they are kept as ``finding_*`` columns and declared post-outcome, like the BI-RADS assessment.

Lesion outlines, when root/AllXML exists, come from AllXML/<File Name>.xml (OsiriX ROI exports, Apple
plists): see :func:`read_rois`.
"""

from __future__ import annotations

import logging
import plistlib
import re
import xml.parsers.expat
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from mammo_insight.cohort.adapters.base import CohortDetails, DatasetAdapter
from mammo_insight.cohort.adapters.tables import file_lines, first_present, read_table, require_columns
from mammo_insight.cohort.schema import UNITS, Cohort, empty_canonical
from mammo_insight.errors import CohortError

log = logging.getLogger(__name__)

TABLE_NAMES = ["INbreast.csv", "INbreast.xls", "INbreast.xlsx"]
REQUIRED = ["Laterality", "View", "File Name", "Bi-Rads"]
BLANKED = {"", "removed"}
# header prefixes of the finding columns (lower case) -> the column name in the cohort table
FINDINGS = {
    "mass": "finding_mass",
    "micros": "finding_micros",
    "distortion": "finding_distortion",
    "asymmetry": "finding_asymmetry",
    "findings": "finding_notes",
}
# Malignancy likelihood of each BI-RADS category (ACR 5th ed.): 1-3 at most 2% -> 0; 4c 50-95%, 5 >= 95%,
# 6 biopsy-proven -> 1; 4, 4a (2-10%) and 4b (10-50%) are too uncertain to call -> empty.
LABEL = {"1": 0.0, "2": 0.0, "3": 0.0, "4C": 1.0, "5": 1.0, "6": 1.0}
DENSITY = {"1": "A", "2": "B", "3": "C", "4": "D"}
XML_DIR = "AllXML"
POINT = re.compile(r"^\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)$")
# A one-point ROI marks a single calcification. Individual calcifications are 0.1-1 mm across and INbreast's
# pixels are 70 um, so a 0.5 mm radius (7 px) covers the largest of them with a margin for the marker's
# placement, while staying small enough that a map lit anywhere near the film's centre is not credited.
POINT_RADIUS_PX = 7.0


def find_table(root: Path) -> Path:
    for name in TABLE_NAMES:
        if (root / name).exists():
            return root / name
    raise CohortError(f"inbreast: no {' or '.join(TABLE_NAMES)} in {root}")


def dicom_index(dicom_dir: Path) -> dict[str, tuple[Path, str | None]]:
    """File Name -> (DICOM path, patient hash) from names like 20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm."""
    index: dict[str, tuple[Path, str | None]] = {}
    if not dicom_dir.is_dir():
        return index
    for path in sorted(dicom_dir.glob("*.dcm")):
        parts = path.stem.split("_")
        index.setdefault(parts[0], (path.resolve(), parts[1] if len(parts) > 2 else None))
    return index


def image_size(path: str | None) -> tuple[int, int] | None:
    """(height, width) from a DICOM header (no pixel decode); None when there is no readable header."""
    if not path:
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Rows), int(ds.Columns)
    except Exception:  # noqa: BLE001 - an unreadable DICOM is preprocess's failure to report, not the load's
        return None


def _roi_lesion(points: np.ndarray, size: tuple[int, int] | None) -> dict | None:
    """One ROI's lesion row (circle for one point, else its bounding box); None when off the image.

    Point_px are pixel coordinates of the DICOM's pixel array (x right, y down, integer = pixel centre),
    so the box holds the pixels each point falls in, half-open; it is clipped to the image.
    """
    if len(points) == 1:
        x, y = points[0]
        inside = size is None or (-0.5 <= x < size[1] - 0.5 and -0.5 <= y < size[0] - 0.5)
        return {"shape": "circle", "x": x, "y": y, "radius": POINT_RADIUS_PX} if inside else None
    x0, y0 = np.floor(points.min(axis=0) + 0.5)
    x1, y1 = np.floor(points.max(axis=0) + 0.5) + 1
    if size is not None:
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size[1]), min(y1, size[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return {"shape": "box", "x0": x0, "y0": y0, "x1": x1, "y1": y1}


def _points(roi: object) -> tuple[np.ndarray | None, str]:
    """An ROI's Point_px as an (n, 2) array of x, y; else None and what is wrong with them."""
    raw = roi.get("Point_px") if isinstance(roi, dict) else None
    if not isinstance(raw, list) or not raw:
        return None, "no Point_px list"
    points = []
    for point in raw:
        match = POINT.match(str(point).strip())
        try:
            xy = (float(match[1]), float(match[2])) if match else None
        except ValueError:
            xy = None
        if xy is None or not np.isfinite(xy).all():
            return None, f"a point {point!r} that is not '(x, y)'"
        points.append(xy)
    return np.array(points), ""


def read_rois(xml_dir: Path, images: pd.DataFrame) -> pd.DataFrame:
    """The lesions of AllXML/<image_id>.xml for each image (image_id, image_path): one row per ROI.

    Each file is a plist whose Images[*].ROIs[*] carry a Name (Mass, Calcification, Cluster, ...; kept as
    'abnormality') and Point_px, strings "(x, y)" in original pixels. A polygon becomes its bounding box,
    a single point a small circle (POINT_RADIUS_PX says why its size). A file that is not a plist, or an
    ROI with a point that is not "(x, y)", is skipped with a warning naming the file and the ROI; an ROI
    off its image (size from the DICOM header, when there is one) is dropped with a warning.
    """
    rows = []
    for image_id, image_path in zip(images["image_id"], images["image_path"], strict=True):
        path = xml_dir / f"{image_id}.xml"
        if not path.is_file():
            continue
        try:
            with path.open("rb") as handle:
                plist = plistlib.load(handle)
            rois = [roi for image in plist["Images"] for roi in image.get("ROIs", [])]
        except (
            plistlib.InvalidFileException,
            xml.parsers.expat.ExpatError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
        ) as exc:
            log.warning(
                "inbreast: %s is not an ROI plist (%s: %s); its lesions are left out",
                path,
                type(exc).__name__,
                exc,
            )
            continue
        size = image_size(image_path)
        for number, roi in enumerate(rois):
            name = str(roi.get("Name") or "") if isinstance(roi, dict) else ""
            where = f"{path} ROI {number} ({name or 'no Name'})"
            points, problem = _points(roi)
            if points is None:
                log.warning("inbreast: %s has %s; left out", where, problem)
                continue
            lesion = _roi_lesion(points, size)
            if lesion is None:
                log.warning("inbreast: %s lies outside its %dx%d image; left out", where, size[1], size[0])
                continue
            rows.append({"image_id": image_id, **lesion, "abnormality": name or None})
    return pd.DataFrame(
        rows, columns=["image_id", "shape", "x", "y", "radius", "x0", "y0", "x1", "y1", "abnormality"]
    )


class InbreastAdapter(DatasetAdapter):
    name = "inbreast"
    kind = "diagnostic"
    # the label is a function of the BI-RADS assessment; the findings are what that reading saw
    post_outcome = ("birads", "birads_category", *FINDINGS.values())
    label_meaning = (
        "INbreast gives no pathology in its table, so cancer is derived from the image's BI-RADS "
        "assessment: 1 for Bi-Rads 4c, 5 or 6 (malignancy likelihood above 50%, or proven), 0 for "
        "1, 2 or 3 (at most 2%), empty for 4, 4a and 4b (2-50%, too uncertain to call). The label "
        "is a function of birads, so birads is a perfect leak; the verbatim category is in "
        "'birads_category'. Labels are per image and may differ between views of one breast."
    )

    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        table_path = find_table(root)
        raw = read_table(table_path, sep=None if table_path.suffix.lower() == ".csv" else ",")
        require_columns(raw, REQUIRED, table_path, "inbreast")
        notes = []
        footer = raw["File Name"] == ""
        if footer.any():
            note = (
                f"inbreast: {int(footer.sum())} row(s) of {table_path.name} without a File Name skipped as "
                f"totals/footer rows ({file_lines(footer.to_numpy().nonzero()[0])})"
            )
            log.warning(note)
            notes.append(note)
            raw = raw[~footer].reset_index(drop=True)
        category = raw["Bi-Rads"].str.upper()
        unknown = ~category.isin([*LABEL, "4", "4A", "4B", ""])
        if unknown.any():
            raise CohortError(
                f"inbreast: {table_path} column 'Bi-Rads' has unknown value(s) "
                f"{sorted(set(category[unknown]))[:5]} in {file_lines(unknown.to_numpy().nonzero()[0])}; "
                "expected 1, 2, 3, 4, 4a, 4b, 4c, 5, 6 or empty"
            )
        index = dicom_index(root / "AllDICOMs")
        found = raw["File Name"].map(index)
        without = found.isna()
        known_units = UNITS
        if without.all():
            known_units = ("image",)
            notes.append(
                f"inbreast: no DICOM in {root / 'AllDICOMs'}, so women (the patient hash of the file names) "
                "and breasts cannot be identified: figures are given per image; woman- and breast-level "
                "figures are unavailable"
            )
            log.warning(notes[-1])
        elif without.any():
            notes.append(
                f"inbreast: {int(without.sum())} image(s) have no DICOM in {root / 'AllDICOMs'} "
                f"({file_lines(without.to_numpy().nonzero()[0])}); each counts as its own woman"
            )
            log.warning(notes[-1])
        patient = raw.get("Patient ID", pd.Series("", index=raw.index))
        from_file = found.map(lambda f: f[1] if isinstance(f, tuple) else None)
        patient = patient.where(~patient.str.lower().isin(BLANKED), from_file).fillna(raw["File Name"])
        age = raw.get("Patient age", pd.Series("", index=raw.index))
        table = empty_canonical(len(raw))
        table["patient_id"] = patient.to_numpy()
        table["image_id"] = raw["File Name"].to_numpy()
        table["laterality"] = raw["Laterality"].to_numpy()
        table["view"] = raw["View"].str.upper().to_numpy()
        table["age"] = age.where(~age.str.lower().isin(BLANKED)).to_numpy()
        acr_col = first_present(raw, ["ACR"])
        if acr_col:
            table["density"] = raw[acr_col].map(DENSITY).to_numpy()
        table["birads"] = category.str[0].to_numpy()
        table["birads_category"] = raw["Bi-Rads"].to_numpy()
        table["cancer"] = category.map(LABEL).to_numpy()
        table["image_path"] = found.map(lambda f: str(f[0]) if isinstance(f, tuple) else None).to_numpy()
        date_col = first_present(raw, ["Acquisition date", "Date"])
        if date_col:
            table["acquisition_date"] = raw[date_col].to_numpy()
        for header in raw.columns:
            name = next((v for k, v in FINDINGS.items() if header.lower().startswith(k)), None)
            if name and name not in table.columns:
                table[name] = raw[header].replace("", None).to_numpy()
        xml_dir = root / XML_DIR
        lesions = read_rois(xml_dir, table) if xml_dir.is_dir() else None
        return self.cohort(
            table,
            source=str(table_path),
            details=CohortDetails(known_units=known_units, notes=notes),
            annotations=lesions,
        )


ADAPTER = InbreastAdapter()
