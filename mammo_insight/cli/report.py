"""`mammo-insight report`: an index page over existing stage outputs (stages.report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.terminal import echo


def command(
    runs: Annotated[list[Path], typer.Option(help="stage directories, or folders holding them")],
    out: Annotated[Path, typer.Option(help="output folder for index.html")],
    more_runs: Annotated[list[Path] | None, typer.Argument(help="further directories (--runs A B C)")] = None,
) -> None:
    """Write OUT/index.html linking every stage report found under --runs."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.report import write_report

    with claim_output(out, "report", reuse=True):  # an index may sit beside the outputs it links
        page = write_report([*runs, *(more_runs or [])], out)
    echo(f"wrote {page}")
