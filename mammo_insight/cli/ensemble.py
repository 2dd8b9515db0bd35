"""`mammo-insight ensemble`: average runs trained on the same folds into a run-like folder (stages/ensemble.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.terminal import echo


def command(
    runs: Annotated[list[Path], typer.Option(help="run folders trained on the same folds (--runs A B C)")],
    out: Annotated[Path, typer.Option(help="output folder; `evaluate --run` and `predict --run` take it")],
    more_runs: Annotated[list[Path] | None, typer.Argument(help="further run folders (--runs A B C)")] = None,
    n_boot: Annotated[int, typer.Option(min=0, help="bootstrap resamples of women for the intervals")] = 1000,
) -> None:
    """Average the runs' out-of-fold predictions; write OUT/oof_predictions.csv, metrics.json, config.json, index.html."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.ensemble import EnsembleConfig, run_ensemble, write_ensemble

    with claim_output(out, "ensemble"):
        result = run_ensemble(EnsembleConfig((*runs, *(more_runs or [])), out, n_boot))
        page = write_ensemble(result)
    for label, value in result.headline().items():
        echo(f"{label}: {value}")
    echo(f"report: {page}")
