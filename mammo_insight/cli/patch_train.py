"""`mammo-insight patch-train`: a lesion-patch classifier per fold, lesion maps and their checks (stages.patch_train)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.terminal import echo
from mammo_insight.models.device import DEVICE_HELP, resolve_device
from mammo_insight.sizes import SEED_MAX


def command(
    cache: Annotated[
        Path, typer.Option(help="image cache with lesion annotations (`mammo-insight preprocess`)")
    ],
    out: Annotated[Path, typer.Option(help="patch run directory")],
    patch_size: Annotated[int, typer.Option(min=8, help="patch side in cache pixels")] = 32,
    background_ratio: Annotated[float, typer.Option(help="background patches per lesion patch")] = 3.0,
    lesion_patches: Annotated[int, typer.Option(min=1, help="jittered patches per annotated lesion")] = 4,
    jitter: Annotated[float, typer.Option(help="centre jitter, fraction of the patch side per axis")] = 0.25,
    model: Annotated[str, typer.Option(help="any timm model name")] = "resnet10t",
    pretrained: Annotated[bool, typer.Option("--pretrained/--no-pretrained", help="ImageNet start")] = False,
    folds: Annotated[int, typer.Option(min=2, help="patient-grouped folds (the same as `train`'s)")] = 5,
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    stride: Annotated[int, typer.Option(min=0, help="lesion-map stride in cache pixels (0: patch/4)")] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
) -> None:
    """Write PATCHRUN/patches.csv, metrics.json, oof_predictions.csv, lesion-map checks, folds/, index.html."""
    from mammo_insight.files import claim_output
    from mammo_insight.models.patches import PatchConfig
    from mammo_insight.stages.patch_train import PatchTrainConfig, run_patch_train, write_patch_train

    options = PatchConfig(
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
    )
    resolve_device(device)  # a GPU that is not there stops here: no lock, no config.json yet
    with claim_output(out, "patch-train", markers=("folds",)):
        result = run_patch_train(PatchTrainConfig(cache, out, options))
        page = write_patch_train(result)
    for label, value in result.headline().items():
        echo(f"{label}: {value}")
    echo(f"report: {page}")
