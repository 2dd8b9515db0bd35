"""Which cases to show, and the pages that show them.

The gallery takes, per fold, the most confident true positives, false positives and false negatives
from the out-of-fold predictions at the run's operating threshold (config.json ``threshold``): the
cases where a wrong explanation would mislead most; and the most confident true negatives (normal or
benign breasts: in CMMD every negative is a biopsied benign finding), so the maps of cancers can be set
beside the maps of breasts the model calls clear. Each case gets a PNG (original with the CAM,
model input with the CAM, the randomised model's CAM) and a page; the index holds the checks and
thumbnails linking to the case pages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from markupsafe import Markup

from mammo_insight.imaging.resize import resize
from mammo_insight.report import (
    Section,
    bullet_list,
    image,
    metric_cards,
    paragraph,
    raw_link,
    render_page,
    table,
)

CATEGORIES = {
    "TP": "most confident true positives",
    "FP": "most confident false positives",
    "FN": "most confident false negatives (missed cancers, lowest probability)",
    "TN": "most confident true negatives (normal or benign, lowest probability): to compare with the TP maps",
}


def select_gallery(
    oof: pd.DataFrame, threshold: float, n: int, unit: str = "image_id", *, label: str = "cancer"
) -> pd.DataFrame:
    """Per fold, n cases of each category: TP and FP by highest probability, FN and TN by lowest.

    Returns columns case_id, fold, category, prob, label (one row per case and category).
    """
    df = oof[oof[label].notna()].drop_duplicates(unit)
    predicted = df["prob"] >= threshold
    picks = []
    for fold, g in df.groupby("fold", sort=True):
        pos, pred = g[label] == 1, predicted.loc[g.index]
        chosen = {
            "TP": g[pos & pred].nlargest(n, "prob"),
            "FP": g[~pos & pred].nlargest(n, "prob"),
            "FN": g[pos & ~pred].nsmallest(n, "prob"),
            "TN": g[~pos & ~pred].nsmallest(n, "prob"),
        }
        for category, rows in chosen.items():
            picks.append(
                pd.DataFrame(
                    {
                        "case_id": rows[unit].astype(str),
                        "fold": int(fold),
                        "category": category,
                        "prob": rows["prob"].to_numpy(),
                        "label": rows[label].to_numpy(),
                    }
                )
            )
    columns = ["case_id", "fold", "category", "prob", "label"]
    return pd.concat(picks, ignore_index=True)[columns] if picks else pd.DataFrame(columns=columns)


def safe_name(case_id: str) -> str:
    """A file name for a case id (ids come from data: keep only safe characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(case_id))[:120] or "case"


