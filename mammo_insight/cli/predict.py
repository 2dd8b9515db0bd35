"""`mammo-insight predict`: breast probabilities and the run's tuned decision for new DICOM studies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run: Annotated[Path, typer.Option(help="run directory written by `mammo-insight train`")],
    images: Annotated[Path, typer.Option(help="folder of DICOMs (<patient_id>/<image_id>.dcm or flat)")],
    out: Annotated[Path, typer.Option(help="breast-level CSV to write; per-image rows go to OUT_images.csv")],
    cams: Annotated[Path | None, typer.Option(help="write a Grad-CAM PNG per image and index.html here")] = None,
    dataset: Annotated[str | None, typer.Option(help="read IMAGES through this dataset adapter (rsna, ...)")] = None,
    mapping: Annotated[Path | None, typer.Option(help="TOML mapping file (generic datasets)")] = None,
    cache: Annotated[Path | None, typer.Option(help="keep the preprocessed images here (default: temporary)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    workers: Annotated[int, typer.Option(min=1, help="preprocessing worker processes")] = 1,
) -> None:
    """Preprocess IMAGES as the run was trained, score with every fold model (mean), decide at the run's threshold."""
    from mammo_insight.models.predict_studies import predict_studies

    result = predict_studies(run, images, out, cams, dataset, mapping, cache, device, batch_size, workers)
    breasts, files = result.breasts, result.images
    scored = breasts["prob"].notna()
    typer.echo(f"breasts: {int(scored.sum())} scored, {int(breasts.loc[scored, 'decision'].sum())} positive at "
               f"threshold {breasts['threshold'].iloc[0]:.3f}")
    failed = files[files["status"] != "ok"]
    typer.echo(f"images: {int((files['status'] == 'ok').sum())} scored, {len(failed)} failed")
    for row in failed.head(10).itertuples(index=False):
        typer.echo(f"  failed: {row.file}: {row.reason}")
    typer.echo(f"breast predictions: {result.breast_csv}")
    typer.echo(f"image predictions: {result.image_csv}")
    if result.cams_index is not None:
        typer.echo(f"Grad-CAM overlays: {result.cams_index}")
