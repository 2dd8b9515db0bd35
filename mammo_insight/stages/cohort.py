"""`cohort`: a dataset through its adapter, validated, written as the canonical table (one row per image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.outcomes import outcomes_spec
from mammo_insight.cohort.schema import Cohort
from mammo_insight.cohort.source import write_cohort_file
from mammo_insight.cohort.summary import cohort_counts
from mammo_insight.files import write_csv_atomic
from mammo_insight.stages.base import StageResult, finish_stage

NOT_IDENTIFIED = "not identified by the source"


@dataclass(frozen=True)
class CohortConfig:
    dataset: str
    root: Path
    mapping: Path | None = None
    outcomes: Path | None = None  # --dataset dicom: labels joined from this CSV (cohort.outcomes)
    on: str = "study"
    label: str = "cancer"


@dataclass(frozen=True)
class CohortResult(StageResult):
    config: CohortConfig
    cohort: Cohort
    stage = "cohort"
    title = "Cohort table"

    def counts(self) -> dict[str, int | None]:
        return cohort_counts(self.cohort.table, self.cohort.known_units)

    def headline(self) -> dict[str, str]:
        return {
            k.replace("n_", "").replace("_", " "): NOT_IDENTIFIED if v is None else f"{v:,}"
            for k, v in self.counts().items()
        }

    def lines(self) -> list[str]:
        lines = [
            f"{k}: {'not identified by the source' if v is None else v}" for k, v in self.counts().items()
        ]
        lines += [f"note: {note}" for note in self.cohort.notes]
        if not self.counts()["n_labelled_images"]:
            lines.append(
                "labels: missing: no image has a cancer label (no label column, or one under another name), "
                "so nothing can be counted as positive"
            )
        return [*lines, f"label: {self.cohort.label_meaning}"]


def run_cohort(config: CohortConfig) -> CohortResult:
    return CohortResult(
        config,
        load_cohort(
            config.dataset,
            config.root,
            config.mapping,
            outcomes_spec(config.outcomes, config.on, config.label),
        ),
    )


def write_cohort(result: CohortResult, out: Path) -> Path:
    """OUT.parquet (and OUT_annotations.parquet when the dataset has lesions, OUT_<report>.csv for each listing
    of the loading: a DICOM scan's files not used, an outcomes match), then OUT.parquet.manifest.json."""
    write_cohort_file(result.cohort, out)
    for name, listing in result.cohort.reports.items():
        write_csv_atomic(out.with_name(f"{out.stem}_{name}.csv"), listing, index=False)
    c = result.config
    finish_stage(
        out,
        result,
        {"dataset": c.dataset, "root": str(c.root), "mapping": c.mapping and str(c.mapping)},
        report=None,
    )
    return out
