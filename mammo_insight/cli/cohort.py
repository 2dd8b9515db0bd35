"""`mammo-insight cohort`: load a dataset through its adapter, validate, write the canonical table (stages.cohort)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.terminal import echo


def command(
    dataset: Annotated[str, typer.Option(help="rsna, mias, cbis, cmmd, inbreast or generic")],
    root: Annotated[Path, typer.Option(help="dataset root folder")],
    out: Annotated[Path, typer.Option(help="output .parquet file")],
    mapping: Annotated[Path | None, typer.Option(help="TOML mapping file (generic datasets)")] = None,
) -> None:
    """Write the canonical cohort table and print its counts."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.cohort import CohortConfig, run_cohort, write_cohort

    with claim_output(out, "cohort", folder=False):
        result = run_cohort(CohortConfig(dataset, root, mapping))
        write_cohort(result, out)
    for key, value in result.counts().items():
        echo(f"{key}: {'not identified by the source' if value is None else value}")
    for note in result.cohort.notes:
        echo(f"note: {note}")
    if not result.counts()["n_labelled_images"]:
        echo(
            "labels: missing: no image has a cancer label (no label column, or one under another name), "
            "so nothing can be counted as positive"
        )
    echo(f"label: {result.cohort.label_meaning}")
    echo(f"wrote {out}")
