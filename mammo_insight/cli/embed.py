"""`mammo-insight embed`: out-of-fold CNN embeddings of a cache, at image and breast level."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run: Annotated[Path, typer.Option(help="training run folder (from `mammo-insight train`)")],
    cache: Annotated[Path, typer.Option(help="image cache (from `mammo-insight preprocess`)")],
    out: Annotated[Path, typer.Option(help="output EMB.parquet")],
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    workers: Annotated[int, typer.Option(min=0, help="data-loading worker processes")] = 0,
) -> None:
    """Embed every cached image with the fold model that never saw its patient; pool per breast."""
    import torch

    from mammo_insight.fusion.embeddings import compute_embeddings
    from mammo_insight.manifest import write_manifest

    with torch.inference_mode():
        table = compute_embeddings(run, cache, batch_size=batch_size, device=device, workers=workers)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    manifest_dir = out.with_name(out.stem + "_manifest")
    write_manifest(manifest_dir, "embed", {"run": run, "cache": cache, "batch_size": batch_size, "device": device},
                   None, {"run_config": run / "config.json", "oof": run / "oof_predictions.csv",
                          "cache_index": cache / "index.parquet"})
    images = table[table["level"] == "image"]
    breasts = table[table["level"] == "breast"]
    dim = sum(c.startswith("emb_") for c in table.columns)
    typer.echo(f"images: {len(images)} ({int((~images['oof']).sum())} not out-of-fold: mean over fold models)")
    typer.echo(f"breasts: {len(breasts)}; embedding dim: {dim}")
    typer.echo(f"wrote {out}")