def _caption(text: str, width: int, height: int = 22) -> np.ndarray:
    """A white strip with dark text (PIL's built-in font: no font files, fast)."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, 4), text, fill=(29, 35, 48), font=ImageFont.load_default(size=13))
    return np.asarray(strip)


def compose_panels(
    panels: Sequence[Sequence[tuple[np.ndarray, str]]], title: str, height: int = 360
) -> np.ndarray:
    """uint8 RGB sheet: one row per view, each panel (uint8 RGB, caption) scaled to ``height``, titled on top.

    Drawn with numpy and PIL rather than matplotlib, which spent most of explain's time on layout.
    """

    rows = []
    for row in panels:
        cells = []
        for img, caption in row:
            w = max(1, round(img.shape[1] * height / img.shape[0]))
            scaled = resize(img, (height, w))
            cell = np.vstack(
                [
                    _caption(caption, max(w, 160)),
                    np.pad(scaled, ((0, 0), (0, max(w, 160) - w), (0, 0)), constant_values=255),
                ]
            )
            cells.append(np.pad(cell, ((0, 0), (0, 8), (0, 0)), constant_values=255))
        rows.append(np.hstack(cells))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.vstack([_caption(title, width, 26), *rows])


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of a uint8 RGB array (cv2 at zlib's default level 6: about 7% smaller than level 3 for
    twice the time, some 30 ms more per case figure; every case figure is kept twice, as a file and inside its
    page)."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def _fmt(value: float | None, digits: int = 3) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and not np.isfinite(value))
        else f"{value:.{digits}f}"
    )


def _mean_ci(summary: Mapping, name: str) -> str:
    """'mean (low–high)' of one check of a summary (``checks.summarise_checks``), '–' when absent."""
    entry = summary.get(name) or {}
    if entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.3f} ({_fmt(entry.get('ci_low'))}–{_fmt(entry.get('ci_high'))})"


def render_case_page(
    path,
    case_id: str,
    png_name: str,
    facts: Mapping[str, str],
    *,
    per_image: pd.DataFrame,
    method: str,
    lesion_map: bool = False,
):
    """OUT/cases/<case>.html: the case figure, its numbers, and how to read it."""
    beside = (
        "Second: the patch model's lesion map (the same fold's patch classifier slid over the breast) on "
        "the same original, cross at its maximum. "
        if lesion_map
        else ""
    )
    blocks = [
        metric_cards(dict(facts)),
        image(
            path.parent / png_name,
            caption=(
                f"First: {method} of the trained model on the original image (green circle: annotated lesion; "
                f"cross: CAM maximum). {beside}Then the model input (after crop, flip, resize and padding) with "
                "the CAM. Last: the same architecture with random weights; if it looks like the first panel, the "
                "map shows image structure, not what the model learned."
            ),
        ),
        raw_link("Back to the gallery", "../index.html"),
    ]
    sections = [Section("Case", blocks)]
    if not per_image.empty:
        sections.append(Section("Numbers per image", [table(per_image)]))
    return render_page(
        path,
        f"CAM case {case_id}",
        sections,
        subtitle=f"{method}; mammo-insight explain",
        nav=[("Gallery", "../index.html")],
    )


def gallery_block(items: Sequence[tuple[np.ndarray, str, str]]) -> Markup:
    """A grid of thumbnails (uint8 RGB, caption, link to the case page)."""
    cells = "".join(
        f"<div>{image(png_bytes(thumb), caption)}{raw_link('open case', href)}</div>"
        for thumb, caption, href in items
    )
    return Markup(f'<div class="gallery">{cells}</div>')


def checks_section(metrics: Mapping, tolerance: float) -> Section:
    """The headline checks with their chance references and how to read them."""

    def ci(name: str) -> str:
        return _mean_ci(metrics.get("summary", {}), name)

    cards = {
        "cases": str(metrics.get("n_cases", 0)),
        "pointing game": ci("pointing"),
        "energy inside lesion": ci("energy_inside"),
        "lesion area (chance)": ci("area_fraction"),
        "randomisation rank corr.": ci("rank_corr"),
        "randomised pointing game": ci("random_pointing"),
        "pointing game, half-cell tolerance": ci("pointing_cell"),
        "randomised, half-cell tolerance": ci("random_pointing_cell"),
        "widened lesion area (chance)": ci("area_fraction_cell"),
    }
    notes = [
        (
            f"Pointing game: share of annotated images whose CAM maximum lies inside a lesion circle"
            f"{f' widened by {tolerance:g} original pixels' if tolerance else ''}; ties count as a random pick "
            "among the maximal pixels, so a flat map scores the chance level. All lesion figures average the "
            "random sample of annotated images, the rows with in_checks true in the per-image table; gallery cases "
            "are picked by confidence and left out."
        ),
        (
            "Energy inside: share of the CAM's mass inside the lesion. Both have the lesion's share of the "
            "cropped breast region as their chance level (lesion area)."
        ),
        (
            "Randomisation check (Adebayo et al. 2018): Spearman rank correlation between the CAM of the trained "
            "model and of the same architecture with fresh random weights, over all explained images. Near 1: the "
            "map explains nothing; near 0: it depends on what was learned. The randomised model's pointing game "
            "should sit near the chance level."
        ),
        "Intervals: 95% percentile bootstrap resampling women (1000 resamples).",
        (
            f"CAM layer {metrics.get('layer', '?')}: a {' x '.join(map(str, metrics.get('cam_grid') or ['?']))} grid "
            f"over the {' x '.join(map(str, metrics.get('input_size') or ['?']))} model input. A grid cell much larger "
            "than the lesions caps the pointing game (the upsampled map peaks at a cell centre); the half-cell "
            "pointing game widens each lesion by half a cell diagonal, the map's own resolution. For small "
            "lesions train at a larger size or choose a finer layer with --layer (e.g. backbone.layer3)."
        ),
    ]
    blocks = [metric_cards(cards), bullet_list(notes)]
    if metrics.get("lesion_map"):
        blocks += lesion_map_blocks(metrics)
    return Section("Do the maps point at the lesions?", blocks)


def lesion_map_blocks(metrics: Mapping) -> list:
    """Grad-CAM and the patch model's lesion map side by side on the same images, with the chance levels."""
    cam, lesion = metrics.get("summary", {}), metrics["lesion_map"]
    ci = _mean_ci
    rows = [
        {
            "check": name,
            f"{metrics.get('method', 'CAM')}": ci(cam, column),
            "lesion map": ci(lesion["summary"], column),
            "chance (CAM / lesion map)": (
                f"{ci(cam, chance)} / {ci(lesion['summary'], chance)}" if chance else ""
            ),
        }
        for name, column, chance in (
            ("pointing game", "pointing", "area_fraction"),
            ("pointing game, half-cell tolerance", "pointing_cell", "area_fraction_cell"),
            ("energy inside lesion", "energy_inside", "area_fraction"),
            ("randomised pointing game", "random_pointing", "area_fraction"),
            ("randomisation rank corr.", "rank_corr", ""),
        )
    ]
    return [
        Markup("<h3>Beside the lesion map of the patch model</h3>"),
        paragraph(
            f"The patch classifier of {lesion['patch_run']} ({lesion['model']}, {lesion['patch_size']}-pixel "
            f"patches, stride {lesion['stride']} cache pixels), the fold model that never saw the woman, slid "
            "over the breast of the same images and scored by the same checks. Half-cell tolerance widens the "
            "lesion by half of each map's own cell (the CAM grid's, the lesion map's stride), so the two chance "
            "levels differ there."
        ),
        table(pd.DataFrame(rows)),
    ]


