"""Is a decoded image what its file says it is? Checks that turn silent corruption into a failure.

Decoders report some damage (pylibjpeg-rle checks every segment length; openjpeg stops on a truncated
codestream) but decode much of it without a word: JPEG 2000 and JPEG-lossless streams with hundreds of
junk or zero bytes in the middle give an image in which 10-60% of the pixels are wrong. So, besides the
decoder's own errors:

- ``stream_problem`` (imaging/stream_walk.py) walks the compressed stream's own structure before
  decoding: JPEG and JPEG 2000 marker segments, RLE segment tables, the length of native pixel data.
- ``pixel_problem`` looks at the decoded stored values: the size the header promises, values within
  BitsStored, RescaleSlope not 0, not all zero, not constant or nearly so (one value on more than
  99.5% of the pixels).
- ``coded_length_problem`` recounts a lossless JPEG after decoding: the decoded pixels, coded with the
  stream's own predictor, point transform and Huffman table, must fill exactly the entropy-coded bytes
  of each restart interval. A run of zero bytes is a run of valid codes (the walk cannot see it), but
  the decoder reads it as samples the encoder never wrote, loses its place, and the count differs.
  Exact: a sound stream cannot be off by one byte (checked on every real image re-encoded and on three
  lossless JPEG DICOMs from other encoders).

What cannot be caught this way: junk that happens to respect the stream's syntax (JPEG 2000 packet
data: MQ-coded code-block bodies have no redundancy a walk can check and the decoder reports nothing),
short zero runs in JPEG 2000 packet data, and any damage to native (uncompressed) pixel data, which has
no redundancy. The README gives the detection rates measured on the damaged corpus
(``benchmarks/bench_corruption.py``).
"""

from __future__ import annotations

import numpy as np

from mammo_insight.imaging.jpeg_lossless import CATEGORY_OF_RESIDUAL, residuals
from mammo_insight.imaging.stream_walk import JPEG_SYNTAXES, LosslessScan, lossless_scan, unpadded

NEAR_CONSTANT_SHARE = 0.995
UNCODED = 255  # the cost of a residual category without a Huffman code (a real one takes at most 32 bits)


