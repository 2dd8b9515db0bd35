"""stats.design pools sparse levels so that an odds ratio means something: an ordered factor's into its
neighbours (density A with B, never A with D), another factor's into 'other'."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from mammo_insight.stats.design import MIN_EVENTS, MIN_UNITS, OTHER, POOLED, _pool_rare, design_block
from mammo_insight.stats.factors import MISSING, Factor

DENSITY = Factor("density", "ordinal", ("A", "B", "C", "D", MISSING))


def _column(counts: dict[str, tuple[int, int]]) -> tuple[pd.Series, pd.Series]:
    """(values, labels) with (breasts, cancers) per level."""
    values, labels = [], []
    for level, (n, k) in counts.items():
        values += [level] * n
        labels += [1.0] * k + [0.0] * (n - k)
    return pd.Series(values), pd.Series(labels)


def test_rare_extremes_of_an_ordered_factor_join_their_neighbours_not_each_other():
    values, y = _column({"A": (20, 1), "B": (200, 20), "C": (200, 40), "D": (25, 4), MISSING: (300, 30)})
    pooled, notes = _pool_rare(values, y, DENSITY)
    assert set(pooled) == {f"A{POOLED}B", f"C{POOLED}D", MISSING}
    assert notes == [f"density: sparse levels pooled with their neighbours as 'A{POOLED}B', 'C{POOLED}D'"]
    block = design_block(pooled, DENSITY)
    assert list(block.columns) == [f"density=C{POOLED}D (vs A{POOLED}B)", f"density=missing (vs A{POOLED}B)"]
    # an unordered factor's rare levels still become 'other'
    machine = Factor("machine_id", "categorical", ("m1", "m2", "m3", "m4"))
    values, y = _column({"m1": (200, 20), "m2": (200, 20), "m3": (10, 1), "m4": (12, 0)})
    assert set(_pool_rare(values, y, machine)[0]) == {"m1", "m2", OTHER}


@given(
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 12)), min_size=2, max_size=6),
)
def test_ordered_pooling_keeps_runs_contiguous_and_each_one_large_enough(cells):
    levels = tuple("ABCDEF"[: len(cells)])
    counts = {lv: (n, min(k, n)) for lv, (n, k) in zip(levels, cells, strict=True) if n}
    if not counts:
        return
    values, y = _column(counts)
    pooled, _ = _pool_rare(values, y, Factor("grade", "ordinal", levels))
    runs = list(dict.fromkeys(pooled))
    flat = [part for run in runs for part in run.split(POOLED)]
    assert flat == [lv for lv in levels if lv in counts]  # every level once, in order: runs are contiguous
    for run in runs:
        n = sum(counts[p][0] for p in run.split(POOLED))
        k = sum(counts[p][1] for p in run.split(POOLED))
        assert len(runs) == 1 or (n >= MIN_UNITS and k >= MIN_EVENTS), (run, n, k)
