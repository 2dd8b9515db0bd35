"""CBIS-DDSM (Curated Breast Imaging Subset of DDSM, TCIA) layout.

root holds the official description CSVs, any of mass_case_description_{train,test}_set.csv and
calc_case_description_{train,test}_set.csv (in root or one folder below), one row per abnormality,
and optionally the DICOM tree as TCIA delivers it (root/[CBIS-DDSM/]<case folder>/.../*.dcm).

One table row per mammogram: the abnormalities of one film (patient, side, view) are merged, even
across the mass and calc collections, which re-publish the same DDSM film under two case folders.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import pandas as pd

from mammo_insight.cohort.adapters.base import CohortDetails, DatasetAdapter
from mammo_insight.cohort.adapters.tables import file_lines, first_present, read_table, require_columns
from mammo_insight.cohort.schema import Cohort, empty_canonical
from mammo_insight.errors import CohortError

log = logging.getLogger(__name__)

CSV_PATTERN = "*_case_description_*_set.csv"
REQUIRED = ["patient_id", "left or right breast", "image view", "pathology", "image file path"]
SIDES = {"LEFT": "L", "RIGHT": "R"}
# Worst first: the film's pathology is the worst of its abnormalities.
PATHOLOGY_RANK = {"MALIGNANT": 0, "BENIGN": 1, "BENIGN_WITHOUT_CALLBACK": 2}
LABEL = {"MALIGNANT": 1.0, "BENIGN": 0.0, "BENIGN_WITHOUT_CALLBACK": 0.0}
DENSITY = {"1": "A", "2": "B", "3": "C", "4": "D"}
TREE_PREFIXES = ("", "CBIS-DDSM")


def find_description_csvs(root: Path) -> list[Path]:
    return sorted({*root.glob(CSV_PATTERN), *root.glob(f"*/{CSV_PATTERN}")})


def _read_one(path: Path) -> pd.DataFrame:
    raw = read_table(path)
    require_columns(raw, REQUIRED, path, "cbis")
    side = raw["left or right breast"].str.upper()
    bad = ~side.isin(list(SIDES))
    if bad.any():
        raise CohortError(
            f"cbis: {path} column 'left or right breast' has unknown value(s) "
            f"{sorted(set(side[bad]))[:5]} in {file_lines(bad.to_numpy().nonzero()[0])}; "
            "expected LEFT or RIGHT"
        )
    density_col = first_present(raw, ["breast_density", "breast density"])
    name = path.name.lower()
    return pd.DataFrame(
        {
            "patient_id": raw["patient_id"],
            "laterality": side.map(SIDES),
            "side": side,
            "view": raw["image view"].str.upper(),
            "pathology": raw["pathology"].str.upper(),
            "density": raw[density_col] if density_col else "",
            "assessment": raw.get("assessment", ""),
            "subtlety": raw.get("subtlety", ""),
            "abnormality_type": raw.get(
                "abnormality type", "mass" if name.startswith("mass") else "calcification"
            ),
            "image_file": raw["image file path"],
            "roi_mask": raw.get("ROI mask file path", ""),
            "split": "test" if "_test_" in name else "train",
            "source": str(path),
            "line": range(2, len(raw) + 2),
        }
    )


def resolve_image(root: Path, csv_path: str) -> Path | None:
    """The DICOM a CSV path names, under root or root/CBIS-DDSM; None when the tree is absent.

    TCIA's downloader renames study/series folders and files (…/1-1.dcm instead of …/000000.dcm),
    so when the literal path is missing, the case folder (first path part) holding exactly one
    DICOM is used: a full-mammogram case folder holds only that film.
    """
    rel = PurePosixPath(csv_path.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or (len(csv_path) > 1 and csv_path[1] == ":"):
        raise CohortError(
            f"cbis: image path {csv_path!r} points outside the dataset root {root}; "
            "CSV paths must be relative to it"
        )
    if not rel.parts:
        return None
    for prefix in TREE_PREFIXES:
        literal = root / prefix / rel
        if literal.is_file():
            return literal.resolve()
    for prefix in TREE_PREFIXES:
        case_dir = root / prefix / rel.parts[0]
        if case_dir.is_dir():
            found = sorted(case_dir.rglob("*.dcm"))
            if len(found) == 1:
                return found[0].resolve()
            log.warning(
                "cbis: case folder %s holds %d DICOMs, expected 1; image_path left empty",
                case_dir,
                len(found),
            )
            return None
    return None


def roi_mask_files(root: Path, csv_path: str) -> list[Path]:
    """The DICOM(s) an 'ROI mask file path' names: the literal file, else every DICOM of its case folder.

    TCIA's downloader renames files and puts the ROI mask and the cropped lesion image in one folder, so
    all candidates are kept; the cache keeps the one the size of the film and binary
    (imaging.annotations.read_mask_file) and says why it drops the others.
    """
    rel = PurePosixPath(csv_path.strip().replace("\\", "/"))
    if not rel.parts or rel.is_absolute() or ".." in rel.parts:
        return []
    for prefix in TREE_PREFIXES:
        literal = root / prefix / rel
        if literal.is_file():
            return [literal.resolve()]
    for prefix in TREE_PREFIXES:
        case_dir = root / prefix / rel.parts[0]
        if case_dir.is_dir():
            return [p.resolve() for p in sorted(case_dir.rglob("*.dcm"))]
    return []


def roi_masks(root: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """One mask annotation per ROI file found (image_id, shape 'mask', mask_path, abnormality_type, pathology)."""
    found = [
        {
            "image_id": row["image_id"],
            "shape": "mask",
            "mask_path": str(path),
            "abnormality_type": row["abnormality_type"],
            "pathology": row["pathology"],
        }
        for row in rows.to_dict("records")
        if isinstance(row["roi_mask"], str) and row["roi_mask"].strip()
        for path in roi_mask_files(root, row["roi_mask"])
    ]
    if found:
        log.info("cbis: %d ROI mask file(s) found for %d abnormalities", len(found), len(rows))
    return pd.DataFrame(found, columns=["image_id", "shape", "mask_path", "abnormality_type", "pathology"])


class CbisAdapter(DatasetAdapter):
    name = "cbis"
    kind = "biopsied lesions"
    # the biopsy's verdict (the label's source) and the radiologist's assessment (BI-RADS, the work-up's call);
    # abnormality type and subtlety describe what a reader sees on the film and stay screening-time factors
    post_outcome = ("pathology", "birads")
    label_meaning = (
        "cancer = 1 when any abnormality on the film has biopsy-proven pathology MALIGNANT; "
        "BENIGN and BENIGN_WITHOUT_CALLBACK are 0. This is lesion malignancy among films "
        "that all hold a suspicious finding, not screening cancer detection. birads is the "
        "radiologist's assessment (worst over the film's abnormalities)."
    )

    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        csvs = find_description_csvs(root)
        if not csvs:
            raise CohortError(
                f"cbis: no CBIS-DDSM description CSV ({CSV_PATTERN}, e.g. "
                f"mass_case_description_train_set.csv) in {root} or one folder below"
            )
        rows = pd.concat([_read_one(p) for p in csvs], ignore_index=True)
        unknown = ~rows["pathology"].isin(list(PATHOLOGY_RANK))
        for source, group in rows[unknown].groupby("source"):
            log.warning(
                "cbis: %s column 'pathology' has unknown value(s) %s on line(s) %s; label left empty",
                source,
                sorted(set(group["pathology"]))[:5],
                ", ".join(map(str, group["line"][:5])),
            )
        rows["rank"] = rows["pathology"].map(PATHOLOGY_RANK).fillna(len(PATHOLOGY_RANK))
        rows["image_id"] = rows["patient_id"] + "_" + rows["side"] + "_" + rows["view"]
        films = rows.sort_values(["image_id", "rank"], kind="stable").groupby("image_id", sort=True)
        first = films.first()
        table = empty_canonical(len(first))
        table["image_id"] = first.index.to_numpy()
        for col in ("patient_id", "laterality", "view"):
            table[col] = first[col].to_numpy()
        table["density"] = first["density"].map(DENSITY).to_numpy()
        assessment = pd.to_numeric(rows["assessment"], errors="coerce").groupby(rows["image_id"]).max()
        table["birads"] = assessment.reindex(first.index).to_numpy()
        table["cancer"] = first["pathology"].map(LABEL).to_numpy()
        table["pathology"] = first["pathology"].to_numpy()
        table["abnormality_type"] = (
            films["abnormality_type"].agg(lambda s: ";".join(sorted(set(s)))).to_numpy()
        )
        table["n_abnormalities"] = films.size().to_numpy().astype(float)
        subtlety = pd.to_numeric(rows["subtlety"], errors="coerce").groupby(rows["image_id"]).max()
        table["subtlety"] = subtlety.reindex(first.index).to_numpy()
        table["split"] = films["split"].agg(lambda s: ";".join(sorted(set(s)))).to_numpy()
        table["roi_mask_path"] = films["roi_mask"].agg(lambda s: ";".join(v for v in s if v)).to_numpy()
        table["image_path"] = [self._film_path(root, files) for files in films["image_file"].agg(list)]
        found = table["image_path"].notna().sum()
        log.info(
            "cbis: %d films from %d CSV(s); %d resolved to a DICOM under %s",
            len(table),
            len(csvs),
            found,
            root,
        )
        source = ", ".join(str(p) for p in csvs)
        return self.cohort(
            table,
            source=source,
            details=CohortDetails(factors={"abnormality_type": "categorical", "subtlety": "continuous"}),
            annotations=roi_masks(root, rows),
        )

    @staticmethod
    def _film_path(root: Path, csv_paths: list[str]) -> str | None:
        for csv_path in dict.fromkeys(csv_paths):
            found = resolve_image(root, csv_path)
            if found is not None:
                return str(found)
        return None


ADAPTER = CbisAdapter()
