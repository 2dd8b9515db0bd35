"""`mammo-insight demo`: the whole pipeline on a synthetic cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.sizes import SEED_MAX


def command(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("reports/demo"),
    patients: Annotated[int, typer.Option(min=20, help="women in the synthetic cohort")] = 120,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed for every stage")] = 0,
) -> None:
    """Run synth, eda, preprocess, train, embed, fuse-train and explain; write OUT/index.html."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.demo import DemoConfig, DemoSettings, run_demo, write_demo

    with claim_output(out, "demo", reuse=True):
        result = run_demo(DemoConfig(out, DemoSettings(patients=patients, seed=seed)))
        page = write_demo(result, out)
    print_result(result, page, "open")
