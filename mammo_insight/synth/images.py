"""Synthetic mammogram pixels: a plausible breast, background, burnt-in labels, padding and lesions.

Images are rendered as display brightness in [0, 1] (bright = dense tissue, as a radiologist sees
it after VOI LUT and MONOCHROME1 inversion); synth.dicom turns them into stored values.

Geometry: the chest wall lies on the image's right edge for R breasts and on its left edge for L
breasts (the usual back-to-back hanging). The breast is a half-ellipse against that edge with a
slightly irregular skin line; MLO views are taller, sit lower and carry a bright pectoral-muscle
triangle in the upper chest-wall corner. Labels are burnt into a background corner on the far side.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter
from scipy.special import expit, ndtri

# share of the breast covered by fibroglandular tissue per density category (BI-RADS A-D):
# denser breasts are brighter overall and hide lesions better, as in real screening
GLAND_COVER = {"A": 0.08, "B": 0.30, "C": 0.55, "D": 0.80}
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
    return LesionSpec(
        rho=float(rng.uniform(*LESION_RHO)),
        theta=float(rng.uniform(-LESION_THETA, LESION_THETA)),
        radius_frac=float(rng.uniform(*LESION_RADIUS_FRAC)),
    )


@lru_cache(maxsize=64)
def _interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour index and weight for linear interpolation of n_in samples onto n_out."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(np.intp), n_in - 2)
    return lo, (pos - lo).astype(np.float32)


def _upsample(field: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Separable linear upsampling by gathers (tiny BLAS calls thrash under load; gathers do not)."""
    lo, fr = _interp_weights(shape[0], field.shape[0])
    rows = field[lo] * (1.0 - fr[:, None]) + field[lo + 1] * fr[:, None]
    lo, fr = _interp_weights(shape[1], field.shape[1])
    return rows[:, lo] * (1.0 - fr) + rows[:, lo + 1] * fr


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-sd smooth noise; large sigmas are drawn at low resolution and upsampled (cheap)."""
    if sigma <= 6.0:
        field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="reflect")
    else:
        step = sigma / 4.0
        small = (int(np.ceil(shape[0] / step)) + 1, int(np.ceil(shape[1] / step)) + 1)
        field = gaussian_filter(rng.standard_normal(small, dtype=np.float32), 4.0, mode="reflect")
        field = _upsample(field, shape)
    return (field - field.mean()) / (field.std() + 1e-9)


STREAK_BINS = (360, 32)  # angle bins over [-pi, pi], radius bins over [0, 1.2]


def _radial_streaks(rng: np.random.Generator, angle: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Fibrous strands radiating from the nipple (angular waves with a slight twist, via a lookup table)."""
    a = np.linspace(-np.pi, np.pi, STREAK_BINS[0], dtype=np.float32)[:, None]
    r = np.linspace(0.0, 1.2, STREAK_BINS[1], dtype=np.float32)[None, :]
    table = np.zeros(STREAK_BINS, dtype=np.float32)
    for freq in rng.uniform(14.0, 48.0, size=6):
        table += np.sin(freq * a + rng.uniform(0, 2 * np.pi) + rng.uniform(-1.5, 1.5) * r)
    ia = np.clip(
        ((angle + np.pi) / (2 * np.pi) * (STREAK_BINS[0] - 1)).astype(np.int32), 0, STREAK_BINS[0] - 1
    )
    ir = np.clip((rho / 1.2 * (STREAK_BINS[1] - 1)).astype(np.int32), 0, STREAK_BINS[1] - 1)
    return table[ia, ir] / np.sqrt(3.0)


@lru_cache(maxsize=128)
def _label_patch(text: str, height: int) -> np.ndarray:
    """A bright burnt-in text marker (like 'L MLO') as a float mask scaled to about 6 % of the image height."""
    font = ImageFont.load_default()
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, fill=255, font=font)
    scale = max(1, round(0.06 * height / canvas.height))
    patch = np.asarray(canvas, dtype=np.float32) / 255.0
    patch = np.kron(patch, np.ones((scale, scale), dtype=np.float32))
    patch.flags.writeable = False  # cached and shared
    return patch


