"""The conditional (Fisher) odds ratio of a 2 x 2 table and its exact 95 % interval, as
``scipy.stats.contingency.odds_ratio(table, kind="conditional")`` gives them, for tables of any size.

Given its margins, a table's first cell follows Fisher's noncentral hypergeometric distribution; the
estimate is the odds ratio whose mean is the observed cell, and the interval inverts the two one-sided
tests. scipy evaluates that distribution point by point, about two seconds per table once a cohort holds
half a million breasts (the leakage audit's missingness tables); here the whole support is one vector of
log-weights (log binomial coefficients), and the roots are found by scipy's own bracketing and ``brentq``
with its tolerance, so the figures agree with scipy's to rounding (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln, logsumexp


class _Support:
    """The first cell's support and its log-weights (without the noncentrality) for a table's margins."""

    def __init__(self, table: np.ndarray) -> None:
        (a, b), (c, d) = table
        n1, n2, m1 = a + b, c + d, a + c
        self.x = np.arange(max(0, m1 - n2), min(n1, m1) + 1, dtype=float)
        self.observed = float(a)
        self.log_weight = _log_choose(n1, self.x) + _log_choose(n2, m1 - self.x)

    def _log_pmf(self, psi: float) -> np.ndarray:
        terms = self.log_weight + self.x * np.log(psi)
        return terms - logsumexp(terms)

    def mean(self, psi: float) -> float:
        return float(np.exp(self._log_pmf(psi)) @ self.x)

    def at_most(self, psi: float) -> float:
        """P(X <= observed)."""
        return float(np.exp(logsumexp(self._log_pmf(psi)[self.x <= self.observed])))

    def at_least(self, psi: float) -> float:
        """P(X >= observed)."""
        return float(np.exp(logsumexp(self._log_pmf(psi)[self.x >= self.observed])))


def _log_choose(n: float, k: np.ndarray) -> np.ndarray:
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def _solve(func: Callable[[float], float]) -> float:
    """The root of an increasing ``func``: scipy's bracketing (halve or double from 1), then brentq."""
    nc, factor = 1.0, 2.0
    value = func(nc)
    if value == 0:
        return nc
    if value > 0:
        nc /= factor
        while func(nc) > 0:
            nc /= factor
        lo, hi = nc, factor * nc
    else:
        nc *= factor
        while func(nc) < 0:
            nc *= factor
        lo, hi = nc / factor, nc
    return float(brentq(func, lo, hi, xtol=1e-13))


def conditional_odds_ratio(table: list[list[int]], confidence: float = 0.95) -> tuple[float, float, float]:
    """(conditional MLE of the odds ratio, exact interval low, high) of [[a, b], [c, d]].

    The estimate is 0 or infinite when the first cell sits at an end of its support; so is the interval's
    bound on that side. Margins with a zero give NaN throughout.
    """
    cells = np.asarray(table, dtype=float)
    if min(cells.sum(axis=0).min(), cells.sum(axis=1).min()) == 0:
        return float("nan"), float("nan"), float("nan")
    support = _Support(cells)
    alpha = (1 - confidence) / 2
    at_low, at_high = support.observed == support.x[0], support.observed == support.x[-1]
    estimate = (
        0.0 if at_low else np.inf if at_high else _solve(lambda nc: support.mean(nc) - support.observed)
    )
    low = 0.0 if at_low else _solve(lambda nc: support.at_least(nc) - alpha)
    high = np.inf if at_high else _solve(lambda nc: alpha - support.at_most(nc))
    return float(estimate), float(low), float(high)
