"""`mammo-insight evaluate`: external validation of a trained run on another image cache (stages/evaluate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.nets.device import DEVICE_HELP, resolve_device


def command(
    run: Annotated[Path, typer.Option(help="run folder of any kind: train, patch-train or ensemble")],
    cache: Annotated[Path, typer.Option(help="another image cache (e.g. INbreast or MIAS)")],
    out: Annotated[Path, typer.Option(help="output folder")],
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    allow_overlap: Annotated[
        bool,
        typer.Option(help="score a cache that shares women with the run's training data; labelled internal"),
    ] = False,
    shift_check: Annotated[
        bool,
        typer.Option(
            help="also probe 'training cache or this one?' on the fold models' features, and score each "
            "source's positives apart (reads the run's training cache again)"
        ),
    ] = False,
) -> None:
    """Score CACHE with every fold model (mean of folds), at the run's own thresholds; write metrics + report."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.evaluate import EvaluateConfig, run_evaluate, write_evaluate

    resolve_device(device)  # a GPU that is not there stops here: no lock, no config.json yet
    with claim_output(out, "evaluate"):
        result = run_evaluate(
            EvaluateConfig(
                run=run,
                cache=cache,
                device=device,
                batch_size=batch_size,
                allow_overlap=allow_overlap,
                shift_check=shift_check,
            )
        )
        page = write_evaluate(result, out)
    print_result(result, page, "report:")
