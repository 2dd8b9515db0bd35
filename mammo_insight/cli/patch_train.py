"""`mammo-insight patch-train`: a lesion-patch classifier per fold, lesion maps and their checks (stages.patch_train)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.nets.device import DEVICE_HELP, is_ddp_worker, resolve_device


def command(
    cache: Annotated[
        Path, typer.Option(help="image cache with lesion annotations (`mammo-insight preprocess`)")
    ],
    out: Annotated[Path, typer.Option(help="patch run directory (rerun the same command to resume it)")],
    patch_size: Annotated[
        int | None, typer.Option(min=8, help="patch side in cache pixels; default 32")
    ] = None,
    background_ratio: Annotated[
        float | None, typer.Option(help="background patches per lesion patch; default 3")
    ] = None,
    lesion_patches: Annotated[
        int | None, typer.Option(min=1, help="jittered patches per annotated lesion; default 4")
    ] = None,
    jitter: Annotated[
        float | None, typer.Option(help="centre jitter, fraction of the patch side per axis; default 0.25")
    ] = None,
    model: Annotated[str | None, typer.Option(help="any timm model name; default resnet10t")] = None,
    pretrained: Annotated[
        bool | None, typer.Option("--pretrained/--no-pretrained", help="ImageNet start; default no")
    ] = None,
    folds: Annotated[
        int | None, typer.Option(min=2, help="patient-grouped folds (the same as `train`'s); default 5")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="epochs per fold; default 8")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="patches per batch; default 64")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate; default 1e-3")] = None,
    seed: Annotated[
        int | None, typer.Option(help="seed of folds, sampling, initialisation; default 0")
    ] = None,
    stride: Annotated[
        int | None, typer.Option(min=0, help="lesion-map stride in cache pixels (0: patch/4)")
    ] = None,
    device: Annotated[str | None, typer.Option(help=DEVICE_HELP)] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto (bf16 on a GPU that has it, 32 on the CPU) | 32-true | 16-mixed")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML file of training options (top-level keys or a table named patch; flags win)"),
    ] = None,
) -> None:
    """Write PATCHRUN/patches.csv, metrics.json, oof_predictions.csv, lesion-map checks, folds/, index.html."""
    from mammo_insight.files import claim_output
    from mammo_insight.runs.config import PatchConfig, load_config
    from mammo_insight.stages.patch_train import PatchTrainConfig, run_patch_train, write_patch_train

    options = load_config(
        config,
        kind=PatchConfig,
        patch_size=patch_size,
        background_ratio=background_ratio,
        lesion_patches=lesion_patches,
        jitter=jitter,
        model=model,
        pretrained=pretrained,
        folds=folds,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        map_stride=stride,
        device=device,
        precision=precision,
        cpu_threads=threads,
    )
    resolve_device(options.device)  # a GPU that is not there stops here: no lock, no config.json yet
    # DDP worker ranks rerun this command while rank 0 holds the folder: only rank 0 claims it and writes
    with nullcontext() if is_ddp_worker() else claim_output(out, "patch-train", markers=("folds",)):
        result = run_patch_train(PatchTrainConfig(cache, out, options))
        page = write_patch_train(result, out)
    if result.writer:
        print_result(result, page, "report:")
