"""The per-case mechanics of `explain`: model inputs, CAMs mapped to the original pixels, checks, figures.

`explain_batch` takes a batch of cases (an image, or a breast's views for a multi-view run), runs the
trained and the random-weight explainers on them and returns one `ExplainedCase` per case: the per-image
check records, the case figure (PNG bytes) and its gallery thumbnail. With a patch run
(``CaseContext.lesion_maps``) each image also gets the patch model's lesion map, checked by the same
``checks.map_checks`` into ``map_``-prefixed columns, and drawn beside the CAM. Nothing is written here: the
explain stage (mammo_insight/stages/explain.py) chooses the cases, runs the fold models and writes files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo_insight.errors import MammoInsightError
from mammo_insight.explain import checks, mapping
from mammo_insight.explain.cam import CamExplainer
from mammo_insight.explain.gallery import compose_panels, png_bytes, safe_name
from mammo_insight.explain.lesion_map import (
    LesionMapExplainer,
    PatchRunMaps,
    lesion_map_record,
    randomisation_rank_corr,
)
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.imaging.geometry import CacheGeometry
from mammo_insight.imaging.resize import resize, thumbnail
from mammo_insight.runs.data import CacheImageDataset, breast_table
from mammo_insight.runs.spec import RunSpec

log = logging.getLogger(__name__)
CASE_TABLE_COLUMNS = [
    "image_id",
    "cam_max",
    "rank_corr",
    "pointing",
    "energy_inside",
    "area_fraction",
    "random_pointing",
    "random_energy_inside",
    "map_max",
    "map_rank_corr",
    "map_pointing",
    "map_energy_inside",
    "map_random_pointing",
]
MAP_PREFIX = "map_"  # the lesion map's columns: the CAM's check names with this prefix


@dataclass(frozen=True, eq=False)
class ExplainedCase:
    """One explained case: its per-image check records, its figure and its gallery thumbnail."""

    case_id: str
    fold: int
    categories: tuple[str, ...]
    label: float
    prob: float  # the fold model's probability now (the OOF file's is in the records)
    records: tuple[dict, ...]  # one per image (view) of the case
    png: bytes  # the case figure: original + CAM, model input, random weights
    thumb: np.ndarray = field(repr=False)

    @property
    def name(self) -> str:
        """File stem of the case's PNG and page under OUT/cases/."""
        return safe_name(self.case_id)

    @property
    def facts(self) -> dict[str, str]:
        return {
            "fold": str(self.fold),
            "label": f"{self.label:g}",
            "probability": f"{self.prob:.3f}",
            "category": ", ".join(self.categories),
        }

    def table(self) -> pd.DataFrame:
        """The per-image numbers its page shows."""
        frame = pd.DataFrame(list(self.records))
        return frame[[c for c in CASE_TABLE_COLUMNS if c in frame]]


def random_twin(spec: RunSpec, seed: int) -> torch.nn.Module:
    """The run's network (architecture, pooling, input normalisation) with fresh random weights, seeded
    without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build_model()
    return model.eval()


def case_images(case_id: str, table: pd.DataFrame, *, unit: str, max_views: int, label: str) -> pd.DataFrame:
    """The cache rows of one case: the image, or a breast's views in the order the model saw them."""
    rows = table[table[unit] == case_id].reset_index(drop=True)
    if unit == "image_id" or rows.empty:
        return rows
    return rows.iloc[breast_table(rows, max_views, label).at[0, "rows"]].reset_index(drop=True)


