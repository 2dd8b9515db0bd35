"""`mammo-insight embed`: out-of-fold CNN embeddings of a cache, at image and breast level (stages/embed.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.nets.device import DEVICE_HELP, resolve_device


def command(
    run: Annotated[
        Path, typer.Option(help="run folder of train or patch-train (an ensemble: embed a member)")
    ],
    cache: Annotated[Path, typer.Option(help="image cache (from `mammo-insight preprocess`)")],
    out: Annotated[Path, typer.Option(help="output EMB.parquet")],
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 32,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    workers: Annotated[int, typer.Option(min=0, help="data-loading worker processes")] = 0,
) -> None:
    """Embed every cached image with the fold model that never saw its patient; pool per breast."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.embed import EmbedConfig, run_embed, write_embed

    resolve_device(device)  # a GPU that is not there stops here: no lock, no config.json yet
    with claim_output(out, "embed", folder=False):  # before any embedding is computed
        result = run_embed(
            EmbedConfig(run=run, cache=cache, batch_size=batch_size, device=device, workers=workers)
        )
        path = write_embed(result, out)
    print_result(result, path)
