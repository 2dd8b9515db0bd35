"""Association tests of each factor with cancer, corrected for the number of tests run.

Each factor is tested at the breast level (the unit the label belongs to) when it is constant
within a breast; image-level factors (view) are tested over images, and the table says so since
images of one breast are not independent. Levels recorded as missing are left out of the tests
(their rate is in the rates table). Chi-square is used unless an expected count is below 5, then
Fisher's exact test (Freeman-Halton extension, Monte Carlo p-value, for more than two levels).
Ordered factors also get a Cochran-Armitage trend test (the linear-by-linear association test of
statsmodels, which for a k x 2 table is Cochran-Armitage). Holm's correction covers every test.
tests.csv says which test was run on each table and why (its `reason` column).

The Monte Carlo test is scipy's (random tables with the table's margins from ``stats.random_table``,
the table's probability as statistic, ``stats.monte_carlo_test``) called here directly:
``stats.fisher_exact(method=MonteCarloMethod)`` (scipy 1.17) guesses whether it was handed one table
or a batch from the array's size and fails with "cannot reshape array" once a table holds more units
than a batch of resamples holds cells (9,999 x 12 = 119,988 for a 6 x 2 table). Same draws, same
p-value below that size, and every size works; the cost depends on the number of cells, not on N.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
from scipy import stats
from statsmodels.stats.contingency_tables import Table

from mammo_insight.stats.factors import MISSING, UNIT_IDS, Factor, constant_within

TEST_COLUMNS = [
    "factor",
    "test",
    "unit",
    "n",
    "n_levels",
    "statistic",
    "p_value",
    "p_adjusted",
    "significant",
    "note",
    "reason",
]
MIN_EXPECTED = 5.0
ALPHA = 0.05
CORRECTION = "holm"
MONTE_CARLO_RESAMPLES = 9999


def contingency(frame: pl.DataFrame, factor: Factor, unit: str) -> pd.DataFrame:
    """Counts of negative / positive units per recorded level, in factor order (rows with n > 0)."""
    sub = frame.filter(pl.col(factor.name) != MISSING)
    if unit != "image":
        sub = sub.group_by([factor.name, UNIT_IDS[unit]]).agg(pl.col("cancer").max())
    counts = (
        sub.group_by(factor.name).agg(pl.len().alias("n"), pl.col("cancer").sum().alias("pos")).to_pandas()
    )
    counts = counts.set_index(factor.name).reindex([lv for lv in factor.levels if lv != MISSING]).dropna()
    return pd.DataFrame({"neg": counts["n"] - counts["pos"], "pos": counts["pos"]}).astype(np.int64)


def independence_test(table: np.ndarray, seed: int = 0) -> tuple[str, float, float, str]:
    """(name, statistic, p, why this test) of chi-square, or Fisher's exact test when an expected count is below 5."""
    expected = stats.contingency.expected_freq(table)
    smallest = f"smallest expected count {expected.min():,.2f}"
    if (expected >= MIN_EXPECTED).all():
        res = stats.chi2_contingency(table, correction=False)
        return "chi-square", float(res.statistic), float(res.pvalue), f"{smallest} >= {MIN_EXPECTED:g}"
    sparse = f"{smallest} < {MIN_EXPECTED:g}"
    if table.shape == (2, 2):
        res = stats.fisher_exact(table)
        return "Fisher exact", float(res.statistic), float(res.pvalue), f"{sparse}; 2 x 2: exact"
    try:
        statistic, p = freeman_halton_monte_carlo(table, seed)
    except (ValueError, FloatingPointError) as exc:  # a library refusal must not cost the other tests
        res = stats.chi2_contingency(table, correction=False)
        reason = f"{sparse}, but the Monte Carlo test failed ({exc}): chi-square, approximate"
        return "chi-square", float(res.statistic), float(res.pvalue), reason
    shape = f"{table.shape[0]} x {table.shape[1]}"
    reason = f"{sparse}; {shape}: {MONTE_CARLO_RESAMPLES:,} random tables with the same margins"
    return "Fisher exact (Freeman-Halton, Monte Carlo)", statistic, p, reason


def freeman_halton_monte_carlo(table: np.ndarray, seed: int) -> tuple[float, float]:
    """(probability of the table, Monte Carlo p) as scipy's fisher_exact computes them, at any table total."""
    rng = np.random.default_rng(seed)
    null = stats.random_table(table.sum(axis=1), table.sum(axis=0), seed=rng)

    def draw(size: tuple[int, ...]) -> np.ndarray:
        return null.rvs(size=size[0]).reshape(size)

    def probability(tables: np.ndarray, axis: int) -> np.ndarray:
        return null.pmf(tables.reshape(tables.shape[:-1] + table.shape))

    res = stats.monte_carlo_test(
        table.ravel(), draw, probability, n_resamples=MONTE_CARLO_RESAMPLES, alternative="less"
    )
    return float(min(res.statistic, 1.0)), float(res.pvalue)


def trend_test(table: np.ndarray) -> tuple[float, float]:
    """Cochran-Armitage trend (z, p) with scores 0..k-1 for the ordered levels."""
    res = Table(table).test_ordinal_association(
        row_scores=np.arange(table.shape[0]), col_scores=np.array([0, 1])
    )
    return float(res.zscore), float(res.pvalue)


def association_tests(frame: pl.DataFrame, factors: list[Factor], seed: int = 0) -> pd.DataFrame:
    """One row per test run, with Holm-adjusted p-values; post-outcome and continuous factors are not tested."""
    rows = []
    tested = [f for f in factors if f.kind != "continuous" and not f.post_outcome]
    per_breast = constant_within(frame, [f.name for f in tested], "breast")
    for factor in tested:
        unit = "breast" if factor.name in per_breast else "image"
        note = "" if unit == "breast" else "varies within a breast: tested over images, which are clustered"
        counts = contingency(frame, factor, unit)
        counts = counts[(counts["neg"] + counts["pos"]) > 0]
        if len(counts) < 2 or counts["pos"].sum() == 0 or counts["neg"].sum() == 0:
            continue
        table = counts.to_numpy()
        name, statistic, p, reason = independence_test(table, seed)
        base = {
            "factor": factor.name,
            "unit": unit,
            "n": int(table.sum()),
            "n_levels": len(counts),
            "note": note,
        }
        rows.append({**base, "test": name, "statistic": statistic, "p_value": p, "reason": reason})
        if factor.ordered and len(counts) > 2:
            z, p_trend = trend_test(table)
            trend = {"test": "Cochran-Armitage trend", "statistic": z, "p_value": p_trend}
            rows.append({**base, **trend, "reason": f"ordered factor with {len(counts)} levels"})
    return adjust_family(pd.DataFrame(rows, columns=TEST_COLUMNS))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: statsmodels' ``multipletests(method="holm")``, which runs a
    full garbage collection on every call (70 ms in eda's process), held to it by a test. NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)  # NaN last, so it reaches no other p-value's maximum
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)), 1.0)
    return adjusted


def adjust_family(result: pd.DataFrame) -> pd.DataFrame:
    """Holm's correction over every row of a tests table (the whole family: the study adds its joint tests)."""
    if len(result):
        result["p_adjusted"] = holm(result["p_value"].to_numpy())
        result["significant"] = result["p_adjusted"] <= ALPHA
    return result
