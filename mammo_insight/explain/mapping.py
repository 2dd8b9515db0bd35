"""CAMs carried from the model input back onto the original mammogram, and the overlays people look at.

A CAM lives on the model's input grid (the cache image, possibly resized to the run's image size).
``CacheGeometry.heatmap_to_original`` undoes the resize, padding, crop and flip, so the map can be
compared with lesion annotations given in original pixels and laid over the original image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from mammo_insight.imaging.geometry import CacheGeometry
from mammo_insight.imaging.resize import resize, scale_by

log = logging.getLogger(__name__)


def cam_to_original(cam: np.ndarray, geometry: CacheGeometry) -> np.ndarray:
    """A CAM over the model input (any H x W) -> float32 map over the original image (0 outside the crop)."""
    return geometry.heatmap_to_original(cam)


def support_mask(geometry: CacheGeometry) -> np.ndarray:
    """Original pixels the model saw (the crop box): where a CAM can point at all."""
    mask = np.zeros((geometry.orig_height, geometry.orig_width), dtype=bool)
    mask[geometry.crop_y0 : geometry.crop_y1, geometry.crop_x0 : geometry.crop_x1] = True
    return mask


def original_from_cache(cache_image: np.ndarray, geometry: CacheGeometry) -> np.ndarray:
    """The original view rebuilt from the cached pixels (crop region only), for display when the
    original file is not at hand; lesion circles drawn from the original annotations still check it."""
    return geometry.heatmap_to_original(cache_image)


def display_scale(shape: tuple[int, int], max_side: int) -> float:
    return min(1.0, max_side / max(shape))


def downsample(image: np.ndarray, factor: float) -> np.ndarray:
    """Shrink for display (float32), never enlarge."""
    image = np.asarray(image, dtype=np.float32)
    return scale_by(image, factor) if factor < 1.0 else image


def colourise(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A [0, 1] map -> float RGB in [0, 1] with a matplotlib colour map."""
    import matplotlib

    return matplotlib.colormaps[cmap](np.clip(heatmap, 0.0, 1.0))[..., :3].astype(np.float32)


def overlay(
    gray: np.ndarray,
    heatmap: np.ndarray,
    lesions: np.ndarray | None = None,
    peak: tuple[float, float] | None = None,
    *,
    alpha: float = 0.5,
    scale: float = 1.0,
) -> np.ndarray:
    """uint8 RGB: the grey image under the colour-mapped CAM, lesion circles in green, the CAM peak as a cross.

    The CAM is blended in proportion to its value, so cold regions leave the mammogram readable.
    ``lesions`` (k, 3) x, y, radius and ``peak`` (x, y) are in the pixel frame of ``gray`` divided by
    ``scale`` (i.e. pass original coordinates and the display factor).
    """
    g = np.clip(np.asarray(gray, dtype=np.float32), 0.0, 1.0)
    hm = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    hm = resize(hm, g.shape[:2])
    weight = alpha * hm[..., None]
    rgb = (1.0 - weight) * np.repeat(g[..., None], 3, axis=2) + weight * colourise(hm)
    out = np.ascontiguousarray((rgb * 255.0).round().astype(np.uint8))
    thick = max(1, round(max(g.shape) / 250))
    for x, y, r in np.asarray(lesions, dtype=np.float64).reshape(-1, 3) if lesions is not None else []:
        centre = (round((x + 0.5) * scale - 0.5), round((y + 0.5) * scale - 0.5))
        cv2.circle(out, centre, max(2, round(r * scale)), (40, 230, 60), thick, lineType=cv2.LINE_AA)
    if peak is not None:
        px, py = (round((v + 0.5) * scale - 0.5) for v in peak)
        size = max(4, 3 * thick + 3)
        cv2.drawMarker(out, (px, py), (255, 255, 255), cv2.MARKER_CROSS, size + 2, thick + 2)
        cv2.drawMarker(out, (px, py), (220, 0, 200), cv2.MARKER_CROSS, size, thick)
    return out


def overlay_original(
    display: np.ndarray, heatmap: np.ndarray, factor: float, lesions: np.ndarray | None = None
) -> np.ndarray:
    """A map at the original film's resolution over its display image (``display_image``'s, ``factor``
    times the original's size), its maximum crossed; ``lesions`` in original pixels."""
    return overlay(display, downsample(heatmap, factor), lesions, peak_location(heatmap), scale=factor)


def peak_location(heatmap: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the map's maximum (mean position of tied maxima); None for an all-zero map."""
    if not np.any(heatmap > 0):
        return None
    ys, xs = np.nonzero(heatmap >= heatmap.max() * (1 - 1e-6))
    return float(xs.mean()), float(ys.mean())


def read_original_display(image_path: str, max_side: int) -> tuple[np.ndarray, float]:
    """The original file as a display image in [0, 1] (same LUT chain as the cache), shrunk to ``max_side``.

    Returns (image, factor) where factor = displayed pixels per original pixel.
    Raises DicomError / OSError when the file cannot be read; callers fall back to the cache.
    """
    from mammo_insight.imaging.decode import read_image
    from mammo_insight.imaging.intensity import LUT_MAX, display_lut, lut_index

    raw = read_image(image_path)
    pixels = raw.pixels
    step = max(1, max(pixels.shape) // 512)
    table = display_lut(raw.header, pixels.dtype, pixels[::step, ::step], raw.photometric)
    display = table[lut_index(pixels)].astype(np.float32) / LUT_MAX
    factor = display_scale(display.shape, max_side)
    return downsample(display, factor), factor


def display_image(
    row: Mapping, cache_image: np.ndarray, geom: CacheGeometry, side: int
) -> tuple[np.ndarray, float, str]:
    """(display image, factor, source): the original file when readable, else rebuilt from the cache."""
    path = row.get("image_path")
    if isinstance(path, str) and Path(path).is_file():
        try:
            img, factor = read_original_display(path, side)
            if img.shape[:2] == tuple(round(v * factor) for v in (geom.orig_height, geom.orig_width)):
                return img, factor, "original file"
        except Exception as exc:  # noqa: BLE001 - a display fallback, never a reason to lose the case
            log.debug("original %s unreadable for display: %s", path, exc)
    factor = display_scale((geom.orig_height, geom.orig_width), side)
    return downsample(original_from_cache(cache_image, geom), factor), factor, "rebuilt from cache"
