"""A minimal encoder for lossless JPEG, process 14, first-order prediction (SV1, DICOM 1.2.840.10008.1.2.4.70).

Why hand-written: a large share of RSNA's DICOMs use this transfer syntax, the synthetic cohort must
exercise it, and no encoder ships with pydicom or pylibjpeg (only decoders; GDCM encodes but is an
optional heavy dependency). This is ITU-T T.81 Annex H with one component, predictor 1, point
transform 0 and an optimal Huffman table (Annex K.2); pylibjpeg-libjpeg decodes it bit-exactly
(tests/test_synth.py checks this). Its residual model (every predictor, point transform, restart
intervals) also serves ``imaging/integrity.py``, which recounts the bits a decoded image codes to.
"""

from __future__ import annotations

import struct

import numpy as np

MAX_CATEGORY = 16


def residuals(
    image: np.ndarray,
    precision: int,
    predictor: int = 1,
    *,
    point_transform: int = 0,
    rows_per_interval: int = 0,
) -> np.ndarray:
    """Prediction residuals modulo 2**16 (T.81 H.1.2.1), row-major, as uint16 (view as int16 for the signed
    value): predictor 1-7 (Ra, Rb, Rc, Ra+Rb-Rc, Ra+((Rb-Rc)>>1), Rb+((Ra-Rc)>>1), (Ra+Rb)>>1) inside the
    image, Ra on the first row of the scan and of each restart interval (``rows_per_interval`` rows; 0:
    none), whose first sample is predicted by 2**(precision-point_transform-1), Rb on the first column of
    every other row. Predictors 1-4 are linear, so wrapping uint16 arithmetic is exact (and 3x faster)."""
    x = image.astype(np.uint16, copy=False)
    if point_transform:
        x = x >> point_transform
    res = np.empty_like(x)
    if predictor <= 4:
        ra, rb, rc = x[1:, :-1], x[:-1, 1:], x[:-1, :-1]
        pred = {1: lambda: ra, 2: lambda: rb, 3: lambda: rc, 4: lambda: ra + rb - rc}[predictor]()
        np.subtract(x[1:, 1:], pred, out=res[1:, 1:])
    else:
        wide = x.astype(np.int32)
        ra, rb, rc = wide[1:, :-1], wide[:-1, 1:], wide[:-1, :-1]
        pred = {5: lambda: ra + ((rb - rc) >> 1), 6: lambda: rb + ((ra - rc) >> 1), 7: lambda: (ra + rb) >> 1}
        res[1:, 1:] = (wide[1:, 1:] - pred[predictor]()).astype(np.uint16)
    np.subtract(x[1:, 0], x[:-1, 0], out=res[1:, 0])
    first_rows = np.arange(0, x.shape[0], rows_per_interval or x.shape[0])
    res[first_rows, 1:] = x[first_rows, 1:] - x[first_rows, :-1]
    res[first_rows, 0] = x[first_rows, 0] - np.uint16(1 << (precision - point_transform - 1))
    return res.ravel()


def categories(residual: np.ndarray) -> np.ndarray:
    """SSSS of uint16 residuals: the bit length of |diff| (16 for -32768 == +32768 modulo 2**16)."""
    return CATEGORY_OF_RESIDUAL[residual]


_MAGNITUDE = np.minimum(np.arange(1 << 16), (1 << 16) - np.arange(1 << 16))
CATEGORY_OF_RESIDUAL = np.array([int(v).bit_length() for v in _MAGNITUDE], dtype=np.uint8)


def huffman_table(freq: np.ndarray) -> tuple[list[int], list[int]]:
    """BITS (counts per code length 1..16) and HUFFVAL for the given symbol frequencies (T.81 K.2)."""
    n = len(freq)
    f = [int(v) for v in freq] + [1]  # a reserved symbol guarantees no all-ones code
    codesize = [0] * (n + 1)
    others = [-1] * (n + 1)
    while True:
        live = [i for i in range(n + 1) if f[i] > 0]
        c1 = min(live, key=lambda i: (f[i], -i))
        rest = [i for i in live if i != c1]
        if not rest:
            break
        c2 = min(rest, key=lambda i: (f[i], -i))
        f[c1] += f[c2]
        f[c2] = 0
        for c in (c1, c2):
            codesize[c] += 1
            while others[c] >= 0:
                c = others[c]
                codesize[c] += 1
        c = c1
        while others[c] >= 0:
            c = others[c]
        others[c] = c2
    bits = [0] * 33
    for size in codesize:
        if size:
            bits[size] += 1
    for i in range(32, 16, -1):
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    i = 16
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1  # drop the reserved symbol's code
    huffval = [s for size in range(1, 33) for s in range(n) if codesize[s] == size]
    return bits[1:17], huffval


