"""Numbers given on the command line: one parser for every option that takes HEIGHTxWIDTH, the seed range."""

from __future__ import annotations

import re

from mammo_insight.errors import MammoInsightError

MIN_SIDE = 16
MAX_SIDE = 8192  # above the largest detector (about 5,000 px); 8192x8192 x 16 bits is 128 MB per image
SEED_MAX = 2**32 - 1  # numpy's and Lightning's seeds are unsigned 32-bit: every --seed is 0..SEED_MAX
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """'512x256' -> (512, 256): height x width, each side 16..8192; anything else is a MammoInsightError."""
    match = _SIZE.match(text) if isinstance(text, str) else None
    if match is None:
        raise MammoInsightError(f"size must look like HEIGHTxWIDTH (e.g. 512x256), got {text!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if min(height, width) < MIN_SIDE:
        raise MammoInsightError(f"size {text!r} is too small (at least {MIN_SIDE}x{MIN_SIDE})")
    if max(height, width) > MAX_SIDE:
        raise MammoInsightError(f"size {text!r} is too large (at most {MAX_SIDE} per side)")
    return height, width


def format_size(size: tuple[int, int]) -> str:
    """(512, 256) -> '512x256', the inverse of :func:`parse_size`."""
    return f"{int(size[0])}x{int(size[1])}"
