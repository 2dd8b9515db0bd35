"""`mammo-insight evaluate`: external validation of a trained run on another image cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run: Annotated[Path, typer.Option(help="run directory written by `mammo-insight train`")],
    cache: Annotated[Path, typer.Option(help="another image cache (e.g. INbreast or MIAS)")],
    out: Annotated[Path, typer.Option(help="output folder")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
) -> None:
    """Score CACHE with every fold model (mean of folds), at the run's own thresholds; write metrics + report."""
    import json

    from mammo_insight.models.external import evaluate_run
    from mammo_insight.report import fmt_ci as format_cell

    page = evaluate_run(run, cache, out, device, batch_size)
    metrics = json.loads((out / "metrics.json").read_text())
    for level in ("image", "breast"):
        body = metrics[level]
        typer.echo(f"{level}: ROC-AUC {format_cell(body['roc_auc'])}  pF1 {format_cell(body['pf1'])}  PR-AUC {format_cell(body['pr_auc'])}")
    typer.echo(f"report: {page}")
