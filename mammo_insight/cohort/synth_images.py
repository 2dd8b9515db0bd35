"""Synthetic mammogram pixels: a plausible breast, background, burnt-in labels, padding and lesions.

Images are rendered as display brightness in [0, 1] (bright = dense tissue, as a radiologist sees
it after VOI LUT and MONOCHROME1 inversion); synth_dicom turns them into stored values.

Geometry: the chest wall lies on the image's right edge for R breasts and on its left edge for L
breasts (the usual back-to-back hanging). The breast is a half-ellipse against that edge with a
slightly irregular skin line; MLO views are taller, sit lower and carry a bright pectoral-muscle
triangle in the upper chest-wall corner. Labels are burnt into a background corner on the far side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter, zoom

# fibroglandular weight by density category: more dense tissue, brighter breast
DENSITY_WEIGHT = {"A": 0.08, "B": 0.22, "C": 0.38, "D": 0.55}
LESION_RADIUS_FRAC = (0.04, 0.07)  # of image height
LESION_RHO = (0.30, 0.62)  # normalised elliptical radius of the lesion centre
LESION_THETA = 0.85  # |angle| from the nipple axis, radians
PAD_FRAC = (0.10, 0.22)  # width share of a padding strip on the far side


@dataclass(frozen=True)
class LesionSpec:
    """Where a breast's lesion sits, in breast-relative polar coordinates (same in every view)."""

    rho: float
    theta: float
    radius_frac: float


@dataclass(frozen=True)
class RenderedImage:
    pixels: np.ndarray  # float32 display brightness in [0, 1]
    padding: np.ndarray  # bool, True where the pixel is padding (constant, outside the acquisition)
    breast_box: tuple[int, int, int, int]  # x0, y0, x1, y1; x1/y1 exclusive
    lesion: tuple[float, float, float] | None  # x, y, radius in pixels


def draw_lesion_spec(rng: np.random.Generator) -> LesionSpec:
    return LesionSpec(rho=float(rng.uniform(*LESION_RHO)), theta=float(rng.uniform(-LESION_THETA, LESION_THETA)),
                      radius_frac=float(rng.uniform(*LESION_RADIUS_FRAC)))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-sd smooth noise; drawn at low resolution and upsampled so large sigmas stay cheap."""
    step = max(1, int(sigma // 2))
    small = (max(2, -(-shape[0] // step)), max(2, -(-shape[1] // step)))
    field = gaussian_filter(rng.standard_normal(small), sigma / step, mode="reflect")
    field = zoom(field, (shape[0] / small[0], shape[1] / small[1]), order=1)[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-9)


def _label_patch(text: str, height: int) -> np.ndarray:
    """A bright burnt-in text marker (like 'L MLO') as a float mask scaled to about 6 % of the image height."""
    font = ImageFont.load_default()
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, fill=255, font=font)
    scale = max(1, round(0.06 * height / canvas.height))
    patch = np.asarray(canvas, dtype=np.float32) / 255.0
    return np.kron(patch, np.ones((scale, scale), dtype=np.float32))


def render_image(rng: np.random.Generator, height: int, width: int, laterality: str, view: str,
                 density: str, lesion: LesionSpec | None, pad_far_side: bool) -> RenderedImage:
    """Render one image; ``rng`` drives texture and small geometry jitter, so views of a breast differ."""
    pad = int(round(width * rng.uniform(*PAD_FRAC))) if pad_far_side else 0
    w = width - pad
    h = height
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = xx if laterality == "L" else (w - 1 - xx)  # distance from the chest wall
    mlo = view not in ("CC", "XCCL")
    a = w * rng.uniform(0.55, 0.78)
    b = h * (rng.uniform(0.44, 0.50) if mlo else rng.uniform(0.34, 0.42))
    cy = h * (rng.uniform(0.52, 0.58) if mlo else rng.uniform(0.46, 0.54))
    rho = np.sqrt((depth / a) ** 2 + ((yy - cy) / b) ** 2)
    skin = 1.0 + 0.035 * _smooth_noise(rng, (h, w), h / 10)
    breast = rho <= skin
    thickness = np.sqrt(np.clip(1.0 - (rho / skin) ** 2, 0.0, 1.0))

    weight = DENSITY_WEIGHT[density]
    glands = np.clip(0.6 * _smooth_noise(rng, (h, w), h / 28) + 0.4 * _smooth_noise(rng, (h, w), h / 9) + 0.3,
                     0.0, None)
    fine = _smooth_noise(rng, (h, w), 1.2)
    tissue = 0.30 + 0.22 * thickness + weight * glands * thickness ** 0.5 + 0.025 * fine
    img = np.where(breast, tissue, 0.05 + 0.012 * rng.standard_normal((h, w)))

    if mlo:
        pw = a * rng.uniform(0.30, 0.45)
        ph = h * rng.uniform(0.35, 0.55)
        pect = (depth / pw + yy / ph) <= 1.0
        img = np.where(pect & breast, 0.70 + 0.05 * thickness + 0.02 * fine, img)

    lesion_xyr = None
    if lesion is not None:
        d_c = lesion.rho * a * np.cos(lesion.theta)
        y_c = cy + lesion.rho * b * np.sin(lesion.theta)
        x_c = d_c if laterality == "L" else (w - 1 - d_c)
        r = lesion.radius_frac * h
        dist2 = ((xx - x_c) ** 2 + (yy - y_c) ** 2) / r ** 2
        blob = np.clip(1.0 - dist2, 0.0, 1.0) ** 0.6 * (1.0 + 0.08 * fine)
        img = img + 0.32 * blob * breast
        lesion_xyr = (float(x_c), float(y_c), float(r))

    img = np.clip(img, 0.01, 1.0)
    ys, xs = np.nonzero(breast)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    img = _burn_label(img, breast, f"{laterality} {view}", laterality, rng)

    full = np.zeros((height, width), dtype=np.float32)
    padding = np.zeros((height, width), dtype=bool)
    offset = 0 if laterality == "L" else pad  # the strip goes on the side away from the chest wall
    full[:, offset:offset + w] = img
    if pad:
        strip = slice(w, width) if laterality == "L" else slice(0, pad)
        padding[:, strip] = True
    box[0] += offset
    box[2] += offset
    if lesion_xyr is not None:
        lesion_xyr = (lesion_xyr[0] + offset, lesion_xyr[1], lesion_xyr[2])
    return RenderedImage(full, padding, tuple(box), lesion_xyr)


def _burn_label(img: np.ndarray, breast: np.ndarray, text: str, laterality: str,
                rng: np.random.Generator) -> np.ndarray:
    """Stamp the text marker (and sometimes a solid square) into a background corner far from the chest wall."""
    h, w = img.shape
    patch = _label_patch(text, h)
    ph, pw = patch.shape
    margin = max(2, h // 40)
    if ph + 2 * margin > h or pw + 2 * margin > w:
        return img
    far_x = margin if laterality == "R" else w - pw - margin
    for y0 in (margin, h - ph - margin):
        region = (slice(y0, y0 + ph), slice(far_x, far_x + pw))
        if not breast[region].any():
            out = img.copy()
            out[region] = np.maximum(out[region], 0.97 * patch)
            if rng.random() < 0.5:
                side = max(3, ph // 2)
                sy = y0 + ph + margin if y0 == margin else y0 - side - margin
                sq = (slice(sy, sy + side), slice(far_x, far_x + side))
                if 0 <= sy and sy + side <= h and not breast[sq].any():
                    out[sq] = 0.95
            return out
    return img
