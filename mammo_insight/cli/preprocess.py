"""`mammo-insight preprocess`: DICOM/PNG -> cropped, resized, display-correct image cache (stages.preprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli import options
from mammo_insight.cli.output import print_result
from mammo_insight.sizes import SEED_MAX


def command(
    dataset: Annotated[str, typer.Option(help="rsna, mias, cbis, cmmd, inbreast, generic or dicom")],
    root: Annotated[Path, typer.Option(help="dataset root folder")],
    out: Annotated[Path, typer.Option(help="cache folder (created; an existing one is resumed)")],
    size: Annotated[str, typer.Option(help="output size HEIGHTxWIDTH, e.g. 1024x512 or 512x256")] = "512x256",
    workers: Annotated[int, typer.Option(min=1, help="parallel worker processes")] = 1,
    mapping: options.Mapping = None,
    outcomes: options.Outcomes = None,
    on: options.OutcomesKey = "study",
    label: options.OutcomesLabel = "cancer",
    bits: Annotated[int, typer.Option(help="PNG bit depth: 8 or 16")] = 8,
    flip: Annotated[
        bool, typer.Option("--flip/--no-flip", help="mirror so every chest wall is on the left")
    ] = True,
    mask: Annotated[
        bool, typer.Option("--mask/--no-mask", help="blank labels and markers outside the breast")
    ] = True,
    backend: Annotated[str, typer.Option(help="local (process pool) or dask (dask.distributed)")] = "local",
    scheduler: Annotated[
        str | None, typer.Option(help="dask scheduler address (default: a LocalCluster)")
    ] = None,
    decoder: Annotated[
        str, typer.Option(help="auto (the fastest installed per transfer syntax), pydicom, gdcm or dicomsdl")
    ] = "auto",
    sheet_size: Annotated[int, typer.Option(min=0, help="images on the contact sheet")] = 24,
    retry_failed: Annotated[bool, typer.Option(help="redo images that failed in an earlier run")] = False,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed of the contact-sheet sample")] = 0,
    max_failed_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="exit with an error (the cache is still written) when more than this share of the images "
            "fail, or when none is cached",
        ),
    ] = 0.1,
) -> None:
    """Write CACHE/index.parquet, images/, annotations.parquet, failures.csv, contact_sheet.png."""
    from mammo_insight.files import claim_output
    from mammo_insight.imaging.build import JOURNAL_FILE
    from mammo_insight.imaging.cache import INDEX_FILE
    from mammo_insight.sizes import parse_size
    from mammo_insight.stages.preprocess import (
        PreprocessStageConfig,
        check_failures,
        run_preprocess,
        write_preprocess,
    )

    config = PreprocessStageConfig(
        dataset=dataset,
        root=root,
        out=out,
        size=parse_size(size),
        mapping=mapping,
        outcomes=outcomes,
        on=on,
        label=label,
        bits=bits,
        flip=flip,
        mask=mask,
        decoder=decoder,
        workers=workers,
        engine=backend,
        scheduler=scheduler,
        sheet_size=sheet_size,
        retry_failed=retry_failed,
        seed=seed,
    )
    with claim_output(out, "preprocess", markers=(JOURNAL_FILE, INDEX_FILE)):
        result = run_preprocess(config)
        write_preprocess(result, out)
    print_result(result, out)
    check_failures(result.summary, out, max_failed_share)  # after the cache and its listing are written
