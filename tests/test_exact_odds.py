"""stats.exact_odds gives scipy's conditional odds ratio and exact interval, on any table, in a fraction of
its time at a large cohort's counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats.contingency import odds_ratio

from mammo_insight.stats.exact_odds import conditional_odds_ratio


def _scipy(table: list[list[int]]) -> tuple[float, float, float]:
    result = odds_ratio(table, kind="conditional")
    ci = result.confidence_interval(0.95)
    return float(result.statistic), float(ci.low), float(ci.high)


def _close(ours: tuple[float, ...], theirs: tuple[float, ...]) -> bool:
    return all(
        (np.isinf(a) and np.isinf(b)) or a == b or abs(a - b) <= 1e-7 * max(abs(b), 1e-12)
        for a, b in zip(ours, theirs, strict=True)
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=4, max_size=4))
def test_small_tables_match_scipy(cells):
    table = [cells[:2], cells[2:]]
    margins = (sum(cells[:2]), sum(cells[2:]), cells[0] + cells[2], cells[1] + cells[3])
    if min(margins) == 0:
        assert all(np.isnan(conditional_odds_ratio(table)))
        return
    assert _close(conditional_odds_ratio(table), _scipy(table)), table


@pytest.mark.parametrize(
    "table",
    [
        [[37, 455], [1_500, 21_834]],  # a missingness table of RSNA's size
        [[0, 492], [300, 23_034]],  # a zero cell: estimate 0, interval from 0
        [[12, 0], [40, 900]],  # the other end: estimate and upper bound infinite
        [[740, 9_100], [30_000, 436_680]],  # twenty times RSNA
    ],
)
def test_large_and_edge_tables_match_scipy(table):
    assert _close(conditional_odds_ratio(table), _scipy(table)), table
