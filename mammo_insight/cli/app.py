"""Entry point: registers each stage's command and turns MammoInsightError into a clear message."""

from __future__ import annotations

import errno
import importlib
import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from mammo_insight.cli.terminal import EscapeControl, safe
from mammo_insight.errors import MammoInsightError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Understand screening-mammography datasets and explain cancer classifiers.",
)

# Stage name -> module under mammo_insight.cli defining `command`.
COMMANDS = [
    "synth",
    "cohort",
    "preprocess",
    "report",
    "demo",
    "eda",
    "train",
    "patch_train",
    "evaluate",
    "explain",
    "embed",
    "fuse_train",
    "predict",
    "ensemble",
    "compare",
]

for _name in COMMANDS:
    _module = importlib.import_module(f"mammo_insight.cli.{_name}")
    app.command(_name.replace("_", "-"), epilog=getattr(_module, "EPILOG", None))(_module.command)

err_console = Console(stderr=True, soft_wrap=True)
# failures of the disk, not of the program: a full or read-only disk, a folder the user may not write
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _error(message: str) -> None:
    # the message verbatim: '[excel]' or '[label]' in it is text, not rich markup
    err_console.print(Text.assemble(("error:", "bold red"), " ", safe(message)), highlight=False)
    sys.exit(2)


def main() -> None:
    handler = RichHandler(console=err_console, show_path=False)
    handler.addFilter(EscapeControl())  # data in a message (a site_id, a path) never drives the terminal
    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]", handlers=[handler])
    logging.captureWarnings(True)  # library warnings quote data too (a glyph, a column name): same filter
    for noisy in ("lightning.pytorch", "lightning.fabric"):  # device banners and adverts, printed twice
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except MammoInsightError as exc:
        _error(str(exc))
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        where = exc.filename or "writing an output"  # outputs are written atomically: no half file is left
        _error(f"{where}: {exc.strerror or errno.errorcode[exc.errno]}")


if __name__ == "__main__":
    main()
