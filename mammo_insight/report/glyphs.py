"""Marks drawn inside table cells as inline SVG: an estimate with its interval on a scale shared by the
rows of a table (a forest plot whose rows are the table's rows), the axis under those rows, and a cell
shaded by a fraction.

Why not matplotlib for these: the numbers and their picture sit on one row, sharp at any zoom, and a
table has no figure to lay out. The eda page drew the same intervals as eight matplotlib panels and three
more figures: 1.4 s of its 6 s of CPU went to their layout and rasterising (benchmarks/bench_eda.py).
Every number in a mark is formatted here; the only text taken from data, a mark's label, is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

INK = "#1d2330"
ACCENT = "#2f5d9e"
WARN = "#a4361d"
MUTED = "#8a93a3"
HEIGHT = 16
AXIS_HEIGHT = 20
LOG_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
DASHES = {"dashed": "3 2", "dotted": "1 2", "solid": ""}


@dataclass(frozen=True)
class Scale:
    """Values from ``low`` to ``high`` across a mark ``width`` pixels wide (log for ratios); values past
    either end are drawn at it, with an arrow when an interval runs past."""

    low: float
    high: float
    log: bool = False
    width: int = 220
    pad: int = 12  # room for a dot, an arrow head or half a tick label at either end

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"a scale needs finite low < high, got {self.low}, {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got {self.low}")

    def x(self, value: float) -> float:
        """Pixel position of ``value``, clipped to the scale."""
        if self.log:
            share = math.log(max(value, 1e-300) / self.low) / math.log(self.high / self.low)
        else:
            share = (value - self.low) / (self.high - self.low)
        return self.pad + min(max(share, 0.0), 1.0) * (self.width - 2 * self.pad)

    def ticks(self) -> list[float]:
        if self.log:
            return [t for t in LOG_TICKS if self.low <= t <= self.high]
        return nice_ticks(self.low, self.high)


def nice_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten apart) from ``low`` to ``high``, at most ``most``."""
    span = high - low
    power = 10.0 ** math.floor(math.log10(span / (most - 1)))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if span / (m * power) <= most - 1)
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 12) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="mark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}">{"".join(body)}</svg>'
    )


def interval(
    estimate: float,
    low: float,
    high: float,
    scale: Scale,
    *,
    colour: str = ACCENT,
    references: Sequence[tuple[float, str, str]] = (),
    band: tuple[float, float] | None = None,
    label: str = "",
) -> Markup:
    """One row's mark: the interval as a line (an arrow head where it runs past the scale), the estimate
    as a dot. ``references``: (value, colour, "dashed" | "dotted" | "solid") lines across the row (the
    overall rate, an odds ratio of 1, a threshold); ``band``: a range shaded behind (a permutation null,
    a model's 95% band). NaN parts are left out; an all-NaN row is an empty mark."""
    mid = HEIGHT / 2
    body = []
    if band is not None and _finite(*band):
        left, right = scale.x(band[0]), scale.x(band[1])
        body.append(
            f'<rect x="{left:.1f}" y="{mid - 5:.1f}" width="{max(right - left, 1.0):.1f}" height="10" '
            f'fill="{MUTED}" fill-opacity="0.35"/>'
        )
    for value, stroke, dash in references:
        if _finite(value) and scale.low <= value <= scale.high:
            pos = scale.x(value)
            body.append(
                f'<line x1="{pos:.1f}" y1="0" x2="{pos:.1f}" y2="{HEIGHT}" stroke="{stroke}" '
                f'stroke-width="1" stroke-dasharray="{DASHES[dash]}"/>'
            )
    if _finite(low, high):
        left, right = scale.x(low), scale.x(high)
        body.append(
            f'<line x1="{left:.1f}" y1="{mid}" x2="{right:.1f}" y2="{mid}" stroke="{colour}" stroke-width="2"/>'
        )
        if high > scale.high:
            body.append(f'<path d="M{right:.1f},{mid - 4} l5,4 l-5,4 z" fill="{colour}"/>')
        if low < scale.low:
            body.append(f'<path d="M{left:.1f},{mid - 4} l-5,4 l5,4 z" fill="{colour}"/>')
    if _finite(estimate):
        body.append(f'<circle cx="{scale.x(estimate):.1f}" cy="{mid}" r="3.5" fill="{colour}"/>')
    return _svg(scale.width, HEIGHT, body, label)


def axis(scale: Scale, unit: str = "") -> Markup:
    """The scale's ticks and their values, for the row under the marks that share it."""
    body = [f'<line x1="{scale.pad}" y1="1" x2="{scale.width - scale.pad}" y2="1" stroke="{MUTED}"/>']
    for tick in scale.ticks():
        pos = scale.x(tick)
        body.append(f'<line x1="{pos:.1f}" y1="1" x2="{pos:.1f}" y2="5" stroke="{MUTED}"/>')
        body.append(
            f'<text x="{pos:.1f}" y="{AXIS_HEIGHT - 3}" font-size="10" text-anchor="middle" '
            f'fill="{INK}">{escape(f"{tick:g}{unit}")}</text>'
        )
    return _svg(scale.width, AXIS_HEIGHT, body, f"scale from {scale.low:g}{unit} to {scale.high:g}{unit}")


def heat(fraction: float, text: str) -> Markup:
    """``text`` on a background whose strength is ``fraction`` (0 white, 1 the warning colour)."""
    share = min(max(fraction, 0.0), 1.0) if _finite(fraction) else 0.0
    ink = "#ffffff" if share > 0.6 else INK
    return Markup(
        f'<span class="heat" style="background:rgba(164,54,29,{share:.2f});color:{ink}">{escape(text)}</span>'
    )
