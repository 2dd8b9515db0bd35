"""Damaged copies of a DICOM, for the corpus that shows corrupt pixels never pass as ok.

Each damage hits the pixel stream only (the header stays valid), at its middle, the way a bad sector,
a faulty transfer or a truncated download does: ``junk`` overwrites n bytes with random ones, ``zeros``
with zero bytes, ``insert`` adds n random bytes, ``truncate`` cuts the stream at its middle. For an
encapsulated (compressed) syntax the one frame's codestream is damaged and re-encapsulated; for native
pixel data the raw values are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_frames

DAMAGES = ("junk", "zeros", "insert", "truncate")


def damage_bytes(data: bytes, damage: str, n: int, rng: np.random.Generator) -> bytes:
    """``data`` with ``damage`` applied at its middle (n bytes, at most a quarter of the stream)."""
    mid = len(data) // 2
    n = min(n, len(data) // 4)
    if damage == "junk":
        return data[:mid] + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + data[mid + n :]
    if damage == "zeros":
        return data[:mid] + bytes(n) + data[mid + n :]
    if damage == "insert":
        return data[:mid] + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + data[mid:]
    if damage == "truncate":
        return data[:mid]
    raise ValueError(f"unknown damage {damage!r}; choose one of {', '.join(DAMAGES)}")


def write_damaged(source: Path, out: Path, damage: str, n: int = 500, *, seed: int = 0) -> Path:
    """A copy of the DICOM ``source`` at ``out`` whose pixel stream carries ``damage``."""
    ds = pydicom.dcmread(source)
    rng = np.random.default_rng(seed)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = encapsulate([damage_bytes(frame, damage, n, rng)])
    else:
        data = damage_bytes(ds.PixelData, damage, n, rng)
        ds.PixelData = data + b"\0" * (len(data) % 2)  # native pixel data keeps an even length
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