def load_inputs(
    case_rows: Sequence[pd.DataFrame], cache_dir: Path, *, size: tuple[int, int], multi: bool, max_views: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Model inputs exactly as training saw them (the cache datasets' loading and resizing)."""
    tensors = []
    for rows in case_rows:
        ds = CacheImageDataset(cache_dir, rows, size=size, labels=np.zeros(len(rows)))
        tensors.append(torch.stack([ds.image(i) for i in range(len(rows))]))
    if not multi:
        return torch.cat(tensors), None
    stack = torch.zeros(len(tensors), max_views, 1, *size)
    mask = torch.zeros(len(tensors), max_views, dtype=torch.bool)
    for b, t in enumerate(tensors):
        stack[b, : len(t)] = t
        mask[b, : len(t)] = True
    return stack, mask


@dataclass(frozen=True)
class CaseContext:
    """What every case of an explain run shares: the cache, the model input and the check settings."""

    cache_dir: Path
    index: pd.DataFrame  # ok cache rows, image_id and breast_id as str
    lesions_by_image: Mapping[str, pd.DataFrame]  # annotations rows per image (imaging.annotations)
    unit: str  # image_id (single-view run) or breast_id (multi-view)
    size: tuple[int, int]
    max_views: int
    label: str
    tolerance: float
    display_side: int
    lesion_maps: PatchRunMaps | None = None  # a patch run's lesion maps beside the CAMs

    @property
    def multi(self) -> bool:
        return self.unit == "breast_id"


def explain_batch(
    batch: pd.DataFrame,
    context: CaseContext,
    *,
    trained: CamExplainer | LesionMapExplainer,
    random: CamExplainer | LesionMapExplainer,
) -> list[ExplainedCase]:
    """CAMs of one batch of cases (columns case_id, fold, categories, prob, label) by both explainers."""
    multi = context.multi
    case_rows = [
        case_images(c, context.index, unit=context.unit, max_views=context.max_views, label=context.label)
        for c in batch["case_id"]
    ]
    missing = [c for c, rows in zip(batch["case_id"], case_rows, strict=True) if rows.empty]
    if missing:
        raise MammoInsightError(f"no cache image for case(s) {', '.join(missing)}")
    images, mask = load_inputs(
        case_rows, context.cache_dir, size=context.size, multi=multi, max_views=context.max_views
    )
    got, rnd = trained(images, mask), random(images, mask)
    explained = []
    for b, (case, rows) in enumerate(zip(batch.itertuples(), case_rows, strict=True)):
        prob = float(1 / (1 + np.exp(-got.logits[b])))
        panels, records, thumb = [], [], None
        for v, row in enumerate(rows.to_dict("records")):
            cam = got.maps[b, v] if multi else got.maps[b]
            cam_rand = rnd.maps[b, v] if multi else rnd.maps[b]
            rec, panel = _explain_image(
                row, case, context, cam=cam, cam_rand=cam_rand, prob=prob, grid=trained.grid_shape
            )
            panels.append(panel)
            records.append(rec)
            if v == 0:  # the CAM, and the lesion map beside it when there is one
                shown = [panel[0][0]] + ([panel[1][0]] if context.lesion_maps is not None else [])
                thumb = thumbnail(np.hstack(shown))
        name = safe_name(case.case_id)
        for rec in records:
            rec["png"] = f"cases/{name}.png"
        title = (
            f"{case.case_id}: fold {case.fold}, {'/'.join(case.categories)}, label {case.label:g}, "
            f"p={prob:.3f}"
        )
        explained.append(
            ExplainedCase(
                case_id=str(case.case_id),
                fold=int(case.fold),
                categories=tuple(case.categories),
                label=float(case.label),
                prob=prob,
                records=tuple(records),
                png=png_bytes(compose_panels(panels, title)),
                thumb=thumb,
            )
        )
    return explained


def _explain_image(
    row: dict,
    case,
    context: CaseContext,
    *,
    cam: np.ndarray,
    cam_rand: np.ndarray,
    prob: float,
    grid: tuple[int, int] | None,
) -> tuple[dict, list]:
    """One image of a case: its check record and its figure row (original + CAM, model input, random)."""
    geom = CacheGeometry.from_row(row)
    cache_img = load_cache_image(context.cache_dir, row)
    full = mapping.cam_to_original(cam, geom)
    full_rand = mapping.cam_to_original(cam_rand, geom)
    lesion_rows = context.lesions_by_image.get(str(row["image_id"]))
    rec = {
        "case_id": case.case_id,
        "image_id": row["image_id"],
        "patient_id": row.get("patient_id"),
        "fold": int(case.fold),
        "categories": "+".join(case.categories),
        "label": case.label,
        "oof_prob": case.prob,
        "prob": prob,
        "cam_max": float(cam.max()),
        "rank_corr": checks.rank_correlation(cam, cam_rand),
    }
    lesions = cache_lesions = None
    if lesion_rows is not None and len(lesion_rows):
        cell = half_cell_original(grid, context.size, geom)
        rec.update(
            checks.map_checks(
                full,
                full_rand,
                annotations.lesion_masker(lesion_rows, geom, context.cache_dir),
                mapping.support_mask(geom),
                tolerance=context.tolerance,
                cell=cell,
            )
        )
        lesions = annotations.circles(lesion_rows)
        cache_lesions = lesion_rows[["cache_x", "cache_y", "cache_radius"]].to_numpy(float)
    display, factor, source = mapping.display_image(row, cache_img, geom, context.display_side)
    over = mapping.overlay_original(display, full, factor, lesions)
    model_in = mapping.overlay(cache_img, resize(cam, cache_img.shape[:2]), cache_lesions)
    over_rand = mapping.overlay_original(display, full_rand, factor, lesions)
    panel = [
        (
            over,
            f"{row.get('view', '')} {row.get('laterality', '')}: original ({source}){_verdict(rec.get('pointing'))}",
        ),
        (model_in, "model input"),
        (over_rand, "random weights"),
    ]
    if context.lesion_maps is not None:
        fields, map_panel = _lesion_map_panel(
            context, int(case.fold), cache_img, geom, lesion_rows, lesions, display, factor
        )
        rec.update(fields)
        panel.insert(1, map_panel)
    return rec, panel


def _lesion_map_panel(
    context: CaseContext,
    fold: int,
    cache_img: np.ndarray,
    geom: CacheGeometry,
    lesion_rows: pd.DataFrame | None,
    lesions: np.ndarray | None,
    display: np.ndarray,
    factor: float,
) -> tuple[dict, tuple[np.ndarray, str]]:
    """One image's lesion map from the fold's patch model (a patch run beside the CAMs): its ``map_``
    check fields and its figure panel, drawn on the same display image as the CAM."""
    lesion_map, random_map = context.lesion_maps.maps(fold, cache_img)
    fields = {
        f"{MAP_PREFIX}max": lesion_map.score,
        f"{MAP_PREFIX}rank_corr": randomisation_rank_corr(lesion_map, random_map),
    }
    if lesions is not None:
        record = lesion_map_record(
            lesion_map,
            random_map,
            lesion_rows,
            geom,
            context.cache_dir,
            stride=context.lesion_maps.config.stride,
            tolerance=context.tolerance,
        )
        fields.update({f"{MAP_PREFIX}{k}": v for k, v in record.items()})
    over_map = mapping.overlay_original(
        display, geom.heatmap_to_original(lesion_map.heatmap), factor, lesions
    )
    title = (
        f"lesion map (patch model, max {lesion_map.score:.2f}){_verdict(fields.get(f'{MAP_PREFIX}pointing'))}"
    )
    return fields, (over_map, title)


def _verdict(hit: float | None) -> str:
    return "" if hit is None else (", hit" if hit >= 0.5 else ", miss")


def half_cell_original(grid: tuple[int, int] | None, size: tuple[int, int], geom: CacheGeometry) -> float:
    """Half the diagonal of one CAM grid cell, in original pixels: the finest the map can point."""
    if not grid:
        return 0.0
    cell_h = size[0] / grid[0] * geom.out_height / size[0]  # input pixels -> cache pixels
    cell_w = size[1] / grid[1] * geom.out_width / size[1]
    return float(0.5 * np.hypot(cell_h, cell_w) / np.sqrt(geom.scale_x * geom.scale_y))