def render_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    laterality: str,
    *,
    view: str,
    density: str,
    lesion: LesionSpec | None,
    pad_far_side: bool,
) -> RenderedImage:
    """Render one image; ``rng`` drives texture and small geometry jitter, so views of a breast differ."""
    pad = round(width * rng.uniform(*PAD_FRAC)) if pad_far_side else 0
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

    cover_z = ndtri(1.0 - GLAND_COVER[density])
    clumps = (
        0.45 * _smooth_noise(rng, (h, w), h / 45)
        + 0.55 * _smooth_noise(rng, (h, w), h / 18)
        + 0.45 * _smooth_noise(rng, (h, w), h / 7)
    )
    glands = expit(2.5 * (clumps - cover_z))
    # strands converge on the nipple (depth = a on the nipple axis)
    from_nipple = np.sqrt((a - depth) ** 2 + (yy - cy) ** 2) / a
    streaks = _radial_streaks(rng, np.arctan2(yy - cy, a - depth), from_nipple) * np.minimum(
        1.0, from_nipple / 0.4
    )
    fine = _smooth_noise(rng, (h, w), 1.0)
    tissue = (
        0.24
        + 0.14 * thickness
        + 0.30 * glands * (0.55 + 0.45 * thickness)
        + 0.025 * streaks * thickness
        + 0.02 * fine
    )
    img = np.where(breast, tissue, 0.05 + 0.012 * rng.standard_normal((h, w), dtype=np.float32))

    if mlo:
        pw = a * rng.uniform(0.30, 0.45)
        ph = h * rng.uniform(0.35, 0.55)
        pect = (depth / pw + yy / ph) <= 1.0
        img = np.where(pect & breast, 0.60 + 0.05 * thickness + 0.02 * fine, img)

    lesion_xyr = None
    if lesion is not None:
        lesion_xyr = _paint_lesion(img, lesion, (a, b, cy), laterality, fine=fine, breast=breast)

    img = np.clip(img, 0.01, 1.0)
    xs, ys = np.flatnonzero(breast.any(axis=0)), np.flatnonzero(breast.any(axis=1))
    box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    img = _burn_label(img, breast, f"{laterality} {view}", laterality, rng=rng)
    return _on_canvas(img, width, pad, laterality, box, lesion_xyr)


def _paint_lesion(
    img: np.ndarray,
    lesion: LesionSpec,
    ellipse: tuple[float, float, float],
    laterality: str,
    *,
    fine: np.ndarray,
    breast: np.ndarray,
) -> tuple[float, float, float]:
    """Add a lobulated mass in place at the lesion's polar position in the breast ellipse (a, b, cy);
    returns its (x, y, radius) in this image's pixels."""
    a, b, cy = ellipse
    h, w = img.shape
    d_c = lesion.rho * a * np.cos(lesion.theta)
    y_c = cy + lesion.rho * b * np.sin(lesion.theta)
    x_c = d_c if laterality == "L" else (w - 1 - d_c)
    r = lesion.radius_frac * h
    win = (
        slice(max(0, int(y_c - 1.3 * r)), int(y_c + 1.3 * r) + 2),
        slice(max(0, int(x_c - 1.3 * r)), int(x_c + 1.3 * r) + 2),
    )
    yy, xx = np.mgrid[win].astype(np.float32)
    dx, dy = xx - x_c, yy - y_c
    lobes = 1.0 + 0.12 * np.sin(3.0 * np.arctan2(dy, dx) + lesion.theta)
    blob = np.clip(1.0 - (dx**2 + dy**2) / r**2 * lobes, 0.0, 1.0) ** 0.35 * (1.0 + 0.08 * fine[win])
    img[win] += 0.24 * blob * breast[win]
    return float(x_c), float(y_c), float(r)


def _on_canvas(
    img: np.ndarray,
    width: int,
    pad: int,
    laterality: str,
    box: tuple[int, int, int, int],
    lesion_xyr: tuple[float, float, float] | None,
) -> RenderedImage:
    """The breast image on the full-width canvas, the padding strip on the side away from the chest wall."""
    height, w = img.shape
    full = np.zeros((height, width), dtype=np.float32)
    padding = np.zeros((height, width), dtype=bool)
    offset = 0 if laterality == "L" else pad
    full[:, offset : offset + w] = img
    if pad:
        strip = slice(w, width) if laterality == "L" else slice(0, pad)
        padding[:, strip] = True
    shifted = (box[0] + offset, box[1], box[2] + offset, box[3])
    if lesion_xyr is not None:
        lesion_xyr = (lesion_xyr[0] + offset, lesion_xyr[1], lesion_xyr[2])
    return RenderedImage(full, padding, shifted, lesion_xyr)


def _burn_label(
    img: np.ndarray, breast: np.ndarray, text: str, laterality: str, *, rng: np.random.Generator
) -> np.ndarray:
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


# a display gamma per machine (its own detector and processing), spread apart within each site
SCANNER_GAMMA = {
    "49": 0.5,
    "216": 0.75,
    "93": 1.0,
    "210": 1.25,
    "170": 1.5,
    "190": 1.75,
    "197": 2.0,
    "21": 0.6,
    "29": 1.1,
    "48": 1.7,
}


def scanner_gamma(machine_id: str) -> float:
    """The machine's gamma; a machine outside the table gets one from its id (stable across runs)."""
    if str(machine_id) in SCANNER_GAMMA:
        return SCANNER_GAMMA[str(machine_id)]
    return 0.5 + 1.5 * (int.from_bytes(str(machine_id).encode(), "little") % 1009) / 1008


def scanner_curve(image: RenderedImage, machine_id: str) -> RenderedImage:
    """The machine's intensity curve applied to the whole image: a scanner signature a CNN can learn,
    which survives the preprocessing's crop and label masking because it lives in the breast itself."""
    pixels = np.clip(image.pixels, 0.0, 1.0) ** scanner_gamma(machine_id)
    return RenderedImage(pixels.astype(np.float32), image.padding, image.breast_box, image.lesion)
