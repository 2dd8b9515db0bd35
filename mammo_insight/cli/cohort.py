"""`mammo-insight cohort`: load a dataset through its adapter, validate, write the canonical table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    dataset: Annotated[str, typer.Option(help="rsna, mias, cbis, cmmd, inbreast or generic")],
    root: Annotated[Path, typer.Option(help="dataset root folder")],
    out: Annotated[Path, typer.Option(help="output .parquet file")],
    mapping: Annotated[Path | None, typer.Option(help="TOML mapping file (generic datasets)")] = None,
) -> None:
    """Write the canonical cohort table and print its counts."""
    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.cohort.source import write_cohort_file
    from mammo_insight.cohort.summary import cohort_counts

    cohort = load_cohort(dataset, root, mapping)
    write_cohort_file(cohort, out)
    for key, value in cohort_counts(cohort.table).items():
        typer.echo(f"{key}: {value}")
    typer.echo(f"label: {cohort.label_meaning}")
    typer.echo(f"wrote {out}")