def pixel_problem(pixels: np.ndarray, ds=None) -> str | None:
    """What makes decoded stored values implausible for a mammogram, or None. ``ds``: the DICOM header
    (None for PNG/PGM films, which get the value checks only)."""
    if ds is not None:
        rows, cols = ds.get("Rows"), ds.get("Columns")
        if rows and cols and pixels.shape != (int(rows), int(cols)):
            return f"decoded size {pixels.shape[0]}x{pixels.shape[1]} differs from the header's {rows}x{cols}"
        slope = ds.get("RescaleSlope")
        if slope is not None and (not np.isfinite(float(slope)) or float(slope) == 0):
            return f"RescaleSlope is {slope}: every pixel would show the same value"
        bits = ds.get("BitsStored")
        if bits and int(bits) < pixels.dtype.itemsize * 8 and int(ds.get("PixelRepresentation", 0)) == 0:
            top = int(pixels.max())
            if top >> int(bits):
                return f"stored values reach {top}, beyond the header's BitsStored {int(bits)}"
    low, high = int(pixels.min()), int(pixels.max())
    if high == 0 and low == 0:
        return "every pixel is 0 (an empty image)"
    if low == high:
        return f"every pixel has the value {low} (a constant image)"
    values, counts = np.unique(
        pixels[:: max(1, pixels.shape[0] // 512), :: max(1, pixels.shape[1] // 512)], return_counts=True
    )
    share = counts.max() / counts.sum()
    if share > NEAR_CONSTANT_SHARE:
        return (
            f"{share:.1%} of the pixels hold the value {int(values[counts.argmax()])} "
            "(a nearly constant image)"
        )
    return None


def display_problem(display: np.ndarray) -> str | None:
    """What makes a displayed image (stored values after the modality and VOI LUT) unreadable, or None.

    Stored values can vary while the header's transform maps them all to one grey: a RescaleSlope of -1
    under a positive window, a window of width 1e30, a SIGMOID of width 1, BitsStored below the data.
    The same rule as for stored values: one value on more than NEAR_CONSTANT_SHARE of the pixels."""
    values, counts = np.unique(display, return_counts=True)
    share = counts.max() / counts.sum()
    if len(values) == 1 or share > NEAR_CONSTANT_SHARE:
        return (
            f"the displayed image (after the modality and VOI LUT) shows {share:.1%} of its pixels at one "
            f"grey ({int(values[counts.argmax()])} of 65535): check RescaleSlope, the window and BitsStored"
        )
    return None


def coded_length_problem(pixels: np.ndarray, ds) -> str | None:
    """Do the decoded pixels code to exactly the lossless JPEG stream's length? Recounted from the
    stream's own predictor and Huffman table, a sound image needs every entropy-coded byte of each
    restart interval and no more. Damage the stream walk cannot see (zero bytes are valid codes) makes
    the decoder lose its place: it stops before the data ends or reads past it, and the count differs.
    A precision above BitsStored: pydicom drops the top bits the stream codes, so a mismatch is checked
    again on pylibjpeg-libjpeg's own output, which keeps them. None also where the check does not apply
    (other syntaxes, a frame beyond what is recounted)."""
    from pydicom.encaps import generate_frames

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax not in JPEG_SYNTAXES:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    frame = unpadded(next(generate_frames(ds.PixelData, number_of_frames=frames)))
    scan = lossless_scan(frame)
    if scan is None or not 1 <= scan.predictor <= 7 or scan.restart_interval % pixels.shape[1]:
        return None
    problem = _recount_problem(pixels, scan)
    if problem and scan.precision > int(ds.get("BitsStored") or scan.precision):
        from libjpeg import decode

        try:
            kept = np.asarray(decode(frame))
        except Exception:  # noqa: BLE001 - a stream libjpeg refuses is damaged: the finding stands
            return problem
        problem = _recount_problem(kept, scan)
    return problem


def _recount_problem(pixels: np.ndarray, scan: LosslessScan) -> str | None:
    rows, cols = pixels.shape
    rows_per_interval = scan.restart_interval // cols
    if pixels.dtype.kind == "i":  # sign-extended by the decoder: back to the stream's P-bit samples
        pixels = pixels.astype(np.int32) & ((1 << scan.precision) - 1)
    residual = residuals(
        pixels,
        scan.precision,
        scan.predictor,
        point_transform=scan.point_transform,
        rows_per_interval=rows_per_interval,
    )
    extra_bits = np.arange(17) * (np.arange(17) < 16)  # category k carries k extra bits, 16 none
    cost = np.where(scan.code_lengths > 0, scan.code_lengths + extra_bits, UNCODED).astype(np.uint8)
    per_sample = cost[CATEGORY_OF_RESIDUAL][residual]  # bits each residual takes: one lookup per pixel
    if per_sample.max() == UNCODED:
        return (
            "the decoded pixels hold a residual whose category the lossless JPEG's Huffman table cannot "
            "code (damaged entropy-coded data)"
        )
    step = (rows_per_interval or rows) * cols
    full = per_sample.size // step * step
    bits = per_sample[:full].reshape(-1, step).sum(axis=1, dtype=np.int64).tolist()
    if full < per_sample.size:
        bits.append(int(per_sample[full:].sum(dtype=np.int64)))
    needed = [(b + 7) // 8 for b in bits]
    if needed != scan.entropy_bytes:
        held, coded = sum(scan.entropy_bytes), sum(needed)
        return (
            f"the lossless JPEG's entropy-coded data holds {held} bytes where the decoded pixels code to "
            f"{coded} (in {len(needed)} restart intervals): damaged data the decoder read out of step"
        )
    return None
