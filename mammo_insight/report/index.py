"""The report index: one page linking every stage's report, with each stage's headline numbers.

A stage directory is recognised by its manifest.json ("stage" key, written by write_manifest);
the headline numbers come from the files the CLI contract names, so any run can be indexed,
wherever and whenever it was produced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mammo_insight.errors import MammoInsightError
from mammo_insight.report.blocks import metric_cards, paragraph, raw_link, table
from mammo_insight.report.render import Section, render_page

STAGE_ORDER = ["synth", "cohort", "eda", "preprocess", "train", "evaluate", "embed", "fuse-train", "explain",
               "predict"]
STAGE_TITLES = {"eda": "Dataset study (EDA)", "preprocess": "Image cache", "train": "CNN training",
                "evaluate": "External validation", "embed": "Embeddings", "fuse-train": "Fusion: LightGBM + SHAP",
                "explain": "Grad-CAM explanations", "predict": "Predictions on new studies"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _metric(block: Any, name: str) -> str:
    """'0.812 (0.75-0.87)' from {"name": {"value", "ci_low", "ci_high"}}; '' when absent."""
    entry = block.get(name) if isinstance(block, dict) else None
    if not isinstance(entry, dict) or entry.get("value") is None:
        return ""
    text = f"{entry['value']:.3f}"
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        text += f" ({entry['ci_low']:.3f}–{entry['ci_high']:.3f})"
    return text


def headline(stage: str, run_dir: Path) -> dict[str, str]:
    """The few numbers worth seeing on the index for one stage directory."""
    if stage == "eda":
        s = _read_json(run_dir / "summary.json")
        return {"images": f"{s.get('n_images', '')}", "women": f"{s.get('n_patients', '')}",
                "breast prevalence": f"{s.get('prevalence_breast', float('nan')):.2%}" if s else ""}
    if stage in ("train", "evaluate"):
        m = _read_json(run_dir / "metrics.json")
        breast = m.get("breast", {})
        return {"breast ROC-AUC": _metric(breast, "roc_auc"), "breast pF1": _metric(breast, "pf1"),
                "breast PR-AUC": _metric(breast, "pr_auc")}
    if stage == "fuse-train":
        m = _read_json(run_dir / "metrics.json")
        return {f"{k} ROC-AUC": _metric(m.get(k, {}), "roc_auc") for k in ("metadata", "image", "fused") if k in m}
    if stage == "explain":
        m = _read_json(run_dir / "cam_metrics.json")
        return {k.replace("_", " "): f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, ""))
                for k in ("method", "n_cases", "pointing_game", "energy_inside", "randomisation_rank_corr")
                if k in m}
    if stage == "predict":
        return _predict_headline(run_dir)
    if stage == "preprocess":
        failures = run_dir / "failures.csv"
        n_failed = max(0, sum(1 for _ in failures.open()) - 1) if failures.is_file() else 0
        return {"failed images": str(n_failed)}
    return {}


def _predict_headline(run_dir: Path) -> dict[str, str]:
    import pandas as pd

    name = _read_json(run_dir / "manifest.json").get("config", {}).get("out")
    try:
        breasts = pd.read_csv(run_dir / str(name))
    except (OSError, ValueError):
        return {}
    if "decision" not in breasts:
        return {}
    return {"breasts scored": str(len(breasts)), "flagged positive": str(int(breasts["decision"].sum()))}


def find_stage_dirs(roots: list[Path]) -> list[tuple[str, Path]]:
    """(stage, dir) for every directory under roots holding a manifest.json, in data-flow order."""
    found: list[tuple[str, Path]] = []
    for root in roots:
        if not root.exists():
            raise MammoInsightError(f"report: {root} does not exist")
        for manifest in sorted([root / "manifest.json", *root.glob("*/manifest.json")]):
            if manifest.is_file():
                stage = str(_read_json(manifest).get("stage", "unknown"))
                found.append((stage, manifest.parent))
    if not found:
        raise MammoInsightError("report: no stage directory (with a manifest.json) found under "
                                + ", ".join(str(r) for r in roots))
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    unique = dict.fromkeys(found)
    return sorted(unique, key=lambda item: (rank.get(item[0], len(rank)), str(item[1])))


def build_index(roots: list[Path], out: Path, title: str = "mammo-insight reports") -> Path:
    """Write OUT/index.html linking each stage's report with its headline numbers."""
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    rows = []
    for stage, run_dir in find_stage_dirs(roots):
        page = next((run_dir / name for name in ("index.html", "contact_sheet.png") if (run_dir / name).is_file()),
                    None)
        href = os.path.relpath(page, out) if page else ""
        numbers = {k: v for k, v in headline(stage, run_dir).items() if v}
        blocks = [paragraph(f"Directory: {os.path.relpath(run_dir, out)}")]
        if numbers:
            blocks.append(metric_cards(numbers))
        label = "Open the contact sheet" if page and page.suffix == ".png" else "Open the report"
        blocks.append(raw_link(label, href) if href else paragraph("This stage wrote no HTML report."))
        sections.append(Section(f"{STAGE_TITLES.get(stage, stage)} — {run_dir.name}", blocks))
        rows.append({"stage": stage, "directory": os.path.relpath(run_dir, out), **numbers})
    import pandas as pd

    overview = Section("Overview", [paragraph("Every stage writes its own directory with a manifest (config, "
                                              "seed, package versions, input hashes); this page links them."),
                                    table(pd.DataFrame(rows).fillna(""))])
    return render_page(out / "index.html", title, [overview, *sections],
                       subtitle="From the dataset to explained models, one page per stage.")
