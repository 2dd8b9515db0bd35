"""Lesion annotations: one table per cohort and per cache, for every shape a dataset gives.

This module owns the annotations table: its columns, how each shape is read and validated, how it is
carried into cache pixels (``CACHE/annotations.parquet`` and ``CACHE/masks/``), and how a lesion is
rasterised for the checks (Grad-CAM, lesion maps) and for patch sampling. Nothing else reads the file.

Shapes (column ``shape``; coordinates in original pixels, pixel centres, x right, y down, as in
:mod:`mammo_insight.imaging.geometry`):

- ``circle``: x, y, radius (mini-MIAS centre and radius, the synthetic cohort's planted lesions);
- ``box``: x0, y0, x1, y1, half-open like the crop box (pixels x0 <= x < x1 are inside): INbreast-
  and VinDr-style boxes;
- ``mask``: mask_path, a file (DICOM or PNG) the size of the original image, non-zero inside the
  lesion (CBIS-DDSM ROI masks). A file of another size or with more than two values (TCIA's folders
  mix the ROI mask with the cropped lesion image) is skipped with a warning naming it.

Every row also carries x, y, radius (for a box its centre and half-diagonal, for a mask its centroid
and equal-area radius): a circle that stands for the lesion where only a point and a size are needed
(overlays, the contact sheet). The checks use the true shape.

In the cache the table adds cache_x, cache_y, cache_radius, the bounding box cache_x0..cache_y1
(half-open, cache pixels) and, for masks, cache_mask: the mask carried through the image's crop, flip,
resize and padding (:meth:`CacheGeometry.image_to_cache`) as a PNG under CACHE/masks/.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.errors import MammoInsightError
from mammo_insight.files import atomic_write
from mammo_insight.imaging.geometry import CacheGeometry

log = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.parquet"
MASKS_DIR = "masks"
SHAPES = ("circle", "box", "mask")
COHORT_COLUMNS = ["image_id", "shape", "x", "y", "radius", "x0", "y0", "x1", "y1", "mask_path"]
CACHE_COLUMNS = [
    *COHORT_COLUMNS,
    "cache_x",
    "cache_y",
    "cache_radius",
    "cache_x0",
    "cache_y0",
    "cache_x1",
    "cache_y1",
    "cache_mask",
]
REQUIRED = {"circle": ["x", "y", "radius"], "box": ["x0", "y0", "x1", "y1"], "mask": ["mask_path"]}
NUMERIC = ["x", "y", "radius", "x0", "y0", "x1", "y1"]
MASK_LEVEL = 0.5  # a cache pixel is inside a mask lesion when at least half of it was


def empty(columns: list[str] | None = None) -> pd.DataFrame:
    """A table with no lesion and the canonical columns (the cohort's, or the ones given)."""
    columns = COHORT_COLUMNS if columns is None else columns
    return pd.DataFrame(
        {c: pd.Series(dtype="object" if c in ("image_id", "shape") else "float64") for c in columns}
    )


def normalise(annotations: pd.DataFrame, source: str = "annotations") -> pd.DataFrame:
    """The canonical cohort table: shape filled (circle when absent), every shape's columns checked.

    A row missing what its shape needs is a MammoInsightError naming ``source``, the column and the row.
    Extra columns (abnormality, severity ...) are kept after the canonical ones.
    """
    table = annotations.copy()
    if "shape" not in table:
        table["shape"] = "circle"
    for column in COHORT_COLUMNS:
        if column not in table:
            table[column] = None
    table["image_id"] = table["image_id"].astype(str)
    table["shape"] = table["shape"].fillna("circle").astype(str).str.lower()
    unknown = ~table["shape"].isin(SHAPES)
    if unknown.any():
        row = int(unknown.to_numpy().argmax())
        raise MammoInsightError(
            f"{source}: column 'shape' row {row}: {table['shape'].iloc[row]!r} is not one of {', '.join(SHAPES)}"
        )
    for column in NUMERIC:
        values = pd.to_numeric(table[column], errors="coerce")
        spoiled = values.isna() & table[column].notna()
        if spoiled.any():
            row = int(spoiled.to_numpy().argmax())
            raise MammoInsightError(
                f"{source}: column '{column}' row {row} holds {table[column].iloc[row]!r}, not a number"
            )
        table[column] = values.astype("float64")
    for shape, columns in REQUIRED.items():
        rows = table["shape"] == shape
        for column in columns:
            missing = rows & table[column].isna()
            if missing.any():
                row = int(missing.to_numpy().argmax())
                raise MammoInsightError(f"{source}: a {shape} needs column '{column}'; row {row} has none")
    boxes = table["shape"] == "box"
    empty_box = boxes & ((table["x1"] <= table["x0"]) | (table["y1"] <= table["y0"]))
    if empty_box.any():
        raise MammoInsightError(
            f"{source}: box row {int(empty_box.to_numpy().argmax())} is empty (x1 <= x0 or y1 <= y0)"
        )
    table.loc[boxes, "x"] = (table.loc[boxes, "x0"] + table.loc[boxes, "x1"] - 1) / 2
    table.loc[boxes, "y"] = (table.loc[boxes, "y0"] + table.loc[boxes, "y1"] - 1) / 2
    table.loc[boxes, "radius"] = (
        np.hypot(
            table.loc[boxes, "x1"] - table.loc[boxes, "x0"], table.loc[boxes, "y1"] - table.loc[boxes, "y0"]
        )
        / 2
    )
    extras = [c for c in table.columns if c not in COHORT_COLUMNS]
    return table[COHORT_COLUMNS + extras].reset_index(drop=True)


def read_mask_file(path: str | Path, shape: tuple[int, int]) -> np.ndarray | None:
    """A lesion mask file as a boolean array of ``shape``; None (with a warning naming it) when unusable."""
    from mammo_insight.imaging.decode import read_image

    try:
        pixels = read_image(path).pixels
    except Exception as exc:  # noqa: BLE001 - one unreadable mask never stops the cache
        log.warning("lesion mask %s unreadable (%s); that lesion is left out", path, exc)
        return None
    if pixels.shape != tuple(shape):
        log.warning(
            "lesion mask %s is %dx%d but its image is %dx%d (a cropped lesion image, not its ROI mask?); "
            "left out",
            path,
            pixels.shape[1],
            pixels.shape[0],
            shape[1],
            shape[0],
        )
        return None
    if len(np.unique(pixels[:: max(1, pixels.shape[0] // 256), :: max(1, pixels.shape[1] // 256)])) > 2:
        log.warning("lesion mask %s holds more than two values: not a binary ROI mask; left out", path)
        return None
    mask = pixels > 0
    if not mask.any():
        log.warning("lesion mask %s is empty; left out", path)
        return None
    return mask


def mask_file(patient_id: str, image_id: str, number: int) -> str:
    """Where a lesion's cache-space mask lives, relative to CACHE."""
    return f"{MASKS_DIR}/{patient_id}/{image_id}_{number}.png"


def to_cache(annotations: pd.DataFrame, index: pd.DataFrame, cache_dir: str | Path) -> pd.DataFrame:
    """The cache's table: lesions of ok images in original and cache pixels; mask lesions written as PNGs.

    ``annotations`` is a cohort table (normalised here); ``index`` the cache index with geometry columns.
    """
    from mammo_insight.imaging.cache import write_png_atomic

    table = normalise(annotations) if len(annotations) else empty()
    ok = (
        index[index["status"] == "ok"]
        .assign(image_id=lambda f: f["image_id"].astype(str))
        .set_index("image_id")
    )
    parts = []
    for image_id, group in table.groupby("image_id", sort=False):
        if image_id not in ok.index:
            continue
        row = ok.loc[image_id]
        geom = CacheGeometry.from_row(row)
        part = group.copy()
        part["cache_mask"] = None
        keep = np.ones(len(part), dtype=bool)
        for k, (i, lesion) in enumerate(part.iterrows()):
            if lesion["shape"] != "mask":
                continue
            mask = read_mask_file(lesion["mask_path"], (geom.orig_height, geom.orig_width))
            if mask is None:
                keep[k] = False
                continue
            ys, xs = np.nonzero(mask)
            part.loc[i, ["x", "y", "radius"]] = [xs.mean(), ys.mean(), np.sqrt(len(xs) / np.pi)]
            part.loc[i, ["x0", "y0", "x1", "y1"]] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            rel = mask_file(str(row["patient_id"]), image_id, k)
            cached = geom.image_to_cache(mask) >= MASK_LEVEL
            write_png_atomic(Path(cache_dir) / rel, cached.astype(np.uint8) * 255)
            part.loc[i, "cache_mask"] = rel
        part = part[keep]
        if part.empty:
            continue
        part["cache_x"], part["cache_y"] = geom.to_cache(part["x"].to_numpy(float), part["y"].to_numpy(float))
        part["cache_radius"] = geom.length_to_cache(part["radius"].to_numpy(float))
        part[["cache_x0", "cache_y0", "cache_x1", "cache_y1"]] = _cache_boxes(part, geom)
        parts.append(part)
    if not parts:
        return empty(CACHE_COLUMNS)
    frame = pd.concat(parts, ignore_index=True)
    extras = [c for c in frame.columns if c not in CACHE_COLUMNS]
    return frame[CACHE_COLUMNS + extras]


def _cache_boxes(part: pd.DataFrame, geom: CacheGeometry) -> np.ndarray:
    """Half-open bounding boxes in cache pixels (circles: the box around the circle)."""
    circle = part["shape"].to_numpy() == "circle"
    x0 = np.where(circle, part["x"] - part["radius"], part["x0"] - 0.5)
    x1 = np.where(circle, part["x"] + part["radius"], part["x1"] - 0.5)
    y0 = np.where(circle, part["y"] - part["radius"], part["y0"] - 0.5)
    y1 = np.where(circle, part["y"] + part["radius"], part["y1"] - 0.5)
    u0, v0 = geom.to_cache(x0, y0)
    u1, v1 = geom.to_cache(x1, y1)
    lo_u, hi_u = np.minimum(u0, u1), np.maximum(u0, u1)
    lo_v, hi_v = np.minimum(v0, v1), np.maximum(v0, v1)
    return np.stack(
        [np.floor(lo_u + 0.5), np.floor(lo_v + 0.5), np.ceil(hi_u + 0.5), np.ceil(hi_v + 0.5)], axis=1
    )


def write(table: pd.DataFrame, cache_dir: str | Path) -> Path:
    return atomic_write(Path(cache_dir) / ANNOTATIONS_FILE, lambda p: table.to_parquet(p, index=False))


def read(cache_dir: str | Path) -> pd.DataFrame:
    """The cache's lesions (image_id as str); an empty table with the columns when there are none.

    Caches written before boxes and masks hold circles only: the missing columns are filled.
    """
    path = Path(cache_dir) / ANNOTATIONS_FILE
    if not path.is_file():
        return empty(CACHE_COLUMNS)
    table = pd.read_parquet(path)
    if "shape" not in table:
        table["shape"] = "circle"
    for column in CACHE_COLUMNS:
        if column not in table:
            table[column] = None
    return table.assign(image_id=table["image_id"].astype(str))


def by_image(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """image_id -> its lesion rows."""
    return {str(k): g for k, g in table.groupby(table["image_id"].astype(str), sort=False)}


def circles(rows: pd.DataFrame) -> np.ndarray:
    """(k, 3) x, y, radius in original pixels: the circle standing for each lesion, for overlays."""
    return rows[["x", "y", "radius"]].to_numpy(np.float64).reshape(-1, 3)


def circle_mask(shape: tuple[int, int], lesions: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Boolean mask of the union of circles (k, 3) = x, y, radius, each widened by ``tolerance`` pixels."""
    mask = np.zeros(shape, dtype=bool)
    for x, y, r in np.asarray(lesions, dtype=np.float64).reshape(-1, 3):
        rr = r + tolerance
        y0, y1 = max(0, int(np.floor(y - rr))), min(shape[0], int(np.ceil(y + rr)) + 1)
        x0, x1 = max(0, int(np.floor(x - rr))), min(shape[1], int(np.ceil(x + rr)) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= (xx - x) ** 2 + (yy - y) ** 2 <= rr**2
    return mask


def _widen(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels within ``tolerance`` pixels of the mask."""
    if tolerance <= 0 or not mask.any():
        return mask
    import cv2

    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return distance <= tolerance


def _cache_mask_image(cache_dir: str | Path, rel: str) -> np.ndarray:
    """A lesion's cache-space mask (load_cache_image refuses a path leading outside the cache)."""
    from mammo_insight.imaging.cache import load_cache_image

    return load_cache_image(cache_dir, rel) >= 0.5


def lesion_mask(
    rows: pd.DataFrame, geometry: CacheGeometry, cache_dir: str | Path, *, tolerance: float = 0.0
) -> np.ndarray:
    """Union of one image's lesions in original pixels, each widened by ``tolerance`` original pixels.

    Masks come back from the cache (the original mask file need not be at hand).
    """
    shape = (geometry.orig_height, geometry.orig_width)
    circle = rows["shape"].astype(str) == "circle"
    mask = circle_mask(shape, circles(rows[circle]), tolerance)
    exact = np.zeros(shape, dtype=bool)
    for lesion in rows[~circle].to_dict("records"):
        if lesion["shape"] == "box":
            x0, y0 = max(0, int(np.ceil(lesion["x0"]))), max(0, int(np.ceil(lesion["y0"])))
            exact[y0 : max(y0, int(np.ceil(lesion["y1"]))), x0 : max(x0, int(np.ceil(lesion["x1"])))] = True
        else:
            back = geometry.heatmap_to_original(
                _cache_mask_image(cache_dir, lesion["cache_mask"]).astype(np.float32)
            )
            exact |= back >= MASK_LEVEL
    return mask | _widen(exact, tolerance)


def lesion_masker(
    rows: pd.DataFrame, geometry: CacheGeometry, cache_dir: str | Path
) -> Callable[[float], np.ndarray]:
    """tolerance -> ``lesion_mask`` of these rows widened by it (what the map checks ask for)."""
    return lambda tolerance: lesion_mask(rows, geometry, cache_dir, tolerance=tolerance)


def cache_lesion_mask(
    rows: pd.DataFrame, shape: tuple[int, int], cache_dir: str | Path, *, tolerance: float = 0.0
) -> np.ndarray:
    """Union of one image's lesions in cache pixels (``shape`` = the cache canvas), widened by ``tolerance``."""
    circle = rows["shape"].astype(str) == "circle"
    mask = circle_mask(
        shape, rows.loc[circle, ["cache_x", "cache_y", "cache_radius"]].to_numpy(float), tolerance
    )
    exact = np.zeros(shape, dtype=bool)
    for lesion in rows[~circle].to_dict("records"):
        if lesion["shape"] == "box":
            x0, y0 = max(0, int(lesion["cache_x0"])), max(0, int(lesion["cache_y0"]))
            exact[y0 : int(lesion["cache_y1"]), x0 : int(lesion["cache_x1"])] = True
        else:
            exact |= _cache_mask_image(cache_dir, lesion["cache_mask"])
    return mask | _widen(exact, tolerance)