def render_index(
    path,
    metrics: Mapping,
    tolerance: float,
    gallery: Mapping[tuple[int, str], list],
    *,
    checks_table: pd.DataFrame,
    failures: Sequence[str],
):
    """OUT/index.html: checks, then one gallery per fold and category, then the per-image table."""
    sections = [checks_section(metrics, tolerance)]
    if metrics.get("n_cases", 0) == 0:
        sections[0].blocks.insert(
            0,
            paragraph(
                "No explained image has a lesion annotation, so only the "
                "randomisation check could be computed.",
                "warn",
            ),
        )
    for fold in sorted({f for f, _ in gallery}):
        blocks = [
            paragraph(
                f"Cases from the patients held out in fold {fold}, explained by that fold's model; "
                f"operating threshold {metrics['threshold']:.4g}."
            )
        ]
        for category, meaning in CATEGORIES.items():
            items = gallery.get((fold, category), [])
            blocks.append(Markup(f"<h3>{category}: {meaning}</h3>"))
            blocks.append(gallery_block(items) if items else paragraph("No case in this category.", "note"))
        sections.append(Section(f"Gallery, fold {fold}", blocks))
    if not checks_table.empty:
        sections.append(
            Section(
                "Per image",
                [
                    paragraph(
                        "Every explained image; lesion columns are empty where "
                        "the image has no annotation. Full table: "
                        "tables/cam_checks.csv."
                    ),
                    table(checks_table),
                ],
            )
        )
    if failures:
        sections.append(Section("Problems", [bullet_list(failures)]))
    nav = [(s.title, f"#{s.anchor}") for s in sections[:1]]
    return render_page(
        path,
        "Grad-CAM explanations",
        sections,
        nav=nav,
        subtitle=f"{metrics['method']} of the malignancy logit, mapped onto the original images; "
        f"run {metrics.get('run', '')}"
        + (f"; lesion maps of {metrics['lesion_map']['patch_run']}" if metrics.get("lesion_map") else ""),
    )
