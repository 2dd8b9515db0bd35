"""Tests of association at any cohort size: the choice of test, its reason, and large tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mammo_insight.stats import tests as assoc
from mammo_insight.stats.factors import Factor
from mammo_insight.stats.tests import (
    MIN_EXPECTED,
    MONTE_CARLO_RESAMPLES,
    association_tests,
    independence_test,
)

# RSNA's view x cancer table over images (AT, CC, LM, LMO, ML, MLO): rare views, so Monte Carlo
RSNA_VIEW = np.array([[17, 2], [26199, 566], [10, 0], [1, 0], [8, 0], [27313, 590]])


def scipy_monte_carlo(table: np.ndarray, seed: int = 0) -> stats._result_classes.SignificanceResult:
    method = stats.MonteCarloMethod(n_resamples=MONTE_CARLO_RESAMPLES, rng=np.random.default_rng(seed))
    return stats.fisher_exact(table, method=method)


def test_scipy_monte_carlo_fisher_crashes_at_large_n():
    """The crash `eda` hit on RSNA x 5 (273,530 rows). When this fails, scipy is fixed."""
    with pytest.raises(ValueError, match="cannot reshape"):
        scipy_monte_carlo(RSNA_VIEW * 5)


def test_monte_carlo_equals_scipy_where_scipy_works():
    name, statistic, p, _ = independence_test(RSNA_VIEW)
    ref = scipy_monte_carlo(RSNA_VIEW)
    assert name == "Fisher exact (Freeman-Halton, Monte Carlo)"
    assert (statistic, p) == (float(ref.statistic), float(ref.pvalue))


@pytest.mark.parametrize("copies", [5, 20, 200])
def test_monte_carlo_works_at_large_n(copies):
    name, statistic, p, reason = independence_test(RSNA_VIEW * copies)
    assert name.startswith("Fisher exact (Freeman-Halton")
    assert 1 / (MONTE_CARLO_RESAMPLES + 1) <= p <= 1 and 0 <= statistic <= 1
    assert "6 x 2" in reason and "< 5" in reason


def test_library_refusal_falls_back_to_chi_square_with_a_reason(monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("refused")

    monkeypatch.setattr(assoc.stats, "monte_carlo_test", refuse)
    name, _, p, reason = independence_test(RSNA_VIEW)
    assert name == "chi-square" and 0 <= p <= 1
    assert "Monte Carlo test failed (refused)" in reason


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2_000_000), st.integers(0, 2_000)).filter(lambda r: sum(r) > 0),
        min_size=2,
        max_size=8,
    )
)
def test_the_test_follows_the_expected_counts_at_any_size(rows):
    table = np.array(rows, dtype=np.int64)
    if table[:, 0].sum() == 0 or table[:, 1].sum() == 0:
        return  # association_tests never tests a table with one outcome only
    name, statistic, p, reason = independence_test(table)
    smallest = stats.contingency.expected_freq(table).min()
    assert 0 <= p <= 1
    # Fisher's statistic is the sample odds ratio: 0 or infinite when a cell is empty, e.g. [[1, 0], [0, 1]]
    assert np.isfinite(statistic) or (name == "Fisher exact" and statistic == np.inf)
    if smallest >= MIN_EXPECTED:
        assert name == "chi-square" and ">= 5" in reason
    elif table.shape == (2, 2):
        assert name == "Fisher exact" and "2 x 2" in reason
    else:
        assert name == "Fisher exact (Freeman-Halton, Monte Carlo)" and "< 5" in reason


def test_tests_table_at_a_quarter_million_units_names_test_and_reason():
    """A cohort big enough to break scipy's Monte Carlo Fisher, with a rare level: every test runs."""
    rng = np.random.default_rng(0)
    n = 250_000
    level = rng.choice(["a", "b", "rare"], size=n, p=[0.5, 0.49998, 0.00002])
    frame = pl.DataFrame(
        {
            "grade": level,
            "cancer": (rng.random(n) < np.where(level == "a", 0.03, 0.02)).astype(np.int8),
            "breast_id": np.arange(n).astype(str),
            "patient_id": (np.arange(n) // 2).astype(str),
        }
    )
    factor = Factor("grade", "ordinal", ("a", "b", "rare"))
    tests = association_tests(frame, [factor])
    assert list(tests["test"]) == ["Fisher exact (Freeman-Halton, Monte Carlo)", "Cochran-Armitage trend"]
    assert tests["reason"].str.len().gt(0).all() and (tests["p_value"] < 0.001).all()
