"""The image cache on disk: what `mammo-insight preprocess` writes and every image stage reads.

Layout of a cache directory CACHE::

    CACHE/index.parquet        one row per cohort image (ok and failed)
    CACHE/images/<patient_id>/<image_id>.png   8- or 16-bit grayscale PNG, out_height x out_width
    CACHE/annotations.parquet  lesions carried into the cache (may have zero rows; see imaging.annotations)
    CACHE/masks/<patient_id>/<image_id>_<k>.png  mask lesions in cache pixels
    CACHE/failures.csv         image_id, image_path, reason (header only when nothing failed)
    CACHE/config.json          size, bits, flip policy, dataset, label_meaning, crop settings
    CACHE/manifest.json        mammo_insight.manifest.write_manifest (stage "preprocess")
    CACHE/contact_sheet.png    before/after crop for a sample of images, for a person to look at

index.parquet columns: the canonical cohort columns (mammo_insight.cohort.schema.CANONICAL_COLUMNS), then
every other column of the cohort (an adapter's own: a second label, is_augmented, external_only ...),
followed by

- cache_path: PNG path relative to CACHE (None when failed)
- orig_height, orig_width: size of the decoded original image
- crop_x0, crop_y0, crop_x1, crop_y1: breast box in original pixels, x right, y down, half-open
  (columns crop_x0..crop_x1-1 are kept)
- flipped: True when the crop was mirrored left-right so the chest wall lies on the left
- scale: resize factor crop -> cache; pad_x, pad_y: offset of the resized crop in the canvas
- out_height, out_width: the cache image size (the --size option)
- photometric: PhotometricInterpretation as read (MONOCHROME1 images are inverted in the cache)
- transfer_syntax: the DICOM transfer syntax name, or "PNG"/"PGM" for plain images
- status: "ok" or "failed"

Build a :class:`mammo_insight.imaging.geometry.CacheGeometry` from a row with
``CacheGeometry.from_row(row)`` to map points and heatmaps between cache and original pixels.

Cache pixels are display-correct (modality LUT, VOI LUT, MONOCHROME1 inverted): tissue bright on a
dark background, 0 is the padding value. ``load_cache_image`` returns float32 in [0, 1].

annotations.parquet: one row per lesion of an ok image, circles, boxes and masks in original and cache
pixels; :mod:`mammo_insight.imaging.annotations` owns its columns and is its only reader and writer.

config.json: ``PreprocessConfig.to_dict()`` ({"size": [H, W], "bits": 8|16, "flip": true|false, "decoder": ...,
"margin": ..., "mask": ...}) plus "dataset", "label_meaning" and "crop": the one record of how the cache was
made; read it back with ``PreprocessConfig.from_cache(CACHE)`` (older caches wrote flip as
"left"/"none" and the decoder as "backend"; from_dict reads both).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.errors import MammoInsightError
from mammo_insight.files import atomic_write, inside_root
from mammo_insight.imaging.geometry import GEOMETRY_COLUMNS

INDEX_FILE = "index.parquet"
FAILURES_FILE = "failures.csv"
CONFIG_FILE = "config.json"
CONTACT_SHEET_FILE = "contact_sheet.png"
IMAGES_DIR = "images"
CACHE_COLUMNS = ["cache_path", *GEOMETRY_COLUMNS, "photometric", "transfer_syntax", "status"]
FAILURE_COLUMNS = ["image_id", "image_path", "reason"]


def relative_image_path(patient_id: str, image_id: str) -> str:
    """Where one image lives inside the cache (POSIX separators, relative to CACHE)."""
    return f"{IMAGES_DIR}/{patient_id}/{image_id}.png"


def read_cache_index(cache_dir: str | Path, include_failed: bool = False) -> pd.DataFrame:
    """The cache index: the ok rows (all rows with include_failed=True)."""
    path = Path(cache_dir) / INDEX_FILE
    if not path.is_file():
        raise MammoInsightError(
            f"{path} not found: is {cache_dir} a cache written by `mammo-insight preprocess`?"
        )
    index = pd.read_parquet(path)
    if "cache_path" in index.columns:
        escapes = [
            p for p in index["cache_path"].dropna() if not inside_root(Path(cache_dir) / str(p), cache_dir)
        ]
        if escapes:
            raise MammoInsightError(
                f"{path}: {len(escapes)} cache_path value(s) lead outside the cache (e.g. {escapes[0]!r}); "
                "was the index edited? Rebuild it with `mammo-insight preprocess`"
            )
    if include_failed:
        return index
    return index[index["status"] == "ok"].reset_index(drop=True)


def recorded_image_size(cache_dir: str | Path) -> list[int] | None:
    """[height, width] of a cache's images as its config.json records them; None for a cache without one."""
    path = Path(cache_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    size = read_cache_config(cache_dir).get("size")
    return None if size is None else [int(v) for v in size]


def read_cache_config(cache_dir: str | Path) -> dict[str, Any]:
    path = Path(cache_dir) / CONFIG_FILE
    if not path.is_file():
        raise MammoInsightError(
            f"{path} not found: is {cache_dir} a cache written by `mammo-insight preprocess`?"
        )
    return json.loads(path.read_text())


def load_cache_image(cache_dir: str | Path, row_or_path: Mapping[str, Any] | Any | str | Path) -> np.ndarray:
    """One cached image as float32 in [0, 1], shape (out_height, out_width).

    row_or_path: an index row (Series, dict or itertuples record with cache_path), or a path
    relative to the cache; either must resolve inside the cache (an edited index cannot point elsewhere).
    """
    import cv2

    if isinstance(row_or_path, (str, Path)):
        rel = row_or_path
    elif hasattr(row_or_path, "get"):
        rel = row_or_path.get("cache_path")
    else:
        rel = getattr(row_or_path, "cache_path", None)
    if rel is None or (isinstance(rel, float) and np.isnan(rel)):
        raise MammoInsightError("this index row has no cache_path (its status is probably 'failed')")
    path = Path(cache_dir) / rel
    if not inside_root(path, cache_dir):
        raise MammoInsightError(f"cache_path {rel!r} leads outside the cache {cache_dir}; not read")
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise MammoInsightError(f"cannot read cached image {path}")
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    return pixels.astype(np.float32) / float(np.iinfo(pixels.dtype).max)


def write_png_atomic(path: str | Path, pixels: np.ndarray) -> None:
    """Write a PNG so that a reader never sees a half-written file: temp file in the same folder, then rename."""
    import cv2

    path = Path(path)
    ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise MammoInsightError(f"PNG encoding failed for {path}")
    atomic_write(path, lambda tmp: tmp.write_bytes(data.tobytes()))
