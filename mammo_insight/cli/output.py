"""What every command prints when it is done: the result's headline, then where it wrote (data escaped)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mammo_insight.cli.terminal import echo

if TYPE_CHECKING:  # commands import their stage when they run, so `--help` stays light
    from mammo_insight.stages.base import StageResult


def print_result(result: StageResult, written: Path | None, what: str = "wrote") -> None:
    """The result's lines (by default its headline), its problems on stderr, then ``wrote PATH``."""
    for line in result.lines():
        echo(line)
    for problem in result.problems():
        echo(problem, err=True)
    if written is not None:
        echo(f"{what} {written}")
