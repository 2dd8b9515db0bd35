"""Render a report page from sections with one shared template and stylesheet."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

import mammo_insight
from mammo_insight.files import write_text_atomic

_ENV = Environment(
    loader=PackageLoader("mammo_insight.report", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


@dataclass
class Section:
    """A titled part of a page; blocks are Markup from mammo_insight.report.blocks."""

    title: str
    blocks: list[Markup] = field(default_factory=list)
    anchor: str = ""

    def __post_init__(self) -> None:
        if not self.anchor:
            self.anchor = "".join(ch if ch.isalnum() else "-" for ch in self.title.lower()).strip("-")


def render_page(
    path: str | Path,
    title: str,
    sections: Sequence[Section],
    subtitle: str = "",
    *,
    nav: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write one self-contained HTML page and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    html = _ENV.get_template("page.html").render(
        title=title,
        subtitle=subtitle,
        sections=sections,
        nav=nav,
        version=mammo_insight.__version__,
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        css=Markup(_ENV.loader.get_source(_ENV, "style.css")[0]),
    )
    return write_text_atomic(path, html)
