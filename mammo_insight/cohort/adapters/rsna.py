"""RSNA Screening Mammography Breast Cancer Detection (Kaggle 2022-23) layout.

root/train.csv (or test.csv) and root/train_images/<patient_id>/<image_id>.dcm.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammo_insight.cohort.adapters.base import DatasetAdapter
from mammo_insight.cohort.schema import Cohort, empty_canonical, validate_cohort
from mammo_insight.errors import CohortError

RENAMES = {"BIRADS": "birads"}
DIRECT = ["patient_id", "image_id", "laterality", "view", "age", "site_id", "machine_id", "density",
          "implant", "cancer", "biopsy", "invasive", "difficult_negative_case"]


class RsnaAdapter(DatasetAdapter):
    name = "rsna"
    label_meaning = ("cancer = 1 when the breast was diagnosed with cancer after this screening exam "
                     "(label set at breast level; every image of the breast carries it). "
                     "BIRADS, biopsy, invasive and difficult_negative_case were decided after the outcome.")

    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        for split in ("train", "test"):
            csv = root / f"{split}.csv"
            if csv.exists():
                break
        else:
            raise CohortError(f"rsna: neither train.csv nor test.csv found in {root}")
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
        raw = raw.rename(columns=RENAMES)
        needed = ["patient_id", "image_id", "laterality", "view"]
        missing = [c for c in needed if c not in raw.columns]
        if missing:
            raise CohortError(f"rsna: {csv} lacks column(s) {', '.join(missing)}")
        table = empty_canonical(len(raw))
        for col in DIRECT + ["birads"]:
            if col in raw.columns:
                table[col] = raw[col].to_numpy()
        images = root / f"{split}_images"
        table["image_path"] = [str(images / p / f"{i}.dcm") for p, i in zip(raw["patient_id"], raw["image_id"])]
        if "prediction_id" in raw.columns:
            table["breast_id"] = raw["prediction_id"].to_numpy()
        return Cohort(validate_cohort(table, source=str(csv)), dataset=self.name, label_meaning=self.label_meaning)


ADAPTER = RsnaAdapter()
