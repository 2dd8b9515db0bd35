"""A contact sheet: each sampled image before cropping (crop box in red) next to its cache version."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.imaging.cache import load_cache_image, write_png_atomic
from mammo_insight.imaging.decode import read_image
from mammo_insight.imaging.pipeline import THUMBS_DIR, PreprocessConfig, prepare, write_thumbnail
from mammo_insight.imaging.resize import resize

log = logging.getLogger(__name__)
TILE_HEIGHT = 200
GAP = 6
LABEL_HEIGHT = 16


def _thumbnail(cache_dir: Path, row: pd.Series, config: PreprocessConfig) -> np.ndarray | None:
    """The before-crop preview, made again from the original when the run that cached it wrote none."""
    import cv2

    path = cache_dir / THUMBS_DIR / f"{row['image_id']}.png"
    if not path.is_file():
        try:
            write_thumbnail(
                cache_dir,
                str(row["image_id"]),
                prepare(read_image(row["image_path"], config.decoder), config),
            )
        except Exception as exc:  # the sheet is a convenience: a missing preview must not fail the run
            log.warning("no preview for %s: %s", row["image_id"], exc, exc_info=True)
            return None
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _fit_height(img: np.ndarray, height: int) -> np.ndarray:
    return resize(img, (height, max(1, round(img.shape[1] * height / img.shape[0]))))


def _circles(img: np.ndarray, xs, ys, rs, *, factor_x: float, factor_y: float) -> None:
    import cv2

    for x, y, r in zip(xs, ys, rs, strict=True):
        radius = max(2, int(np.rint(r * (factor_x + factor_y) / 2)))
        centre = (int(np.rint(x * factor_x)), int(np.rint(y * factor_y)))
        cv2.circle(img, centre, radius, (40, 200, 40), 1, cv2.LINE_AA)


def _pair(
    cache_dir: Path, row: pd.Series, config: PreprocessConfig, lesions: pd.DataFrame
) -> np.ndarray | None:
    import cv2

    thumb = _thumbnail(cache_dir, row, config)
    if thumb is None:
        return None
    before = cv2.cvtColor(_fit_height(thumb, TILE_HEIGHT), cv2.COLOR_GRAY2RGB)
    sx, sy = before.shape[1] / row["orig_width"], TILE_HEIGHT / row["orig_height"]
    p0 = (int(row["crop_x0"] * sx), int(row["crop_y0"] * sy))
    p1 = (
        min(before.shape[1] - 1, int(np.ceil(row["crop_x1"] * sx))),
        min(TILE_HEIGHT - 1, int(np.ceil(row["crop_y1"] * sy))),
    )
    cv2.rectangle(before, p0, p1, (255, 40, 40), 2)
    after = (load_cache_image(cache_dir, row) * 255).round().astype(np.uint8)
    after = cv2.cvtColor(_fit_height(after, TILE_HEIGHT), cv2.COLOR_GRAY2RGB)
    if len(lesions):
        _circles(before, lesions["x"], lesions["y"], lesions["radius"], factor_x=sx, factor_y=sy)
        f = TILE_HEIGHT / row["out_height"]
        _circles(
            after, lesions["cache_x"], lesions["cache_y"], lesions["cache_radius"], factor_x=f, factor_y=f
        )
    cv2.rectangle(after, (0, 0), (after.shape[1] - 1, TILE_HEIGHT - 1), (60, 120, 255), 1)
    pair = np.full((TILE_HEIGHT + LABEL_HEIGHT, before.shape[1] + GAP + after.shape[1], 3), 255, np.uint8)
    pair[LABEL_HEIGHT:, : before.shape[1]] = before
    pair[LABEL_HEIGHT:, before.shape[1] + GAP :] = after
    label = f"{row['image_id']}{' flipped' if row['flipped'] else ''}"
    cv2.putText(
        pair, label[:40], (2, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA
    )
    return pair


def write_contact_sheet(
    cache_dir: str | Path,
    rows: pd.DataFrame,
    config: PreprocessConfig,
    path: str | Path,
    *,
    annotations: pd.DataFrame | None = None,
    columns: int | None = None,
) -> Path | None:
    """Write the sheet for ``rows`` (ok index rows) to ``path``; None when there is nothing to show.

    Lesions (annotations.parquet rows) are drawn as green circles on both sides, a check that they
    were carried into cache coordinates correctly.
    """
    cache_dir = Path(cache_dir)
    annotations = annotations if annotations is not None else pd.DataFrame(columns=["image_id"])
    by_image = {k: g for k, g in annotations.groupby(annotations["image_id"].astype(str))}
    empty = annotations.iloc[:0]
    pairs = [
        p
        for p in (
            _pair(cache_dir, row, config, by_image.get(str(row["image_id"]), empty))
            for _, row in rows.iterrows()
        )
        if p is not None
    ]
    if not pairs:
        return None
    columns = columns or (4 if len(pairs) <= 24 else 10)
    cell_w = max(p.shape[1] for p in pairs) + 2 * GAP
    cell_h = TILE_HEIGHT + LABEL_HEIGHT + 2 * GAP
    n_rows = int(np.ceil(len(pairs) / columns))
    sheet = np.full((n_rows * cell_h, min(columns, len(pairs)) * cell_w, 3), 255, np.uint8)
    for i, pair in enumerate(pairs):
        r, c = divmod(i, columns)
        y, x = r * cell_h + GAP, c * cell_w + GAP
        sheet[y : y + pair.shape[0], x : x + pair.shape[1]] = pair
    import cv2

    write_png_atomic(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return Path(path)
