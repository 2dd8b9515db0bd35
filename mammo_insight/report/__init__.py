"""Self-contained HTML reports: one look for every stage, figures embedded, data text escaped."""

from mammo_insight.report.blocks import (
    bullet_list,
    details,
    figure,
    fmt_ci,
    image,
    metric_cards,
    paragraph,
    raw_link,
    table,
)
from mammo_insight.report.render import Section, render_page

__all__ = [
    "Section",
    "bullet_list",
    "details",
    "figure",
    "fmt_ci",
    "image",
    "metric_cards",
    "paragraph",
    "raw_link",
    "render_page",
    "table",
]
