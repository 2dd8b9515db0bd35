"""Small plotting rules shared by every stage's figures."""

from __future__ import annotations

import numpy as np


def error_lengths(values, lows, highs) -> np.ndarray:
    """(2, n) error-bar lengths for matplotlib: never negative, 0 where a bound is missing.

    matplotlib refuses negative lengths, and a bound can sit a rounding error past its estimate; a
    figure must not throw a finished stage away for that.
    """
    values, lows, highs = (np.asarray(a, dtype=float) for a in (values, lows, highs))
    lengths = np.vstack([values - lows, highs - values])
    return np.clip(np.where(np.isfinite(lengths), lengths, 0.0), 0.0, None)
