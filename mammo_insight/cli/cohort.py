"""`mammo-insight cohort`: load a dataset through its adapter, validate, write the canonical table (stages.cohort)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli import options
from mammo_insight.cli.output import print_result


def command(
    dataset: Annotated[str, typer.Option(help="rsna, mias, cbis, cmmd, inbreast, generic or dicom")],
    root: Annotated[Path, typer.Option(help="dataset root folder")],
    out: Annotated[Path, typer.Option(help="output .parquet file")],
    mapping: options.Mapping = None,
    outcomes: options.Outcomes = None,
    on: options.OutcomesKey = "study",
    label: options.OutcomesLabel = "cancer",
) -> None:
    """Write the canonical cohort table and print its counts."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.cohort import CohortConfig, run_cohort, write_cohort

    with claim_output(out, "cohort", folder=False):
        result = run_cohort(CohortConfig(dataset, root, mapping, outcomes, on, label))
        write_cohort(result, out)
    print_result(result, out)
