"""MkDocs hook: pages generated from the code at build time, never copied by hand.

A page holds a marker `<!-- generated: NAME -->`; `on_page_markdown` replaces it with what RENDERERS[NAME]
renders: every command's options from the typer app, every training-config key from the config's field
docs, the quick-start notebook. tests/test_docs.py imports this file to check the same renderers.
"""

from __future__ import annotations

import html
import importlib
import json
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


def config_module():
    """The module holding TrainConfig, option_rows and options_table."""
    return importlib.import_module("mammo_insight.runs.config")


def _cell(text: str) -> str:
    """One table cell: on one line, pipes escaped, <placeholders> shown rather than taken for HTML tags."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _type_name(param: Any) -> str:
    """The option's type as its annotation says (typer keeps it in the parameter's type descriptor)."""
    if getattr(param, "is_flag", False):
        return "flag"
    annotation = param.type_descriptor.annotation
    if typing.get_origin(annotation) is list:  # a repeatable option: its items' type
        (annotation,) = typing.get_args(annotation)
    return getattr(annotation, "__name__", str(annotation)).lower()


def _option_row(param: Any) -> str:
    if param.param_type_name == "argument":
        names = f"`{param.name.upper()}`"
    else:
        names = ", ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
    kind = _type_name(param)
    if param.required:
        default = "required"
    elif param.default is None or callable(param.default):
        default = ""
    else:
        shown = param.default
        if isinstance(shown, list | tuple):
            shown = " ".join(map(str, shown))
        default = f"`{shown}`" if str(shown) != "" else ""
    if getattr(param, "multiple", False) or getattr(param, "nargs", 1) == -1:
        kind += " (repeatable)"
    return f"| {names} | {kind} | {default} | {_cell(getattr(param, 'help', None) or '')} |"


def command_section(name: str, command: Any) -> str:
    """One command (a typer command, typer's own click): its summary, usage line and a table of its options."""
    arguments = " ".join(p.name.upper() for p in command.params if p.param_type_name == "argument")
    lines = [f"## `{name}`", "", html.escape((command.help or "").strip(), quote=False), ""]
    lines += ["```", f"mammo-insight {name} [OPTIONS] {arguments}".rstrip(), "```", ""]
    options = [p for p in command.params if p.name != "help"]
    if options:
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        lines += [_option_row(p) for p in options]
        lines.append("")
    if command.epilog and name == "train":
        lines += ["Every key of the `--config` TOML file: see [Training options](training-options.md).", ""]
    return "\n".join(lines)


def cli_reference() -> str:
    """Every command of `mammo_insight.cli.app.app`, in the app's order."""
    import typer.main

    from mammo_insight.cli.app import app

    commands = typer.main.get_command(app).commands  # in the app's order
    return "\n".join(command_section(name, command) for name, command in commands.items())


def training_options() -> str:
    """The Markdown table of every TOML training key with its type, default and meaning."""
    return config_module().options_table()


def _output(output: dict) -> str:
    data = output.get("data", {})
    if "text/html" in data:
        return f'<div class="nb-output">{"".join(data["text/html"])}</div>'
    if "image/png" in data:
        return f'<img class="nb-output" src="data:image/png;base64,{data["image/png"].strip()}">'
    text = "".join(data.get("text/plain", output.get("text", [])))
    return f'<pre class="nb-output">{html.escape(text)}</pre>' if text.strip() else ""


def notebook() -> str:
    """examples/quickstart.ipynb as Markdown: its text, its code, and the results it was saved with.

    Only each cell's result is shown (a stage result's `_repr_html_`, a DataFrame), not logs or progress bars.
    """
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    parts = []
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":  # its headings one level down: the page has its own title
            parts.append(re.sub(r"^#", "##", source, flags=re.MULTILINE))
        elif cell["cell_type"] == "code":
            parts.append(f"```python\n{source}\n```")
            results = [o for o in cell.get("outputs", []) if o["output_type"] == "execute_result"]
            parts += [o for o in map(_output, results) if o]
    return "\n\n".join(parts) + "\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "training-options": training_options,
    "notebook": notebook,
}


def render(markdown: str) -> str:
    """Replace every generated-content marker in a page's Markdown."""

    def one(match: re.Match) -> str:
        if match.group(1) not in RENDERERS:
            raise KeyError(f"unknown generated section {match.group(1)!r}; known: {sorted(RENDERERS)}")
        return RENDERERS[match.group(1)]()

    return MARKER.sub(one, markdown)


def on_page_markdown(markdown: str, **_: object) -> str:
    return render(markdown)
