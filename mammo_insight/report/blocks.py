"""Building blocks of a report section. Each returns escaped, ready Markup.

Every string that may come from data goes through markupsafe.escape, so a '<script>' in a CSV
cell shows as text. Figures and images are embedded as base64 data URIs: nothing is fetched.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def paragraph(text: str, css_class: str = "") -> Markup:
    cls = f' class="{escape(css_class)}"' if css_class else ""
    return Markup(f"<p{cls}>{escape(text)}</p>")


def bullet_list(items: Iterable[str]) -> Markup:
    return Markup("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>")


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(draw: Callable[[], Figure], caption: str = "", dpi: int = 100) -> Markup:
    """Draw a matplotlib figure, embed it as PNG and close it (figures left open leak memory in long runs).

    `draw` builds the figure, so that a figure which cannot be drawn (a library refusing odd but valid
    numbers) becomes a note in the page and a warning in the log instead of ending the stage.
    """
    import matplotlib.pyplot as plt
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    fig = None
    try:
        fig = draw()
        buf = io.BytesIO()
        # a constrained layout already fits the page; a tight bbox would only draw the figure twice
        constrained = isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches=None if constrained else "tight")
    except Exception as exc:  # noqa: BLE001 - any drawing failure must leave the rest of the report
        log.warning("figure %r could not be drawn: %s: %s", caption or "untitled", type(exc).__name__, exc)
        return paragraph(
            f"This figure could not be drawn ({type(exc).__name__}: {exc}); the numbers it shows "
            f"are in the tables and files of this stage. Caption: {caption}",
            "note",
        )
    finally:
        if fig is not None:
            plt.close(fig)
    return image(buf.getvalue(), caption)


def image(src: bytes | np.ndarray | str | Path, caption: str = "", width: int | None = None) -> Markup:
    """Embed PNG bytes, a PNG file, or a uint8 array (H,W) / (H,W,3)."""
    if isinstance(src, (str, Path)):
        data = Path(src).read_bytes()
    elif isinstance(src, np.ndarray):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(src).save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    else:
        data = src
    style = f' style="max-width:{int(width)}px"' if width else ""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return Markup(f'<figure><img src="{_png_uri(data)}" alt="{escape(caption)}"{style}>{cap}</figure>')


def _fmt(value, digits: int) -> str:
    if isinstance(value, Markup):  # a mark built by report.glyphs, already escaped
        return value
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "–"
        if value != 0 and (abs(value) < 10**-digits or abs(value) >= 1e6):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "–"
    return str(value)


def _cell_class(value) -> str:
    if isinstance(value, Markup):
        return "mark"
    return "num" if isinstance(value, (int, float, np.number)) else ""


def table(df: pd.DataFrame, caption: str = "", digits: int = 3, max_rows: int = 200) -> Markup:
    """An HTML table of a DataFrame; every cell escaped except the Markup of report.glyphs' marks; long
    tables truncated with a note."""
    shown = df.head(max_rows)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in shown.columns)
    rows = []
    for rec in shown.itertuples(index=False):
        cells = "".join(f'<td class="{_cell_class(v)}">{escape(_fmt(v, digits))}</td>' for v in rec)
        rows.append(f"<tr>{cells}</tr>")
    note = (
        f'<p class="note">{len(df) - max_rows} more rows in the CSV file.</p>' if len(df) > max_rows else ""
    )
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return Markup(
        f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{note}"
    )


def metric_cards(values: Mapping[str, str]) -> Markup:
    """A row of headline numbers: label -> already formatted value."""
    cards = "".join(
        f'<div class="card"><div class="card-value">{escape(v)}</div>'
        f'<div class="card-label">{escape(k)}</div></div>'
        for k, v in values.items()
    )
    return Markup(f'<div class="cards">{cards}</div>')


def details(summary: str, blocks: Iterable[Markup], open_: bool = False) -> Markup:
    """A collapsible part (long tables, methods) that keeps the page short until the reader asks."""
    attr = " open" if open_ else ""
    return Markup(
        f"<details{attr}><summary>{escape(summary)}</summary>"
        + "".join(str(b) for b in blocks)
        + "</details>"
    )


def raw_link(label: str, href: str) -> Markup:
    """A link to a relative file or page of the same output tree."""
    return Markup(f'<a href="{escape(href)}">{escape(label)}</a>')


def fmt_ci(cell: Mapping | None, digits: int = 3, count: bool = False) -> str:
    """'0.812 (0.780–0.845)' from a {"value", "ci_low", "ci_high"} cell: the one way every stage writes an
    estimate with its interval; counts without decimals; '–' when undefined."""
    if not isinstance(cell, Mapping) or cell.get("value") is None or not np.isfinite(cell["value"]):
        return "–"
    spec = ".0f" if count else f".{digits}f"
    text = format(cell["value"], spec)
    low, high = cell.get("ci_low"), cell.get("ci_high")
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        text += f" ({format(low, spec)}–{format(high, spec)})"
    return text
