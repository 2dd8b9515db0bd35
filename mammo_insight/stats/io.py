"""Where the study's cohort comes from: a dataset through its adapter, or a saved canonical parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammo_insight.cohort.schema import Cohort, validate_cohort
from mammo_insight.errors import MammoInsightError

PARQUET_LABEL = "as recorded in the cohort file (cancer = 1 positive, 0 negative, empty unknown)"


def load_study_cohort(dataset: str | None, root: Path | None, mapping: Path | None, cohort: Path | None
                      ) -> tuple[Cohort, dict[str, Path]]:
    """(cohort, input files to hash in the manifest) from --dataset/--root[/--mapping] or --cohort."""
    if cohort is not None:
        if dataset is not None and root is not None:
            raise MammoInsightError("eda: give either --cohort or --dataset/--root, not both")
        if not cohort.is_file():
            raise MammoInsightError(f"eda: cohort file {cohort} does not exist")
        try:
            table = pd.read_parquet(cohort)
        except (OSError, ValueError) as exc:
            raise MammoInsightError(f"eda: cannot read {cohort} as parquet: {exc}") from exc
        return Cohort(validate_cohort(table, source=str(cohort)), dataset=dataset or cohort.stem,
                      label_meaning=PARQUET_LABEL), {"cohort": cohort}
    if dataset is None or root is None:
        raise MammoInsightError("eda: give --dataset and --root (and --mapping for generic), or --cohort FILE.parquet")
    from mammo_insight.cohort.adapters import load_cohort

    loaded = load_cohort(dataset, root, mapping)
    inputs = {"mapping": mapping} if mapping else {}
    for name in ("train.csv", "test.csv", "Info.txt", "manifest.csv"):
        if (root / name).is_file():
            inputs[name] = root / name
    return loaded, inputs
