"""One image from file to cache PNG: decode, display table, breast box, crop, flip, resize, pad, write.

``process_one`` is the unit of work every engine (process pool, Dask) runs; it never raises for a bad
image, it returns a failed record with the reason (a full disk, which is no fault of the image, raises). The order keeps the cost close to the
decoder's own: the breast is found on a strided view (no copy, at most ~512 px), the display table is
built once over the stored values, and only the cropped region is looked up and resized.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mammo_insight.errors import DicomError, MammoInsightError
from mammo_insight.files import inside_dataset
from mammo_insight.imaging.cache import read_cache_config, relative_image_path, write_png_atomic
from mammo_insight.imaging.crop import box_to_original, find_breast, reduce_for_detection
from mammo_insight.imaging.decode import RawImage, is_interrupt, read_image
from mammo_insight.imaging.geometry import GEOMETRY_COLUMNS, CacheGeometry
from mammo_insight.imaging.integrity import display_problem
from mammo_insight.imaging.intensity import LUT_MAX, display_lut, lut_index
from mammo_insight.imaging.resize import thumbnail

log = logging.getLogger(__name__)
THUMBS_DIR = "thumbs"


@dataclass(frozen=True)
class PreprocessConfig:
    """What decides the cache's pixels; a cache is only resumed with the same values.

    ``size``: (height, width) of every cache image. ``decoder``: the DICOM decoder (auto, pydicom, gdcm
    or dicomsdl; auto picks per transfer syntax, see imaging.decode; not the engine that runs the work). ``to_dict()`` is what CACHE/config.json holds and
    ``from_dict()`` reads it back (also older caches: key "backend", flip "left"/"none"), so the cache's
    config.json is the one record of how a cache was made.
    """

    size: tuple[int, int]
    bits: int = 8
    flip: bool = True
    decoder: str = "auto"
    margin: float = 0.01
    mask: bool = True  # blank what lies outside the breast (labels, markers inside the box)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: size as [H, W], every other field as it is."""
        return {
            "size": [int(self.size[0]), int(self.size[1])],
            "bits": self.bits,
            "flip": self.flip,
            "decoder": self.decoder,
            "margin": self.margin,
            "mask": self.mask,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PreprocessConfig:
        """The config a dict (a cache's config.json, a run's copy of it) describes; other keys are ignored.

        Reads older caches too: the decoder under "backend", flip as "left" (mirror) or "none".
        """
        if not isinstance(values, Mapping) or "size" not in values:
            raise MammoInsightError(f"a preprocessing config needs at least 'size' [H, W], got {values!r}")
        size = values["size"]
        try:
            height, width = (int(v) for v in size)
        except (TypeError, ValueError) as exc:
            raise MammoInsightError(f"preprocessing config: 'size' must be [H, W], got {size!r}") from exc
        out: dict[str, Any] = {"size": (height, width)}
        for key in ("bits", "margin", "mask"):
            if key in values:
                out[key] = values[key]
        if "flip" in values:
            flip = values["flip"]
            if flip not in (True, False, "left", "none"):
                raise MammoInsightError(f"preprocessing config: 'flip' must be true/false, got {flip!r}")
            out["flip"] = flip in (True, "left")
        decoder = values.get("decoder", values.get("backend"))
        if decoder is not None:
            out["decoder"] = str(decoder)
        return cls(**out)

    @classmethod
    def from_cache(cls, cache_dir: str | Path) -> PreprocessConfig:
        """How the cache under ``cache_dir`` was made (its config.json)."""
        return cls.from_dict(read_cache_config(cache_dir))


@dataclass
class Prepared:
    """A cache image and where it came from, plus the reduced display image used for the crop."""

    pixels: np.ndarray
    geometry: CacheGeometry
    photometric: str
    transfer_syntax: str
    preview: np.ndarray
    preview_stride: int


def _quantise(display16: np.ndarray, bits: int) -> np.ndarray:
    if bits == 16:
        return display16
    return ((display16.astype(np.uint32) * 255 + LUT_MAX // 2) // LUT_MAX).astype(np.uint8)


def prepare(raw: RawImage, config: PreprocessConfig) -> Prepared:
    """Everything after decoding, on stored pixels."""
    import cv2

    pixels = raw.pixels
    height, width = pixels.shape
    stride = reduce_for_detection(pixels.shape)
    sample = pixels[::stride, ::stride]
    table = display_lut(raw.header, pixels.dtype, sample, raw.photometric)
    preview = table[lut_index(sample)]
    unreadable = display_problem(preview)
    if unreadable:
        raise DicomError(unreadable)
    box = find_breast(preview, margin=config.margin)
    crop_box = box_to_original(box, stride, pixels.shape)
    flipped = config.flip and not box.chest_wall_left
    out_h, out_w = config.size
    geom = CacheGeometry.fit(height, width, crop_box, flipped, out_h, out_w)
    if not config.flip and not box.chest_wall_left:  # keep the chest wall against its own edge
        geom = CacheGeometry.fit(
            height, width, crop_box, False, out_h, out_w, pad_x=out_w - geom.resized_width
        )
    x0, y0, x1, y1 = crop_box
    region = table[lut_index(pixels[y0:y1, x0:x1])]
    small = cv2.resize(region, (geom.resized_width, geom.resized_height), interpolation=cv2.INTER_AREA)
    if config.mask and box.found:
        keep = box.mask[box.y0 : box.y1, box.x0 : box.x1].astype(np.uint8)
        keep = cv2.resize(keep, (geom.resized_width, geom.resized_height), interpolation=cv2.INTER_NEAREST)
        small[keep == 0] = 0
    if flipped:
        small = small[:, ::-1]
    canvas = np.zeros((out_h, out_w), np.uint16)
    canvas[geom.pad_y : geom.pad_y + geom.resized_height, geom.pad_x : geom.pad_x + geom.resized_width] = (
        small
    )
    return Prepared(
        _quantise(canvas, config.bits), geom, raw.photometric, raw.transfer_syntax, preview, stride
    )


def source_stamp(image_path: str) -> dict[str, Any]:
    """What the cache records of an image's source file (path, size, mtime) to notice it changed later."""
    try:
        stat = os.stat(image_path)
    except OSError:
        return {"source_path": image_path, "source_size": None, "source_mtime_ns": None}
    return {"source_path": image_path, "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def failed_record(image_id: str, reason: str) -> dict[str, Any]:
    return {"image_id": image_id, "status": "failed", "reason": reason}


def process_one(task: dict[str, Any]) -> dict[str, Any]:
    """Decode, prepare and write one image; a record for the index (status ok or failed, with reason).

    task: image_id, patient_id, image_path, image_root (None: not checked), cache_dir, config
    (``PreprocessConfig.to_dict()``), thumbnail (write a small before-crop preview for the contact sheet).
    """
    stamp = source_stamp(task["image_path"])  # before reading: a change during the run shows next time
    return {**_process(task), **stamp}


def _process(task: dict[str, Any]) -> dict[str, Any]:
    image_id = str(task["image_id"])
    config = PreprocessConfig.from_dict(task["config"])
    root = task.get("image_root")
    if root and not inside_dataset(task["image_path"], root):
        return failed_record(
            image_id,
            f"{task['image_path']}: resolves to {os.path.realpath(task['image_path'])}, outside the image "
            f"root {root} (a symbolic link?); not read",
        )
    try:
        raw = read_image(task["image_path"], config.decoder)
        prepared = prepare(raw, config)
    except DicomError as exc:  # some reasons (display LUT attributes) do not know the file: name it
        reason = str(exc)
        return failed_record(
            image_id, reason if task["image_path"] in reason else f"{task['image_path']}: {reason}"
        )
    except MemoryError:
        return failed_record(image_id, f"{task['image_path']}: out of memory while preparing the image")
    except BaseException as exc:  # one odd file must not stop a 50,000-image run; the reason is kept
        if is_interrupt(exc):
            raise
        log.debug("unexpected failure on %s", task["image_path"], exc_info=True)
        return failed_record(image_id, f"{task['image_path']}: {type(exc).__name__}: {exc}")
    cache_dir = Path(task["cache_dir"])
    rel = relative_image_path(str(task["patient_id"]), image_id)
    write_png_atomic(cache_dir / rel, prepared.pixels)
    if task.get("thumbnail"):
        write_thumbnail(cache_dir, image_id, prepared)
    record = {
        "image_id": image_id,
        "status": "ok",
        "reason": None,
        "cache_path": rel,
        "photometric": prepared.photometric,
        "transfer_syntax": prepared.transfer_syntax,
    }
    record.update({k: v for k, v in prepared.geometry.as_dict().items() if k in GEOMETRY_COLUMNS})
    return record


def write_thumbnail(cache_dir: Path, image_id: str, prepared: Prepared) -> None:
    """The reduced display image before cropping, for the contact sheet (which draws the crop box on it)."""
    thumb = thumbnail(prepared.preview)
    write_png_atomic(cache_dir / THUMBS_DIR / f"{image_id}.png", _quantise(thumb, 8))
