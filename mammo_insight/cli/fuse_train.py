"""`mammo-insight fuse-train`: LightGBM on breast-level metadata plus out-of-fold CNN embeddings (stages.fuse)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli import options
from mammo_insight.cli.output import print_result
from mammo_insight.sizes import SEED_MAX


def command(
    out: Annotated[Path, typer.Option(help="output folder")],
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
    embeddings: Annotated[Path | None, typer.Option(help="EMB.parquet from `mammo-insight embed`")] = None,
    planted_risk: Annotated[
        Path | None,
        typer.Option(help="a synthetic cohort's planted_risk.csv: its true risk is scored beside the models"),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="folds when the embeddings carry none")] = 5,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="random seed")] = 0,
    include_leaky: Annotated[
        list[str] | None,
        typer.Option(
            help="a leaky (post-outcome) cohort column to use anyway; repeat for several. Figures become optimistic"
        ),
    ] = None,
    include_workup: Annotated[
        bool,
        typer.Option(
            help="use the image counts (n_images, n_other_views) as features: extra images often mark work-up "
            "after a suspicious finding, so they are out by default"
        ),
    ] = False,
    n_boot: Annotated[
        int, typer.Option(min=0, help="bootstrap resamples for intervals and paired tests")
    ] = 1000,
    shap_rows: Annotated[
        int, typer.Option(min=10, help="breasts explained with SHAP (a random sample)")
    ] = 3000,
    workers: Annotated[int, typer.Option(min=1, help="folds fitted at once (threads)")] = 2,
    threads: Annotated[
        int, typer.Option(min=1, help="LightGBM threads per model (1 is safest on a busy machine)")
    ] = 1,
    allow_partial: Annotated[
        bool,
        typer.Option(
            help="fit even when the embeddings cover under 90% of the cohort's labelled breasts "
            "(the page states the coverage)"
        ),
    ] = False,
) -> None:
    """Cross-validate metadata-only, image-only and fused LightGBM; compare them; explain with SHAP."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.fuse import FuseConfig, run_fuse, write_fuse

    include = tuple(include_leaky or ())
    if include:
        typer.secho(
            f"!!! WARNING: including leaky column(s) {', '.join(include)}: they are decided after the "
            "outcome; every figure of this run is optimistic !!!",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
    config = FuseConfig(
        dataset=dataset,
        root=root,
        mapping=mapping,
        outcomes=outcomes,
        on=on,
        label=label,
        cohort=cohort,
        embeddings=embeddings,
        planted_risk=planted_risk,
        folds=folds,
        seed=seed,
        include_leaky=include,
        include_workup=include_workup,
        n_boot=n_boot,
        shap_rows=shap_rows,
        workers=workers,
        threads=threads,
        allow_partial=allow_partial,
    )
    with claim_output(out, "fuse-train"):
        result = run_fuse(config)
        page = write_fuse(result, out)
    print_result(result, page)
