"""`mammo-insight compare`: runs on the same folds side by side with paired tests (stages/compare.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result
from mammo_insight.sizes import SEED_MAX


def command(
    runs: Annotated[list[Path], typer.Option(help="run folders trained on the same folds (--runs A B C)")],
    out: Annotated[Path, typer.Option(help="output folder")],
    more_runs: Annotated[list[Path] | None, typer.Argument(help="further run folders (--runs A B C)")] = None,
    n_boot: Annotated[int, typer.Option(min=1, help="bootstrap resamples of women")] = 1000,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed of the bootstrap resamples")] = 0,
) -> None:
    """Score each run, test every pair (paired bootstrap over women, DeLong), overlay learning curves; OUT/index.html."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.compare import CompareConfig, run_compare, write_compare

    with claim_output(out, "compare"):
        result = run_compare(CompareConfig((*runs, *(more_runs or [])), n_boot, seed))
        page = write_compare(result, out)
    print_result(result, page, "report:")
