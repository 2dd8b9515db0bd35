"""Display-correct intensities as one lookup table per image: tissue bright on a dark background.

The chain is the standard one (PS3.3 C.11): modality LUT (rescale slope/intercept or a Modality LUT
Sequence), then VOI (a VOI LUT Sequence, else Window Center/Width with VOILUTFunction LINEAR,
LINEAR_EXACT or SIGMOID), then MONOCHROME1 inversion. pydicom.pixels does the first two; we run them
once over every possible stored value (at most 65,536) instead of over 26 million pixels, which is
exact because stored values are integers, and then index the table with the pixels. What pydicom does
not do is written here: scaling each output to [0, 1] (the window's own range, the VOI LUT's range,
or the image's range when there is no VOI) and the MONOCHROME1 inversion.
"""

from __future__ import annotations

import warnings

import numpy as np

from mammo_insight.errors import DicomError

LUT_MAX = 65535  # display values are kept as uint16 until the final quantisation


def _all_stored_values(dtype: np.dtype) -> np.ndarray:
    """Every value of the stored dtype, ordered so that ``pixels.view(unsigned)`` indexes the table."""
    if dtype.itemsize == 1:
        return np.arange(256, dtype=np.uint8).view(dtype)
    if dtype.itemsize == 2:
        return np.arange(65536, dtype=np.uint16).view(dtype)
    raise DicomError(f"stored pixels of {dtype.itemsize * 8} bits are not supported (8 or 16 expected)")


def lut_index(pixels: np.ndarray) -> np.ndarray:
    """The pixels as unsigned table indices (a free view, no copy)."""
    return pixels.view(np.uint8 if pixels.dtype.itemsize == 1 else np.uint16)


def _scale01(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _voi(ds, modality: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Modality values -> [0, 1] through the dataset's VOI (or the image's range when it has none)."""
    from pydicom.pixels import apply_voi, apply_windowing

    if ds.get("VOILUTSequence"):
        ints = np.clip(np.rint(modality), -(2**31), 2**31 - 1).astype(np.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = apply_voi(ints, ds).astype(np.float64)
        return _scale01(out, float(out.min()), float(out.max()))
    if "WindowCenter" in ds and "WindowWidth" in ds:
        out = apply_windowing(modality.copy(), ds)
        # the window's own output range: pydicom maps -inf..+inf onto [y_min, y_max]
        with np.errstate(over="ignore"):  # SIGMOID at +-inf: exp overflows to the right limit
            ends = apply_windowing(np.array([-1e30, 1e30]), ds)
        return _scale01(out, float(min(ends)), float(max(ends)))
    return _scale01(modality, float(sample.min()), float(sample.max()))


def display_lut(header, dtype: np.dtype, sample: np.ndarray, photometric: str) -> np.ndarray:
    """A uint16 table: ``table[lut_index(pixels)]`` is the display image scaled to 0..65535.

    header: the pydicom Dataset (None for plain images, which are shown as stored, scaled by their
    dtype's range). sample: a subsample of the stored pixels, used only when the file has no VOI.
    """
    values = _all_stored_values(np.dtype(dtype))
    if header is None:
        info = np.iinfo(values.dtype)
        display = (
            _scale01(values.astype(np.float64), 0.0, float(info.max))
            if info.min == 0
            else _scale01(values.astype(np.float64), float(info.min), float(info.max))
        )
    else:
        from pydicom.pixels import apply_modality_lut

        try:
            modality = np.asarray(apply_modality_lut(values, header), dtype=np.float64)
            sample_mod = np.asarray(apply_modality_lut(np.asarray(sample), header), dtype=np.float64)
            display = _voi(header, modality, sample_mod)
        except (ValueError, KeyError, AttributeError, TypeError, NotImplementedError) as exc:
            raise DicomError(f"invalid modality/VOI LUT attributes ({type(exc).__name__}: {exc})") from exc
    if photometric == "MONOCHROME1":
        display = 1.0 - display
    return np.rint(display * LUT_MAX).astype(np.uint16)
