"""RSNA Screening Mammography Breast Cancer Detection (Kaggle 2022-23) layout.

root/train.csv (or test.csv) and root/train_images/<patient_id>/<image_id>.dcm; an optional
root/annotations.csv (image_id, x, y, radius; written by the synthetic cohort) becomes Cohort.annotations.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mammo_insight.cohort.adapters.base import DatasetAdapter
from mammo_insight.cohort.adapters.tables import check_column_case, read_table
from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS, Cohort, empty_canonical, file_lines
from mammo_insight.errors import CohortError

log = logging.getLogger(__name__)
RENAMES = {"BIRADS": "birads"}
DIRECT = [
    "patient_id",
    "image_id",
    "laterality",
    "view",
    "age",
    "site_id",
    "machine_id",
    "density",
    "implant",
    "cancer",
    "biopsy",
    "invasive",
    "difficult_negative_case",
]
ANNOTATION_COLUMNS = ["image_id", "x", "y", "radius"]


class RsnaAdapter(DatasetAdapter):
    name = "rsna"
    post_outcome = tuple(POST_OUTCOME_COLUMNS)
    label_meaning = (
        "cancer = 1 when the breast was diagnosed with cancer after this screening exam "
        "(label set at breast level; every image of the breast carries it). "
        "BIRADS, biopsy, invasive and difficult_negative_case were decided after the outcome."
    )

    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        for split in ("train", "test"):
            csv = root / f"{split}.csv"
            if csv.exists():
                break
        else:
            raise CohortError(f"rsna: neither train.csv nor test.csv found in {root}")
        raw = read_table(csv)
        raw = raw.rename(columns=RENAMES)
        check_column_case(raw, [*DIRECT, "birads", "prediction_id"], csv, "rsna")
        needed = ["patient_id", "image_id", "laterality", "view"]
        missing = [c for c in needed if c not in raw.columns]
        if missing:
            raise CohortError(f"rsna: {csv} lacks column(s) {', '.join(missing)}")
        table = empty_canonical(len(raw))
        for col in DIRECT + ["birads"]:
            if col in raw.columns:
                table[col] = raw[col].to_numpy()
        images = root / f"{split}_images"
        table["image_path"] = (f"{images}/" + raw["patient_id"] + "/" + raw["image_id"] + ".dcm").to_numpy()
        if "prediction_id" in raw.columns:
            table["breast_id"] = raw["prediction_id"].to_numpy()
        cohort = self.cohort(table, source=str(csv))
        if (root / "annotations.csv").exists():
            cohort.annotations = _annotations(root / "annotations.csv")
        return cohort


def _annotations(path: Path) -> pd.DataFrame:
    """Lesion circles (image_id str; x, y, radius float in original pixels, x right, y down)."""
    ann = read_table(path)
    missing = [c for c in ANNOTATION_COLUMNS if c not in ann.columns]
    if missing:
        raise CohortError(f"rsna: {path} lacks column(s) {', '.join(missing)}")
    ann = ann[ANNOTATION_COLUMNS].copy()
    for col in ANNOTATION_COLUMNS[1:]:
        values = pd.to_numeric(ann[col], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise CohortError(
                f"rsna: {path} column '{col}' must be numeric; {file_lines([row])} holds "
                f"{ann[col].iloc[row]!r}"
            )
        ann[col] = values.astype("float64")
    return ann


ADAPTER = RsnaAdapter()


def submission(breasts: pd.DataFrame) -> pd.DataFrame:
    """The RSNA Screening Mammography submission: prediction_id = patient_id + "_" + laterality, cancer = the
    breast probability (formed as the run's metrics formed it: the mean of a breast's images, or a
    multi-view model's own breast output).

    A breast without L/R laterality or without a probability (none of its images could be scored) has no
    place in that format: it is left out with a warning naming it.
    """
    laterality = breasts["laterality"].astype("string").str.upper()
    keep = laterality.isin(["L", "R"]).fillna(False) & breasts["prob"].notna()
    if not keep.all():
        left_out = breasts.loc[~keep, "breast_id"].astype(str).tolist()
        log.warning(
            "%d breast(s) left out of the RSNA file (laterality not L/R, or no scored image): %s",
            len(left_out),
            ", ".join(left_out[:10]) + (" ..." if len(left_out) > 10 else ""),
        )
    return pd.DataFrame(
        {
            "prediction_id": breasts.loc[keep, "patient_id"].astype(str) + "_" + laterality[keep],
            "cancer": breasts.loc[keep, "prob"].astype(float),
        }
    ).reset_index(drop=True)
