"""The report index: one page linking every stage's report, with each stage's headline numbers.

A stage output is recognised by its manifest (written by mammo_insight.manifest.write_manifest): its
"stage", its "headline" numbers and its "report" page. The index reads nothing else, so it knows no
stage's files, and any output can be indexed wherever and whenever it was produced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mammo_insight.errors import MammoInsightError
from mammo_insight.report.blocks import metric_cards, paragraph, raw_link, table
from mammo_insight.report.render import Section, render_page

STAGE_ORDER = [
    "synth",
    "cohort",
    "eda",
    "preprocess",
    "train",
    "evaluate",
    "embed",
    "fuse-train",
    "explain",
    "predict",
]
STAGE_TITLES = {
    "eda": "Dataset study (EDA)",
    "preprocess": "Image cache",
    "train": "CNN training",
    "evaluate": "External validation",
    "embed": "Embeddings",
    "fuse-train": "Fusion: LightGBM + SHAP",
    "explain": "Grad-CAM explanations",
    "predict": "Predictions on new studies",
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def find_stage_outputs(roots: list[Path]) -> list[tuple[dict[str, Any], Path]]:
    """(manifest, manifest path) for every stage output under roots, in data-flow order.

    A folder output holds manifest.json; a file output (EMB.parquet, predictions.csv) has FILE.manifest.json
    beside it. Roots are searched themselves and one level down.
    """
    found: dict[Path, dict[str, Any]] = {}
    for root in roots:
        if not root.exists():
            raise MammoInsightError(f"report: {root} does not exist")
        folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
        for folder in folders:
            for path in sorted([folder / "manifest.json", *folder.glob("*.manifest.json")]):
                if path.is_file() and path.resolve() not in found:
                    found[path.resolve()] = _read_json(path)
    if not found:
        raise MammoInsightError(
            "report: no stage output (with a manifest.json) found under " + ", ".join(str(r) for r in roots)
        )
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    return sorted(
        ((m, p) for p, m in found.items()),
        key=lambda item: (rank.get(str(item[0].get("stage")), len(rank)), str(item[1])),
    )


def build_index(roots: list[Path], out: Path, title: str = "mammo-insight reports") -> Path:
    """Write OUT/index.html linking each stage's report under ``roots`` with its headline numbers."""
    return render_index(find_stage_outputs(roots), out, title)


def render_index(outputs: list[tuple[dict[str, Any], Path]], out: Path, title: str) -> Path:
    """OUT/index.html over ``find_stage_outputs``' (manifest, path) pairs; returns the page."""
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    rows = []
    for manifest, path in outputs:
        stage = str(manifest.get("stage", "unknown"))
        name = path.name.removesuffix(".manifest.json") if path.name != "manifest.json" else path.parent.name
        report = manifest.get("report")
        page = path.parent / str(report) if isinstance(report, str) and report else None
        href = os.path.relpath(page, out) if page is not None and page.is_file() else ""
        headline = manifest.get("headline")
        numbers = (
            {str(k): str(v) for k, v in headline.items() if v not in (None, "")}
            if isinstance(headline, dict)
            else {}
        )
        where = os.path.relpath(path.parent if path.name == "manifest.json" else path.with_name(name), out)
        blocks = [paragraph(f"Output: {where}")]
        if numbers:
            blocks.append(metric_cards(numbers))
        label = "Open the contact sheet" if href.endswith(".png") else "Open the report"
        blocks.append(raw_link(label, href) if href else paragraph("This stage wrote no report page."))
        sections.append(Section(f"{STAGE_TITLES.get(stage, stage)} — {name}", blocks))
        rows.append(
            {"stage": stage, "output": where, "headline": "; ".join(f"{k}: {v}" for k, v in numbers.items())}
        )
    import pandas as pd

    overview = Section(
        "Overview",
        [
            paragraph(
                "Every stage output has a manifest (config, seed, package versions, input hashes, headline "
                "numbers); this page shows their headlines and links their reports."
            ),
            table(pd.DataFrame(rows).fillna("")),
        ],
    )
    return render_page(
        out / "index.html",
        title,
        [overview, *sections],
        subtitle="From the dataset to explained models, one page per stage.",
    )
