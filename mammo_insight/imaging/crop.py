"""Find the breast: a box that holds all breast tissue and little else, on a reduced image.

Why this method (and not a learned or per-vendor one): it needs no tags, no training and no
per-dataset tuning, and each step answers one known failure of plain thresholding:

1. constant bands at the borders (padding of any value, film edges) are set to background first;
2. a median filter removes salt noise and isolated bright specks of a noisy (scanned film) background;
3. Otsu's threshold separates background from tissue on this smoothed image; a morphological
   opening (2% of the image side) cuts thin film-edge lines and the joins of labels, and the largest
   connected component left is the breast (burnt-in labels, rulers and markers are smaller); the
   pectoral muscle is tissue and stays in;
4. hysteresis: the breast grows into faint pixels (between Otsu and a low threshold 30% of the way
   from background to Otsu) connected to it and within 4% of the image side of it, so the faint skin
   line and thin fatty edge are never cut off, while lines along the film edge are not followed and
   bright objects apart from the breast (labels, markers) and their blurred rims are never grown
   into; a margin of one reduced pixel plus ``margin`` of the size is added.

Connected components and the filters come from OpenCV (cv2.connectedComponentsWithStats is several
times faster than scipy.ndimage.label on these sizes, and cv2 already does the resizing).
The chest wall side is the side whose border column holds more tissue: ``flip`` in the result
says whether the crop must be mirrored so that the chest wall lies on the left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORK_SIDE = 512  # the reduced image's longer side for detection
LOW_FRACTION = 0.3  # low threshold = background + this fraction of (Otsu - background)
OPEN_FRACTION = 0.02  # opening size (of the longer side): removes film-edge lines, joins of labels
GROW_FRACTION = 0.04  # faint tissue is looked for this far (of the longer side) around the Otsu breast
HALO_FRACTION = 0.015  # blurred rim around a label or marker that growth must not follow


def _disk(diameter: float) -> np.ndarray:
    import cv2

    size = max(3, round(diameter) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


@dataclass(frozen=True, eq=False)
class BreastBox:
    """The breast box in the coordinates of the image it was found on (half-open, x right, y down).

    mask: where the breast is (dilated by a rim), same shape as the image searched; everything
    outside it is background, labels or markers.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    chest_wall_left: bool
    found: bool  # False when no tissue was found and the box is the whole image
    mask: np.ndarray


def _strip_constant_borders(img: np.ndarray, tol: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Zero rows/columns at the edges that hold one value (padding, film borders); returns image and mask."""
    keep = np.ones(img.shape, bool)
    rows_std = img.std(axis=1)
    cols_std = img.std(axis=0)
    for std, axis in ((rows_std, 0), (cols_std, 1)):
        n = len(std)
        lo = 0
        while lo < n // 4 and std[lo] < tol:
            lo += 1
        hi = n
        while hi > n - n // 4 and std[hi - 1] < tol:
            hi -= 1
        if axis == 0:
            keep[:lo] = False
            keep[hi:] = False
        else:
            keep[:, :lo] = False
            keep[:, hi:] = False
    out = img.copy()
    out[~keep] = 0
    return out, keep


def _otsu(values: np.ndarray) -> float:
    import cv2

    t, _ = cv2.threshold(values.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t)


def find_breast(display: np.ndarray, margin: float = 0.01) -> BreastBox:
    """The breast box of a display-correct image (uint8 or uint16, tissue bright), in its own pixels.

    The image is expected to be small already (see ``reduce_for_detection``); it is not resized here.
    """
    import cv2

    h, w = display.shape
    img8 = (display >> 8).astype(np.uint8) if display.dtype == np.uint16 else display.astype(np.uint8)
    img8, inside = _strip_constant_borders(img8)
    smooth = cv2.medianBlur(img8, 5)
    valid = smooth[inside]
    if valid.size == 0 or int(valid.max()) - int(valid.min()) < 8:
        return BreastBox(0, 0, w, h, True, False, np.ones((h, w), bool))
    t_hi = _otsu(valid)
    side = max(h, w)
    high = (smooth > t_hi).astype(np.uint8)
    high = cv2.morphologyEx(high, cv2.MORPH_OPEN, _disk(OPEN_FRACTION * side))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(high, connectivity=8)
    if n <= 1:
        return BreastBox(0, 0, w, h, True, False, np.ones((h, w), bool))
    seed = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    background = valid[valid <= t_hi]
    bg = float(np.median(background)) if background.size else 0.0
    t_lo = bg + LOW_FRACTION * (t_hi - bg)
    near = cv2.dilate(seed, _disk(GROW_FRACTION * side))
    # bright objects not joined to the breast (labels, markers, film strips) and their halos are never grown into
    others = (high > 0) & (seed == 0)
    halo = cv2.dilate(others.astype(np.uint8), _disk(HALO_FRACTION * side)) > 0
    faint = (smooth > t_lo) & (smooth <= t_hi) & inside & (near > 0) & ~halo
    grow = (faint | (seed > 0)).astype(np.uint8)
    _, labels_grow = cv2.connectedComponents(grow, connectivity=8)
    seed_labels = np.unique(labels_grow[seed > 0])
    breast = np.isin(labels_grow, seed_labels[seed_labels > 0])
    ys = np.flatnonzero(breast.any(axis=1))
    xs = np.flatnonzero(breast.any(axis=0))
    pad = 1 + round(margin * max(h, w))
    x0, x1 = max(0, xs[0] - pad), min(w, xs[-1] + 1 + pad)
    y0, y1 = max(0, ys[0] - pad), min(h, ys[-1] + 1 + pad)
    # the chest wall is the box side where tissue runs along the whole edge; the nipple side has a bulge
    edge = max(1, (xs[-1] + 1 - xs[0]) // 20)
    chest_wall_left = bool(breast[:, xs[0]:xs[0] + edge].sum() >= breast[:, xs[-1] + 1 - edge:xs[-1] + 1].sum())
    mask = cv2.dilate(breast.astype(np.uint8), _disk(HALO_FRACTION * side)) > 0
    return BreastBox(int(x0), int(y0), int(x1), int(y1), chest_wall_left, True, mask)


def reduce_for_detection(shape: tuple[int, int], work_side: int = WORK_SIDE) -> int:
    """The integer stride that brings the longer side to about work_side pixels."""
    return max(1, int(np.ceil(max(shape) / work_side)))


def box_to_original(box: BreastBox, stride: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box found on ``pixels[::stride, ::stride]`` -> original pixels, covering every sampled pixel's block."""
    h, w = shape
    return (max(0, box.x0 * stride), max(0, box.y0 * stride), min(w, box.x1 * stride), min(h, box.y1 * stride))
