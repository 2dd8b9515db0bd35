"""`mammo-insight report`: an index page over existing stage outputs (stages.report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammo_insight.cli.output import print_result


def command(
    runs: Annotated[list[Path], typer.Option(help="stage directories, or folders holding them")],
    out: Annotated[Path, typer.Option(help="output folder for index.html")],
    more_runs: Annotated[list[Path] | None, typer.Argument(help="further directories (--runs A B C)")] = None,
) -> None:
    """Write OUT/index.html linking every stage report found under --runs."""
    from mammo_insight.files import claim_output
    from mammo_insight.stages.report import ReportConfig, run_report, write_report

    with claim_output(out, "report", reuse=True):  # an index may sit beside the outputs it links
        result = run_report(ReportConfig((*runs, *(more_runs or []))))
        page = write_report(result, out)
    print_result(result, page)
