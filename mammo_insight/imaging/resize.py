"""Resizing for display and thumbnails: one rule for every figure, gallery and contact sheet.

Shrinking averages areas (thin bright structures such as calcifications stay visible); enlarging is
bilinear. Model inputs are not resized here: the cache holds them at their final size.
"""

from __future__ import annotations

import numpy as np

THUMB_SIDE = 256  # the longer side of every thumbnail (contact sheets, galleries, report indexes)


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """image (H, W) or (H, W, C) resized to shape (h, w); the same array when it already has that shape."""
    import cv2

    h, w = int(shape[0]), int(shape[1])
    if image.shape[:2] == (h, w):
        return image
    shrinking = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def scale_by(image: np.ndarray, factor: float) -> np.ndarray:
    """image scaled by factor (each side at least one pixel)."""
    h, w = image.shape[:2]
    return resize(image, (max(1, round(h * factor)), max(1, round(w * factor))))


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """image shrunk so that its longer side is at most `side` (never enlarged)."""
    return scale_by(image, min(1.0, side / max(image.shape[:2])))
