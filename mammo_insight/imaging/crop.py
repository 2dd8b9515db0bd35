"""Find the breast: a box that holds all breast tissue and little else, on a reduced image.

Why this method (and not a learned or per-vendor one): it needs no tags, no training and no
per-dataset tuning, and each step answers one known failure of plain thresholding:

1. rows and columns of one value near the borders (padding of any value, film-edge lines) and
   everything outside them are set aside first;
2. a median filter removes salt noise and isolated bright specks of a noisy (scanned film) background;
3. Otsu's threshold on this smoothed image splits the histogram, but on images with a large dark
   background it often falls between fat and dense tissue, not between background and tissue; so
   the tissue mask uses a much lower threshold, 20% of the way from the background level (median
   below Otsu) to Otsu, which keeps the faint fatty edge and skin line;
4. a morphological opening (3% of the image side) cuts film-edge bands and lines and the thin joins
   of labels and markers to the breast; the largest connected component left is the breast (the
   pectoral muscle is tissue and stays in); the tissue the opening shaved off its own edge (skin
   line, nipple) is given back by a dilation of the same size intersected with the tissue mask;
   its box plus a margin of one reduced pixel and ``margin`` of the image side is the crop, and its
   mask (holes filled) widened by 2% tells what lies outside the breast.

Connected components and the filters come from OpenCV (cv2.connectedComponentsWithStats is several
times faster than scipy.ndimage.label on these sizes, and cv2 already does the resizing).
The chest wall side is the side whose border column holds more tissue: ``flip`` in the result
says whether the crop must be mirrored so that the chest wall lies on the left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORK_SIDE = 512  # the reduced image's longer side for detection
LOW_FRACTION = 0.2  # tissue threshold = background + this fraction of (Otsu - background)
OPEN_FRACTION = 0.03  # opening size (of the longer side): removes film-edge lines, joins of labels
BORDER_BAND = 0.06  # padding and film-edge lines are looked for this far (of each side) from the edges
RIM_FRACTION = 0.02  # the breast mask is widened by this much (of the longer side) before blanking outside it


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


def _strip_constant_borders(img: np.ndarray, tol: float = 4.0) -> np.ndarray:
    """Mask of what is not border junk: within the outer band of each side, every row (column) up to
    the innermost one that holds a single value (padding, film-edge lines) is dropped."""
    keep = np.ones(img.shape, bool)
    for axis in (0, 1):
        std = img.std(axis=1 - axis)
        n = len(std)
        band = max(1, int(BORDER_BAND * n))
        flat = std < tol
        head = np.flatnonzero(flat[:band])
        tail = np.flatnonzero(flat[n - band :])
        lo = head[-1] + 1 if head.size else 0
        hi = n - band + tail[0] if tail.size else n
        if axis == 0:
            keep[:lo] = False
            keep[hi:] = False
        else:
            keep[:, :lo] = False
            keep[:, hi:] = False
    return keep


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
    smooth = cv2.medianBlur(img8, 5)
    inside = _strip_constant_borders(smooth)
    valid = smooth[inside]
    if valid.size == 0 or int(valid.max()) - int(valid.min()) < 8:
        return BreastBox(0, 0, w, h, True, False, np.ones((h, w), bool))
    t_hi = _otsu(valid)
    background = valid[valid <= t_hi]
    bg = float(np.median(background)) if background.size else 0.0
    t_lo = bg + LOW_FRACTION * (t_hi - bg)
    low = ((smooth > t_lo) & inside).astype(np.uint8)
    disk = _disk(OPEN_FRACTION * max(h, w))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        cv2.morphologyEx(low, cv2.MORPH_OPEN, disk), connectivity=8
    )
    if n <= 1:
        return BreastBox(0, 0, w, h, True, False, np.ones((h, w), bool))
    core = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    # give back what the opening shaved off the breast's own edge (skin line, nipple), but no more
    breast = (cv2.dilate(core, disk) > 0) & (low > 0)
    ys = np.flatnonzero(breast.any(axis=1))
    xs = np.flatnonzero(breast.any(axis=0))
    pad = 1 + round(margin * max(h, w))
    x0, x1 = max(0, xs[0] - pad), min(w, xs[-1] + 1 + pad)
    y0, y1 = max(0, ys[0] - pad), min(h, ys[-1] + 1 + pad)
    # the chest wall is the box side where tissue runs along the whole edge; the nipple side has a bulge
    edge = max(1, (xs[-1] + 1 - xs[0]) // 20)
    chest_wall_left = bool(
        breast[:, xs[0] : xs[0] + edge].sum() >= breast[:, xs[-1] + 1 - edge : xs[-1] + 1].sum()
    )
    filled = np.zeros((h, w), np.uint8)  # holes (fat darker than the threshold inside the breast) are breast
    contours, _ = cv2.findContours(breast.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    mask = cv2.dilate(filled, _disk(RIM_FRACTION * max(h, w))) > 0
    return BreastBox(int(x0), int(y0), int(x1), int(y1), chest_wall_left, True, mask)


def reduce_for_detection(shape: tuple[int, int], work_side: int = WORK_SIDE) -> int:
    """The integer stride that brings the longer side to about work_side pixels."""
    return max(1, int(np.ceil(max(shape) / work_side)))


def box_to_original(box: BreastBox, stride: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box found on ``pixels[::stride, ::stride]`` -> original pixels, covering every sampled pixel's block."""
    h, w = shape
    return (
        max(0, box.x0 * stride),
        max(0, box.y0 * stride),
        min(w, box.x1 * stride),
        min(h, box.y1 * stride),
    )