def canonical_codes(bits: list[int], huffval: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical code and length per symbol (T.81 Annex C)."""
    code_of = np.zeros(MAX_CATEGORY + 1, dtype=np.uint64)
    len_of = np.zeros(MAX_CATEGORY + 1, dtype=np.int64)
    code, k = 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            code_of[huffval[k]] = code
            len_of[huffval[k]] = length
            code += 1
            k += 1
        code <<= 1
    return code_of, len_of


def _pack(values: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenate variable-length codes (<= 32 bits) MSB first, pad with 1-bits, stuff 0x00 after 0xFF.

    Each code is shifted into a 5-byte window at its byte offset; codes never share bits, so OR == sum
    and one bincount per window byte assembles the stream.
    """
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    byte0 = starts // 8
    shifted = values << (40 - (starts % 8) - lengths).astype(np.uint64)
    n_bytes = (total + 7) // 8
    stream = np.zeros(n_bytes + 5, dtype=np.float64)
    for j in range(5):
        part = (shifted >> np.uint64(8 * (4 - j))) & np.uint64(0xFF)
        stream += np.bincount(byte0 + j, weights=part.astype(np.float64), minlength=n_bytes + 5)
    out = stream[:n_bytes].astype(np.uint8)
    pad = n_bytes * 8 - total
    if pad:
        out[-1] |= (1 << pad) - 1
    return out.tobytes().replace(b"\xff", b"\xff\x00")


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def encode_jpeg_lossless(
    image: np.ndarray, precision: int, predictor: int = 1, *, rows_per_interval: int = 0
) -> bytes:
    """One grayscale frame (unsigned, values < 2**precision) -> a lossless JPEG codestream, with restart
    markers every ``rows_per_interval`` rows (0: none). Predictor 1 is DICOM's SV1 syntax (.70); the
    others (.57) exercise the integrity check's residual model."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if not 2 <= precision <= 16:
        raise ValueError(f"precision must be 2..16 bits, got {precision}")
    if image.min() < 0 or int(image.max()) >= 1 << precision:
        raise ValueError(f"pixel values must lie in [0, 2**{precision}) for precision {precision}")
    rows, cols = image.shape
    residual = residuals(image, precision, predictor, rows_per_interval=rows_per_interval)
    diff = residual.view(np.int16).astype(np.int64)
    cat = categories(residual).astype(np.int64)
    bits, huffval = huffman_table(np.bincount(cat, minlength=MAX_CATEGORY + 1))
    code_of, len_of = canonical_codes(bits, huffval)
    extra = np.where(diff < 0, diff - 1, diff) & ((np.int64(1) << cat) - 1)
    extra = np.where(cat == MAX_CATEGORY, 0, extra).astype(np.uint64)
    extra_len = np.where(cat == MAX_CATEGORY, 0, cat)
    values = (code_of[cat] << extra_len.astype(np.uint64)) | extra
    lengths = len_of[cat] + extra_len
    step = (rows_per_interval or rows) * cols
    intervals = [_pack(values[i : i + step], lengths[i : i + step]) for i in range(0, rows * cols, step)]
    entropy = b"".join(
        data + (bytes([0xFF, 0xD0 + k % 8]) if k < len(intervals) - 1 else b"")
        for k, data in enumerate(intervals)
    )
    sof = struct.pack(">BHHB", precision, rows, cols, 1) + bytes([1, 0x11, 0])
    dht = bytes([0x00]) + bytes(bits) + bytes(huffval)
    dri = _segment(0xFFDD, struct.pack(">H", step)) if rows_per_interval else b""
    sos = bytes([1, 1, 0x00, predictor, 0, 0])  # Ns=1, Cs=1 Td=0, Ss=predictor, Se=0, Ah/Al=0
    return (
        b"\xff\xd8"
        + _segment(0xFFC3, sof)
        + _segment(0xFFC4, dht)
        + dri
        + _segment(0xFFDA, sos)
        + entropy
        + b"\xff\xd9"
    )
