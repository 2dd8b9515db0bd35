"""`report`: one index page over existing stage outputs, read from their manifests."""

from __future__ import annotations

from pathlib import Path

from mammo_insight.report.index import build_index


def write_report(roots: list[Path], out: Path, title: str = "mammo-insight reports") -> Path:
    """OUT/index.html linking every stage output found under roots (and one level down); returns the page."""
    return build_index(roots, out, title)
