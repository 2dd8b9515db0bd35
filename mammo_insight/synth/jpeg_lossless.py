"""A minimal encoder for lossless JPEG, process 14, first-order prediction (SV1, DICOM 1.2.840.10008.1.2.4.70).

Why hand-written: a large share of RSNA's DICOMs use this transfer syntax, the synthetic cohort must
exercise it, and no encoder ships with pydicom or pylibjpeg (only decoders; GDCM encodes but is an
optional heavy dependency). This is ITU-T T.81 Annex H with one component, predictor 1, point
transform 0 and an optimal Huffman table (Annex K.2); pylibjpeg-libjpeg decodes it bit-exactly
(tests/test_synth.py checks this).
"""

from __future__ import annotations

import struct

import numpy as np

MAX_CATEGORY = 16


def _differences(image: np.ndarray, precision: int) -> np.ndarray:
    """Prediction residuals for selection value 1 (left neighbour; above for the first column)."""
    x = image.astype(np.int64)
    pred = np.empty_like(x)
    pred[:, 1:] = x[:, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[0, 0] = 1 << (precision - 1)
    diff = (x - pred) & 0xFFFF
    return np.where(diff >= 0x8000, diff - 0x10000, diff).ravel()


def _categories(diff: np.ndarray) -> np.ndarray:
    """SSSS: the bit length of |diff| (16 for the single value -32768 == +32768 modulo 2**16)."""
    mag = np.abs(diff)
    cat = np.zeros(mag.shape, dtype=np.int64)
    nz = mag > 0
    cat[nz] = np.floor(np.log2(mag[nz])).astype(np.int64) + 1
    return np.minimum(cat, MAX_CATEGORY)


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


def _codes(bits: list[int], huffval: list[int]) -> tuple[np.ndarray, np.ndarray]:
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


def encode_jpeg_lossless_sv1(image: np.ndarray, precision: int) -> bytes:
    """One grayscale frame (unsigned, values < 2**precision) -> a lossless JPEG codestream."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if not 2 <= precision <= 16:
        raise ValueError(f"precision must be 2..16 bits, got {precision}")
    if image.min() < 0 or int(image.max()) >= 1 << precision:
        raise ValueError(f"pixel values must lie in [0, 2**{precision}) for precision {precision}")
    rows, cols = image.shape
    diff = _differences(image, precision)
    cat = _categories(diff)
    bits, huffval = huffman_table(np.bincount(cat, minlength=MAX_CATEGORY + 1))
    code_of, len_of = _codes(bits, huffval)
    extra = np.where(diff < 0, diff - 1, diff) & ((np.int64(1) << cat) - 1)
    extra = np.where(cat == MAX_CATEGORY, 0, extra).astype(np.uint64)
    extra_len = np.where(cat == MAX_CATEGORY, 0, cat)
    values = (code_of[cat] << extra_len.astype(np.uint64)) | extra
    lengths = len_of[cat] + extra_len
    sof = struct.pack(">BHHB", precision, rows, cols, 1) + bytes([1, 0x11, 0])
    dht = bytes([0x00]) + bytes(bits) + bytes(huffval)
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns=1, Cs=1 Td=0, Ss=predictor 1, Se=0, Ah/Al=0
    return (
        b"\xff\xd8"
        + _segment(0xFFC3, sof)
        + _segment(0xFFC4, dht)
        + _segment(0xFFDA, sos)
        + _pack(values, lengths)
        + b"\xff\xd9"
    )
