"""A CAM made on the cache grid lands on the right original pixels (crop, flip, resize, padding)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammo_insight.explain.mapping import cam_to_original, overlay, peak_location, support_mask
from mammo_insight.imaging.geometry import CacheGeometry


def _peak_map(shape: tuple[int, int], u: float, v: float, sigma: float = 1.5) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma**2)).astype(np.float32)


@pytest.mark.parametrize("flipped", [False, True])
def test_cache_peak_lands_on_the_original_pixel(flipped):
    geom = CacheGeometry.fit(400, 300, (40, 60, 240, 380), flipped, 64, 48)
    assert geom.pad_y > 0 or geom.pad_x >= 0
    u, v = 10.0, 30.0  # a cache pixel inside the resized crop
    expected = geom.to_original(u, v)
    full = cam_to_original(_peak_map((64, 48), u, v), geom)
    assert full.shape == (400, 300)
    y, x = np.unravel_index(np.argmax(full), full.shape)
    tol = 1.0 / geom.scale + 1.0  # one cache pixel, in original pixels
    assert abs(x - expected[0]) <= tol and abs(y - expected[1]) <= tol
    # flipping mirrors the result inside the crop box
    mirrored_x = geom.crop_x0 + geom.crop_x1 - 1 - expected[0]
    assert abs(x - mirrored_x) > 20


def test_flip_sends_the_peak_to_the_mirrored_side():
    kw = {"orig_height": 400, "orig_width": 300, "box": (40, 60, 240, 380), "out_height": 64, "out_width": 48}
    plain, flipped = CacheGeometry.fit(flipped=False, **kw), CacheGeometry.fit(flipped=True, **kw)
    cam = _peak_map((64, 48), 8.0, 32.0)
    xp = np.unravel_index(np.argmax(cam_to_original(cam, plain)), (400, 300))[1]
    xf = np.unravel_index(np.argmax(cam_to_original(cam, flipped)), (400, 300))[1]
    assert xp + xf == pytest.approx(40 + 240 - 1, abs=2 / plain.scale + 1)


def test_a_cam_at_model_size_differs_from_the_cache_size():
    """Runs may train at a smaller size than the cache: the map is resized to the cache grid first."""
    geom = CacheGeometry.fit(400, 300, (40, 60, 240, 380), True, 128, 96)
    u, v = 30.0, 70.0
    small = _peak_map((32, 24), (u + 0.5) / 4 - 0.5, (v + 0.5) / 4 - 0.5, sigma=1.0)
    full = cam_to_original(small, geom)
    y, x = np.unravel_index(np.argmax(full), full.shape)
    ex, ey = geom.to_original(u, v)
    assert abs(x - ex) <= 4 / geom.scale and abs(y - ey) <= 4 / geom.scale


def test_round_trip_through_a_real_cache_transform():
    """Build a cache image the way the preprocessor does (crop, flip, resize, pad) from an original with a
    bright disc; use the cache image itself as the 'CAM': mapped back, its peak is inside the disc."""
    original = np.zeros((500, 360), np.float32)
    cx, cy, r = 250.0, 180.0, 14.0
    yy, xx = np.mgrid[0:500, 0:360]
    original += 0.3 * (xx > 120)
    original[(xx - cx) ** 2 + (yy - cy) ** 2 <= r**2] = 1.0
    geom = CacheGeometry.fit(500, 360, (120, 20, 360, 480), True, 96, 64)
    crop = original[geom.crop_y0 : geom.crop_y1, geom.crop_x0 : geom.crop_x1]
    small = cv2.resize(crop, (geom.resized_width, geom.resized_height), interpolation=cv2.INTER_AREA)[:, ::-1]
    cache = np.zeros((96, 64), np.float32)
    cache[geom.pad_y : geom.pad_y + geom.resized_height, geom.pad_x : geom.pad_x + geom.resized_width] = small
    heat = cv2.GaussianBlur(np.where(cache > 0.9, cache, 0), (0, 0), 1.0)
    full = cam_to_original(heat, geom)
    px, py = peak_location(full)
    assert (px - cx) ** 2 + (py - cy) ** 2 <= r**2
    assert full[:, :120].max() == 0  # nothing outside the crop
    assert support_mask(geom).sum() == (geom.crop_x1 - geom.crop_x0) * (geom.crop_y1 - geom.crop_y0)


def test_overlay_draws_lesion_and_peak_in_display_coordinates():
    gray = np.full((100, 80), 0.5, np.float32)
    heat = np.zeros((100, 80), np.float32)
    rgb = overlay(gray, heat, lesions=np.array([[100.0, 60.0, 20.0]]), peak=(40.0, 160.0), scale=0.5)
    assert rgb.shape == (100, 80, 3) and rgb.dtype == np.uint8
    green = (rgb[..., 1] > 200) & (rgb[..., 0] < 100)
    ys, xs = np.nonzero(green)
    assert abs(xs.mean() - 50) < 2 and abs(ys.mean() - 30) < 2  # circle centred at (100, 60) * 0.5
    magenta = (rgb[..., 0] > 150) & (rgb[..., 2] > 150) & (rgb[..., 1] < 80)
    ys, xs = np.nonzero(magenta)
    assert abs(xs.mean() - 20) < 2 and abs(ys.mean() - 80) < 2  # peak at (40, 160) * 0.5
    assert peak_location(heat) is None
