"""`mammo-insight synth`: a synthetic RSNA-like cohort with planted, documented effects (stages.synth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.sizes import SEED_MAX


def command(
    out: Annotated[Path, typer.Option(help="output folder (RSNA layout)")],
    patients: Annotated[int, typer.Option(min=1, help="number of women")] = 100,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="random seed: same seed, same bytes")] = 0,
    size: Annotated[
        str, typer.Option(help="base image size HxW; a few sizes around it are used")
    ] = "256x192",
    prevalence: Annotated[float, typer.Option(min=0.0, max=1.0, help="fraction of positive breasts")] = 0.2,
    scanner_signature: Annotated[
        bool,
        typer.Option(
            help="plant a scanner signature: machine-specific cancer rates and a machine-specific "
            "intensity curve in every image (for testing whether a model reads the scanner)"
        ),
    ] = False,
    strong_effects: Annotated[
        bool,
        typer.Option(
            help="stronger planted metadata effects (age OR 3 per 10 years, density D 8x A): detectable in "
            "a cohort of a hundred women, as the demo uses"
        ),
    ] = False,
) -> None:
    """Write DIR/train.csv, DIR/train_images/<patient>/<image>.dcm and DIR/annotations.csv."""
    from mammo_insight.files import claim_output
    from mammo_insight.sizes import parse_size
    from mammo_insight.stages.synth import SynthConfig, run_synth, write_synth

    with claim_output(out, "synth"):
        result = run_synth(
            SynthConfig(
                out=out,
                patients=patients,
                seed=seed,
                size=parse_size(size),
                prevalence=prevalence,
                scanner_signature=scanner_signature,
                strong_effects=strong_effects,
            )
        )
        write_synth(result, out)
    print_result(result, out)
