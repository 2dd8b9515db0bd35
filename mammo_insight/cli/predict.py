"""`mammo-insight predict`: breast probabilities and the run's tuned decision for new DICOM studies (stages/predict.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.cli.terminal import echo
from mammo_insight.nets.device import DEVICE_HELP, resolve_device


def command(
    run: Annotated[Path, typer.Option(help="run folder of any kind: train, patch-train or ensemble")],
    images: Annotated[Path, typer.Option(help="folder of DICOMs (<patient_id>/<image_id>.dcm or flat)")],
    out: Annotated[Path, typer.Option(help="breast-level CSV to write; per-image rows go to OUT_images.csv")],
    cams: Annotated[
        Path | None, typer.Option(help="write a Grad-CAM PNG per image and index.html here")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="read IMAGES through this dataset adapter (rsna, ...)")
    ] = None,
    mapping: Annotated[Path | None, typer.Option(help="TOML mapping file (generic datasets)")] = None,
    cache: Annotated[
        Path | None, typer.Option(help="keep the preprocessed images here (default: temporary)")
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    workers: Annotated[int, typer.Option(min=1, help="preprocessing worker processes")] = 1,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="breasts: the full breast table; rsna: the RSNA competition's prediction_id,cancer "
            "(prediction_id = patient_id_laterality, cancer = the breast probability)",
        ),
    ] = "breasts",
) -> None:
    """Preprocess IMAGES as the run was trained, score with every fold model (mean), decide at the run's threshold."""
    from contextlib import ExitStack

    from mammo_insight.files import claim_output
    from mammo_insight.imaging.build import JOURNAL_FILE
    from mammo_insight.imaging.cache import INDEX_FILE
    from mammo_insight.stages.predict import PredictConfig, image_csv_path, run_predict, write_predict

    resolve_device(device)  # a GPU that is not there stops here: no lock, no config.json yet
    with claim_output(out, "predict", folder=False), ExitStack() as stack:
        if cams is not None:  # may be the folder of OUT itself
            stack.enter_context(claim_output(cams, "predict", reuse=True))
        if (
            cache is not None
        ):  # a preprocess cache: new, or one this or `preprocess` began; held while we write
            stack.enter_context(claim_output(cache, "preprocess", markers=(JOURNAL_FILE, INDEX_FILE)))
        result = run_predict(
            PredictConfig(
                run=run,
                images=images,
                cams=cams,
                dataset=dataset,
                mapping=mapping,
                cache=cache,
                device=device,
                batch_size=batch_size,
                workers=workers,
                output_format=output_format,
            )
        )
        breast_csv = write_predict(result, out)
    print_result(result, None)
    echo(f"breast predictions{' (RSNA format)' if output_format == 'rsna' else ''}: {breast_csv}")
    echo(f"image predictions: {image_csv_path(breast_csv)}")
