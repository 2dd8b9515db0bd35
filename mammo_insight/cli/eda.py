"""`mammo-insight eda`: the statistical study of a cohort and its HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    out: Annotated[Path, typer.Option(help="output folder (index.html, summary.json, tables/)")],
    dataset: Annotated[str | None, typer.Option(help="rsna, mias, cbis, cmmd, inbreast or generic")] = None,
    root: Annotated[Path | None, typer.Option(help="dataset root folder")] = None,
    mapping: Annotated[Path | None, typer.Option(help="TOML mapping file (generic datasets)")] = None,
    cohort: Annotated[Path | None, typer.Option(help="a canonical cohort .parquet (instead of --dataset/--root)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the Monte Carlo Fisher tests")] = 0,
) -> None:
    """Rates with intervals, tests, adjusted odds ratios, missingness and a leakage audit, in one report."""
    from mammo_insight.manifest import write_manifest
    from mammo_insight.stats.io import load_study_cohort
    from mammo_insight.stats.study import run_study, write_study

    study_cohort, inputs = load_study_cohort(dataset, root, mapping, cohort)
    result = run_study(study_cohort, seed=seed)
    config = {"dataset": study_cohort.dataset, "root": str(root) if root else None,
              "mapping": str(mapping) if mapping else None, "cohort": str(cohort) if cohort else None}
    write_manifest(out, "eda", config, seed=seed, inputs=inputs)
    page = write_study(result, out)
    s = result.summary
    typer.echo(f"{s['n_images']:,} images, {s['n_patients']:,} women, {s['n_cancer_breasts']:,} of "
               f"{s['n_breasts']:,} breasts with cancer ({s['prevalence_breast']:.2%})")
    for finding in result.findings[:3]:
        typer.echo(f"- {finding}")
    typer.echo(f"wrote {page}")
