"""What reaches the user's terminal: text from data (ids, paths, table cells) with its control characters
escaped, so a cell holding ``\\x1b[2J`` cannot clear or recolour the screen (the HTML reports escape it too)."""

from __future__ import annotations

import logging
import re

import typer

# C0 controls but newline and tab, DEL, and the C1 controls (U+0080..U+009F; U+009B alone is a CSI)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(text: object) -> str:
    r"""``str(text)`` with each control character shown as its escape (``\x1b``), never sent raw."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def echo(text: object, *, err: bool = False) -> None:
    """typer.echo of text that may carry data: control characters escaped."""
    typer.echo(safe(text), err=err)


class EscapeControl(logging.Filter):
    """A handler filter: the formatted message of every log record, its control characters escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = safe(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True
