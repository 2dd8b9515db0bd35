"""`mammo-insight eda`: the statistical study of a cohort and its HTML report (stages.eda)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli import options
from mammo_insight.cli.output import print_result
from mammo_insight.sizes import SEED_MAX


def command(
    out: Annotated[Path, typer.Option(help="output folder (index.html, summary.json, tables/)")],
    dataset: Annotated[
        str | None, typer.Option(help="rsna, mias, cbis, cmmd, inbreast, generic or dicom")
    ] = None,
    root: Annotated[Path | None, typer.Option(help="dataset root folder")] = None,
    mapping: options.Mapping = None,
    outcomes: options.Outcomes = None,
    on: options.OutcomesKey = "study",
    label: options.OutcomesLabel = "cancer",
    cohort: Annotated[
        Path | None, typer.Option(help="a canonical cohort .parquet (instead of --dataset/--root)")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed of the Monte Carlo Fisher tests")] = 0,
) -> None:
    """Rates with intervals, tests, adjusted odds ratios, missingness and a leakage audit, in one report."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.eda import EdaConfig, run_eda, write_eda

    with claim_output(out, "eda"):
        result = run_eda(
            EdaConfig(
                dataset=dataset,
                root=root,
                mapping=mapping,
                outcomes=outcomes,
                on=on,
                label=label,
                cohort=cohort,
                seed=seed,
            )
        )
        page = write_eda(result, out)
    print_result(result, page)
