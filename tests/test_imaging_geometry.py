"""CacheGeometry: round trips, agreement with the real resize, heatmaps back to original pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from mammo_insight.imaging.geometry import CacheGeometry


def _apply(geom: CacheGeometry, image: np.ndarray) -> np.ndarray:
    """What the cache builder does to pixels, written independently of CacheGeometry's maths."""
    crop = image[geom.crop_y0 : geom.crop_y1, geom.crop_x0 : geom.crop_x1]
    if geom.flipped:
        crop = crop[:, ::-1]
    small = cv2.resize(
        np.ascontiguousarray(crop), (geom.resized_width, geom.resized_height), interpolation=cv2.INTER_LINEAR
    )
    out = np.zeros((geom.out_height, geom.out_width), np.float32)
    out[geom.pad_y : geom.pad_y + geom.resized_height, geom.pad_x : geom.pad_x + geom.resized_width] = small
    return out


@pytest.mark.parametrize("flipped", [False, True])
def test_round_trip_is_identity(flipped: bool) -> None:
    geom = CacheGeometry.fit(400, 300, (37, 20, 251, 390), flipped, 128, 96)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(37, 250, 50), rng.uniform(20, 389, 50)
    u, v = geom.to_cache(x, y)
    assert np.all((u >= -0.5) & (u <= 95.5) & (v >= -0.5) & (v <= 127.5))
    x2, y2 = geom.to_original(u, v)
    np.testing.assert_allclose(x2, x, atol=1e-9)
    np.testing.assert_allclose(y2, y, atol=1e-9)


def test_flip_mirrors_inside_crop() -> None:
    plain = CacheGeometry.fit(200, 200, (50, 0, 150, 200), False, 100, 50)
    mirror = CacheGeometry.fit(200, 200, (50, 0, 150, 200), True, 100, 50)
    u, _ = plain.to_cache(60.0, 10.0)
    um, _ = mirror.to_cache(60.0, 10.0)
    assert u == pytest.approx(50 - 1 - um)


@pytest.mark.parametrize("flipped", [False, True])
def test_mapping_agrees_with_pixels(flipped: bool) -> None:
    """A bright blob moved by the pixel pipeline lands where to_cache says."""
    image = np.zeros((300, 240), np.float32)
    yy, xx = np.mgrid[:300, :240]
    cx, cy = 170.0, 90.0
    image[:] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 12.0**2))
    geom = CacheGeometry.fit(300, 240, (60, 30, 230, 280), flipped, 96, 64)
    out = _apply(geom, image)
    vy, vx = np.mgrid[:96, :64]
    mass = out.sum()
    u_obs, v_obs = (out * vx).sum() / mass, (out * vy).sum() / mass
    u, v = geom.to_cache(cx, cy)
    assert abs(u_obs - u) < 0.3 and abs(v_obs - v) < 0.3
    # and back: the heatmap of the cached blob peaks where the original blob was
    back = geom.heatmap_to_original(out)
    assert back.shape == (300, 240)
    py, px = np.unravel_index(np.argmax(back), back.shape)
    assert abs(px - cx) <= 3 and abs(py - cy) <= 3
    assert back[:, :60].max() == 0 and back[:30].max() == 0 and back[280:].max() == 0


def test_heatmap_of_other_size_is_resized_first() -> None:
    geom = CacheGeometry.fit(500, 400, (0, 0, 400, 500), False, 128, 96)
    cam = np.zeros((16, 12), np.float32)
    cam[:8, :6] = 1.0  # top-left quarter of the output canvas
    back = geom.heatmap_to_original(cam)
    assert back.shape == (500, 400)
    assert back[:200, :150].mean() > 0.9 and back[300:, 250:].max() < 0.1


def test_from_row_accepts_series_dict_and_namedtuple() -> None:
    geom = CacheGeometry.fit(400, 300, (10, 20, 290, 380), True, 64, 48)
    row = pd.Series({**geom.as_dict(), "image_id": "a"})
    assert CacheGeometry.from_row(row) == geom
    assert CacheGeometry.from_row(geom.as_dict()) == geom
    rec = next(pd.DataFrame([row]).itertuples(index=False))
    assert CacheGeometry.from_row(rec) == geom


def test_rejects_box_outside_image() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        CacheGeometry.fit(100, 100, (0, 0, 120, 100), False, 64, 64)


@pytest.mark.parametrize("flipped", [False, True])
def test_image_to_cache_puts_an_original_block_where_to_cache_puts_its_centre(flipped: bool) -> None:
    geom = CacheGeometry.fit(300, 200, (20, 30, 180, 290), flipped, 104, 64)
    block = np.zeros((300, 200), np.float32)
    block[100:140, 60:100] = 1.0
    cached = geom.image_to_cache(block)
    assert cached.shape == (104, 64) and cached[: geom.pad_y].sum() == 0
    ys, xs = np.nonzero(cached >= 0.5)
    u, v = geom.to_cache(79.5, 119.5)
    assert (xs.mean(), ys.mean()) == pytest.approx((float(u), float(v)), abs=0.6)
    back = geom.heatmap_to_original(cached) >= 0.5
    assert (back & (block > 0)).sum() / (back | (block > 0)).sum() > 0.85
    with pytest.raises(ValueError, match="does not match the original image"):
        geom.image_to_cache(block[:10])
