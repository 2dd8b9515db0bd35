"""`mammo-insight explain`: Grad-CAM maps of a run's fold models on the original images (stages/explain.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.nets.device import DEVICE_HELP, resolve_device
from mammo_insight.sizes import SEED_MAX


def command(
    run: Annotated[
        Path,
        typer.Option(
            help="run folder written by train or patch-train (config.json, folds/, oof_predictions.csv)"
        ),
    ],
    cache: Annotated[Path, typer.Option(help="image cache the run was trained on (index.parquet)")],
    out: Annotated[Path, typer.Option(help="output folder")],
    method: Annotated[str, typer.Option(help="gradcam | gradcampp | eigencam (gradient-free)")] = "gradcam",
    n: Annotated[int, typer.Option(min=0, help="gallery cases per fold and category (TP, FP, FN, TN)")] = 3,
    fold: Annotated[int | None, typer.Option(help="explain only this fold")] = None,
    max_checked: Annotated[int, typer.Option(min=0, help="annotated images used by the lesion checks")] = 100,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="pointing-game tolerance in original pixels")
    ] = 0.0,
    layer: Annotated[
        str | None,
        typer.Option(
            help="CAM layer by module name, e.g. backbone.layer3 "
            "(default: the last feature map, found automatically)"
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per CAM batch")] = 8,
    seed: Annotated[
        int, typer.Option(min=0, max=SEED_MAX, help="seed of the randomised model and of the check sample")
    ] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    patch_run: Annotated[
        Path | None,
        typer.Option(
            help="a `patch-train` run on the same folds: its lesion map beside each CAM, checked the same way"
        ),
    ] = None,
) -> None:
    """Write OUT/index.html, OUT/cam_metrics.json, OUT/cases/*.png|html, OUT/tables/cam_checks.csv."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.explain import ExplainConfig, run_explain, write_explain

    resolve_device(device)  # a GPU that is not there stops here: no lock, no config.json yet
    with claim_output(out, "explain"):
        result = run_explain(
            ExplainConfig(
                run=run,
                cache=cache,
                method=method,
                n=n,
                fold=fold,
                max_checked=max_checked,
                tolerance=tolerance,
                layer=layer,
                batch_size=batch_size,
                seed=seed,
                device=device,
                patch_run=patch_run,
            )
        )
        page = write_explain(result, out)
    print_result(result, page)
