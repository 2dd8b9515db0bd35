"""`mammo-insight train`: k-fold CNN training on an image cache, writing a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    cache: Annotated[Path, typer.Option(help="image cache written by `mammo-insight preprocess`")],
    out: Annotated[Path, typer.Option(help="run directory (rerun the same command to resume it)")],
    model: Annotated[str | None, typer.Option(help="any timm model name, e.g. efficientnet_b0")] = None,
    view_mode: Annotated[str | None, typer.Option(help="single (per image) or multi (per breast)")] = None,
    folds: Annotated[int | None, typer.Option(min=2, help="patient-grouped folds")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file of training options (flags win)")] = None,
    weights: Annotated[Path | None, typer.Option(help="local pretrained weights (nothing is downloaded)")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (1 is fastest on a busy machine)")] = None,
) -> None:
    """Train one model per fold; write RUN/oof_predictions.csv, metrics.json, history.csv, folds/, index.html."""
    import json

    from mammo_insight.models.config import load_config
    from mammo_insight.models.training import train_run

    options = load_config(config, model=model, view_mode=view_mode, folds=folds, epochs=epochs, seed=seed,
                          weights=str(weights) if weights else None, batch_size=batch_size, device=device,
                          cpu_threads=threads)
    run = train_run(cache, out, options)
    metrics = json.loads((run / "metrics.json").read_text())
    for level in ("image", "breast"):
        body = metrics[level]
        typer.echo(f"{level}: ROC-AUC {format_cell(body['roc_auc'])}  pF1 {format_cell(body['pf1'])}  PR-AUC {format_cell(body['pr_auc'])}")
    typer.echo(f"report: {run / 'index.html'}")


def format_cell(cell: dict) -> str:
    """'0.812 (0.780-0.845)' from a metrics.json cell."""
    if cell.get("value") is None:
        return "n/a"
    low, high = cell.get("ci_low"), cell.get("ci_high")
    interval = f" ({low:.3f}-{high:.3f})" if low is not None and high is not None else ""
    return f"{cell['value']:.3f}{interval}"
