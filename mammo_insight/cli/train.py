"""`mammo-insight train`: k-fold CNN training on an image cache, writing a run directory (stages.train)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.nets.device import DEVICE_HELP, is_ddp_worker, resolve_device
from mammo_insight.runs.config import options_epilog
from mammo_insight.sizes import SEED_MAX

EPILOG = options_epilog()


def command(
    cache: Annotated[Path, typer.Option(help="image cache written by `mammo-insight preprocess`")],
    out: Annotated[Path, typer.Option(help="run directory (rerun the same command to resume it)")],
    model: Annotated[str | None, typer.Option(help="any timm model name, e.g. efficientnet_b0")] = None,
    view_mode: Annotated[str | None, typer.Option(help="single (per image) or multi (per breast)")] = None,
    folds: Annotated[int | None, typer.Option(min=2, help="patient-grouped folds")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int | None, typer.Option(min=0, max=SEED_MAX)] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file of training options (flags win)")] = None,
    weights: Annotated[
        Path | None, typer.Option(help="local pretrained weights (nothing is downloaded)")
    ] = None,
    init_patch_run: Annotated[
        Path | None,
        typer.Option(help="a `patch-train` folder: each fold starts from that fold's patch classifier"),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            help="avg | max | gem | attention: how each image's feature map is pooled (option pool)"
        ),
    ] = None,
    pretrained: Annotated[
        bool | None,
        typer.Option(
            "--pretrained/--no-pretrained",
            help="ImageNet weights: pip-shipped (extra `pretrained`: tf_efficientnet_lite0/1/2), "
            "else timm's cache or hub",
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    device: Annotated[str | None, typer.Option(help=DEVICE_HELP)] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads (1 is fastest on a busy machine)")
    ] = None,
    external_cache: Annotated[
        list[Path] | None,
        typer.Option(
            help="another cache whose images only train (external_only: never validated, never in "
            "oof_predictions.csv or the metrics); repeat for more; the report adds a dataset-shift check"
        ),
    ] = None,
    external_positives_only: Annotated[
        bool, typer.Option(help="take only the positives of --external-cache (the studies' recipe)")
    ] = False,
) -> None:
    """Train one model per fold; write RUN/oof_predictions.csv, metrics.json, history.csv, folds/, index.html."""
    from mammo_insight.files import claim_output
    from mammo_insight.runs.config import load_config
    from mammo_insight.stages.train import TrainStageConfig, run_train, write_train

    options = load_config(
        config,
        model=model,
        view_mode=view_mode,
        folds=folds,
        epochs=epochs,
        seed=seed,
        weights=str(weights) if weights else None,
        init_patch_run=str(init_patch_run) if init_patch_run else None,
        pool=pool,
        pretrained=pretrained,
        batch_size=batch_size,
        device=device,
        cpu_threads=threads,
    )
    resolve_device(options.device)  # a GPU that is not there stops here: no lock, no config.json yet
    # DDP worker ranks rerun this command while rank 0 holds the lock: only global rank 0 claims the folder
    with nullcontext() if is_ddp_worker() else claim_output(out, "train", markers=("folds",)):
        result = run_train(
            TrainStageConfig(
                cache,
                out,
                options,
                external_caches=tuple(external_cache or ()),
                external_positives_only=external_positives_only,
            )
        )
        page = write_train(result, out)
    if result.writer:
        print_result(result, page, "report:")
