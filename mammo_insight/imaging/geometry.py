"""Where a cached pixel came from: crop, optional horizontal flip, aspect-preserving resize, padding.

The cache keeps every image's geometry in its index row so that anything computed on the cache
(lesion boxes, Grad-CAM maps) can be carried back to the original DICOM pixels and vice versa.

Coordinates are pixel-centre coordinates: (x, y) = (column, row), x to the right, y down, the
centre of the top-left pixel is (0, 0); values may be fractional. The crop box is half-open in
original pixels: columns crop_x0..crop_x1-1 and rows crop_y0..crop_y1-1 are kept. The order of
operations from original to cache is: crop, flip left-right (when ``flipped``), resize by ``scale``
(the crop becomes ``resized_width`` x ``resized_height`` pixels, exactly what
``cv2.resize`` is asked for), then paste at (``pad_x``, ``pad_y``) into an ``out_height`` x
``out_width`` canvas of zeros. Resizing maps pixel centres as ``u = (x + 0.5) * s - 0.5`` (the
convention of cv2 and PIL), with the per-axis factor ``s = resized / cropped`` so the mapping is
exact even though the resized size is rounded to whole pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

GEOMETRY_COLUMNS = [
    "orig_height",
    "orig_width",
    "crop_x0",
    "crop_y0",
    "crop_x1",
    "crop_y1",
    "flipped",
    "scale",
    "pad_x",
    "pad_y",
    "out_height",
    "out_width",
]


def _resized(length: int, scale: float, limit: int) -> int:
    """Whole-pixel length of a resized side, never 0 and never past the canvas."""
    return min(limit, max(1, round(length * scale)))


@dataclass(frozen=True)
class CacheGeometry:
    """The transform from one original image to its cached version (see the module docstring)."""

    orig_height: int
    orig_width: int
    crop_x0: int
    crop_y0: int
    crop_x1: int
    crop_y1: int
    flipped: bool
    scale: float
    pad_x: int
    pad_y: int
    out_height: int
    out_width: int

    def __post_init__(self) -> None:
        if not (
            0 <= self.crop_x0 < self.crop_x1 <= self.orig_width
            and 0 <= self.crop_y0 < self.crop_y1 <= self.orig_height
        ):
            raise ValueError(
                f"crop box ({self.crop_x0}, {self.crop_y0}, {self.crop_x1}, {self.crop_y1}) does not "
                f"fit an image of {self.orig_width}x{self.orig_height} (width x height)"
            )
        if (
            self.pad_x + self.resized_width > self.out_width
            or self.pad_y + self.resized_height > self.out_height
        ):
            raise ValueError("the resized crop plus its padding offset exceeds the output size")

    @classmethod
    def fit(
        cls,
        orig_height: int,
        orig_width: int,
        box: tuple[int, int, int, int],
        flipped: bool,
        out_height: int,
        out_width: int,
        pad_x: int | None = None,
        pad_y: int | None = None,
    ) -> CacheGeometry:
        """The geometry that fits the crop ``box`` = (x0, y0, x1, y1) into the output, keeping its aspect.

        By default the resized crop is centred vertically and placed against the left edge (where a
        flipped-to-the-left chest wall lies), so padding only ever adds background next to the nipple side.
        """
        x0, y0, x1, y1 = (int(v) for v in box)
        scale = min(out_height / (y1 - y0), out_width / (x1 - x0))
        rh = _resized(y1 - y0, scale, out_height)
        return cls(
            int(orig_height),
            int(orig_width),
            x0,
            y0,
            x1,
            y1,
            bool(flipped),
            float(scale),
            0 if pad_x is None else int(pad_x),
            (out_height - rh) // 2 if pad_y is None else int(pad_y),
            int(out_height),
            int(out_width),
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | Any) -> CacheGeometry:
        """Build from one index row (a pandas Series, a dict, or a namedtuple from itertuples)."""
        get = row.get if hasattr(row, "get") else (lambda k: getattr(row, k))
        values = {c: get(c) for c in GEOMETRY_COLUMNS}
        missing = [c for c, v in values.items() if v is None]
        if missing:
            raise KeyError(f"index row lacks geometry column(s) {', '.join(missing)}")
        ints = {c: int(values[c]) for c in GEOMETRY_COLUMNS if c not in ("flipped", "scale")}
        return cls(flipped=bool(values["flipped"]), scale=float(values["scale"]), **ints)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def crop_width(self) -> int:
        return self.crop_x1 - self.crop_x0

    @property
    def crop_height(self) -> int:
        return self.crop_y1 - self.crop_y0

    @property
    def resized_width(self) -> int:
        return _resized(self.crop_width, self.scale, self.out_width)

    @property
    def resized_height(self) -> int:
        return _resized(self.crop_height, self.scale, self.out_height)

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.crop_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.crop_height

    def to_cache(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Original pixel coordinates -> cache pixel coordinates (vectorised)."""
        xc = np.asarray(x, dtype=np.float64) - self.crop_x0
        yc = np.asarray(y, dtype=np.float64) - self.crop_y0
        if self.flipped:
            xc = (self.crop_width - 1) - xc
        u = (xc + 0.5) * self.scale_x - 0.5 + self.pad_x
        v = (yc + 0.5) * self.scale_y - 0.5 + self.pad_y
        return u, v

    def to_original(self, u: np.ndarray | float, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Cache pixel coordinates -> original pixel coordinates (vectorised); inverse of to_cache."""
        xc = (np.asarray(u, dtype=np.float64) - self.pad_x + 0.5) / self.scale_x - 0.5
        yc = (np.asarray(v, dtype=np.float64) - self.pad_y + 0.5) / self.scale_y - 0.5
        if self.flipped:
            xc = (self.crop_width - 1) - xc
        return xc + self.crop_x0, yc + self.crop_y0

    def length_to_cache(self, length: np.ndarray | float) -> np.ndarray:
        """A distance (e.g. a lesion radius) in original pixels -> cache pixels (geometric mean of the axes)."""
        return np.asarray(length, dtype=np.float64) * float(np.sqrt(self.scale_x * self.scale_y))

    def image_to_cache(self, image: np.ndarray) -> np.ndarray:
        """An array over the original pixels (a lesion mask, a map) -> float32 over the cache canvas.

        The forward twin of ``heatmap_to_original``: crop, resize by area averaging (a mask becomes
        the covered share of each cache pixel), flip, paste; 0 in the padding.
        """
        import cv2

        img = np.asarray(image, dtype=np.float32)
        if img.shape != (self.orig_height, self.orig_width):
            raise ValueError(
                f"array of shape {img.shape} does not match the original image "
                f"({self.orig_height}, {self.orig_width})"
            )
        region = np.ascontiguousarray(img[self.crop_y0 : self.crop_y1, self.crop_x0 : self.crop_x1])
        small = cv2.resize(region, (self.resized_width, self.resized_height), interpolation=cv2.INTER_AREA)
        if self.flipped:
            small = small[:, ::-1]
        canvas = np.zeros((self.out_height, self.out_width), dtype=np.float32)
        canvas[
            self.pad_y : self.pad_y + self.resized_height, self.pad_x : self.pad_x + self.resized_width
        ] = small
        return canvas

    def heatmap_to_original(self, heatmap: np.ndarray) -> np.ndarray:
        """A map over the cache image (any H x W; resized to the output size first) -> original pixels.

        Padding is dropped, the crop region is resized back and unflipped; outside the crop the
        result is 0. Returns float32 of shape (orig_height, orig_width).
        """
        import cv2

        hm = np.asarray(heatmap, dtype=np.float32)
        if hm.ndim != 2:
            raise ValueError(f"heatmap must be 2-D, got shape {hm.shape}")
        if hm.shape != (self.out_height, self.out_width):
            hm = cv2.resize(hm, (self.out_width, self.out_height), interpolation=cv2.INTER_LINEAR)
        inner = hm[
            self.pad_y : self.pad_y + self.resized_height, self.pad_x : self.pad_x + self.resized_width
        ]
        back = cv2.resize(
            np.ascontiguousarray(inner), (self.crop_width, self.crop_height), interpolation=cv2.INTER_LINEAR
        )
        if self.flipped:
            back = back[:, ::-1]
        full = np.zeros((self.orig_height, self.orig_width), dtype=np.float32)
        full[self.crop_y0 : self.crop_y1, self.crop_x0 : self.crop_x1] = back
        return full
