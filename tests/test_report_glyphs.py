"""The marks drawn in table cells (report.glyphs) and the eda page's forest tables built from them."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from mammo_insight.report import table
from mammo_insight.report.glyphs import MUTED, WARN, Scale, axis, heat, interval, nice_ticks
from mammo_insight.stats.factors import Factor
from mammo_insight.stats.forest_tables import RATE_MARK, missingness_heat, rates_forest
from mammo_insight.stats.rates import wilson

FINITE = st.floats(-1e6, 1e6, allow_nan=False)


def _circle_x(mark: str) -> float:
    return float(re.search(r'<circle cx="([\d.]+)"', mark).group(1))


@settings(max_examples=300, deadline=None)
@given(FINITE, st.floats(1e-3, 1e6), st.lists(FINITE, min_size=2, max_size=10))
def test_a_linear_scale_keeps_order_and_stays_inside_the_mark(low, span, values):
    scale = Scale(low, low + span)
    xs = [scale.x(v) for v in sorted(values)]
    assert xs == sorted(xs)
    assert all(scale.pad <= x <= scale.width - scale.pad for x in xs)
    assert scale.x(low) == pytest.approx(scale.pad) and scale.x(low + span) == pytest.approx(
        scale.width - scale.pad
    )


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-3, 10), st.floats(1.01, 1e4), st.lists(st.floats(1e-6, 1e8), min_size=2, max_size=10))
def test_a_log_scale_places_ratios_symmetrically_about_one(low, factor, values):
    scale = Scale(low, low * factor, log=True)
    xs = [scale.x(v) for v in sorted(values)]
    assert xs == sorted(xs) and all(scale.pad <= x <= scale.width - scale.pad for x in xs)
    even = Scale(0.25, 4.0, log=True)
    assert even.x(1.0) == pytest.approx(even.width / 2) and even.x(2.0) - even.x(1.0) == pytest.approx(
        even.x(1.0) - even.x(0.5)
    )


@settings(max_examples=500, deadline=None)
@given(FINITE, st.floats(1e-4, 1e7))
def test_nice_ticks_are_round_evenly_spaced_and_inside_the_range(low, span):
    assume(span > 1e-6 * abs(low))  # a range a mark can show: not a few ulps of a large number
    ticks = nice_ticks(low, low + span)
    assert 2 <= len(ticks) <= 6
    steps = np.diff(ticks)
    step = float(steps[0])
    np.testing.assert_allclose(steps, step, rtol=1e-6)
    slack = 1e-9 * step + 1e-12 * (abs(low) + span)  # a tick within a billionth of a step of an end counts
    assert all(low - slack <= t <= low + span + slack for t in ticks)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5, 10)) < 1e-6


def test_scales_refuse_empty_or_non_positive_log_ranges():
    with pytest.raises(ValueError, match="low < high"):
        Scale(1.0, 1.0)
    with pytest.raises(ValueError, match="low > 0"):
        Scale(0.0, 2.0, log=True)


def test_an_interval_past_the_scale_ends_in_an_arrow_and_missing_parts_are_left_out():
    scale = Scale(0.0, 10.0)
    inside = interval(5, 4, 6, scale)
    past = interval(5, 4, 30, scale)
    assert "<path" not in inside and "<path" in past
    assert "<line" in past and 'x2="208.0"' in past  # clipped at the scale's end (width 220 - pad 12)
    only_dot = interval(5, float("nan"), float("nan"), scale)
    assert "<circle" in only_dot and "<line" not in only_dot
    assert "<circle" not in interval(float("nan"), 4, 6, scale)


def test_references_and_bands_are_drawn_only_inside_the_scale():
    scale = Scale(0.3, 1.0)
    mark = interval(
        0.8, float("nan"), float("nan"), scale, references=[(0.5, MUTED, "dashed"), (2.0, WARN, "dotted")]
    )
    assert mark.count("<line") == 1 and 'stroke-dasharray="3 2"' in mark
    banded = interval(0.6, float("nan"), float("nan"), scale, band=(0.45, 0.55))
    assert "<rect" in banded


def test_text_from_data_in_a_mark_or_a_table_is_escaped_and_marks_are_not():
    evil = "<script>alert(1)</script>"
    mark = interval(1, 0, 2, Scale(0, 3), label=evil)
    assert "<script>" not in mark and "&lt;script&gt;" in mark
    html = str(table(pd.DataFrame({"level": [evil], "mark": pd.Series([mark], dtype=object)})))
    assert "<script>" not in html and html.count("<svg") == 1 and 'class="mark"' in html
    assert "<script>" not in heat(0.5, evil)


def test_heat_shades_by_the_fraction_and_keeps_text_legible():
    assert "rgba(164,54,29,0.00)" in heat(0.0, "0%") and "rgba(164,54,29,1.00)" in heat(1.7, "x")
    assert "color:#ffffff" in heat(0.9, "90%") and "color:#1d2330" in heat(0.2, "20%")
    shaded = missingness_heat(
        pd.DataFrame(
            {"column": ["density"] * 3, "site_id": ["all", "1", "2"], "missing_fraction": [0.5, 0.0, 1.0]}
        )
    )
    assert list(shaded.columns) == ["column", "all sites", "site 1", "site 2"]
    assert isinstance(shaded.loc[0, "site 2"], Markup) and "1.00)" in shaded.loc[0, "site 2"]


def _rates(levels: dict[str, tuple[int, int]], factor: str = "density") -> pd.DataFrame:
    n = np.array([v[0] for v in levels.values()])
    k = np.array([v[1] for v in levels.values()])
    low, high = wilson(k, n)
    rows = pd.DataFrame(
        {"factor": factor, "unit": "breast", "level": list(levels), "n": n, "n_cancer": k, "rate": k / n}
    )
    rows["ci_low"], rows["ci_high"] = low, high
    overall = pd.DataFrame(
        {"factor": ["all"], "unit": ["breast"], "level": ["all"], "n": [n.sum()], "n_cancer": [k.sum()]}
    )
    overall["rate"] = overall["n_cancer"] / overall["n"]
    overall["ci_low"], overall["ci_high"] = wilson(overall["n_cancer"].to_numpy(), overall["n"].to_numpy())
    return pd.concat([overall, rows], ignore_index=True)


def test_the_rates_forest_places_each_level_on_its_factor_scale_with_the_overall_rate_dashed():
    rates = _rates({"A": (1000, 10), "B": (1000, 40), "C": (1000, 25), "missing": (500, 10)})
    density = Factor("density", "ordered", ["A", "B", "C", "missing"])
    forest = rates_forest(rates, [density])
    assert list(forest["level"]) == ["A", "B", "C", "missing", ""]  # the levels, then the scale
    marks = forest[RATE_MARK]
    xs = [_circle_x(m) for m in marks[:3]]
    assert xs[0] < xs[2] < xs[1]  # 1% < 2.5% < 4%
    overall_x = float(re.search(r'<line x1="([\d.]+)" y1="0"', marks.iloc[0]).group(1))
    scale_top = float(re.search(r"to ([\d.]+)%", marks.iloc[-1]).group(1))
    assert overall_x == pytest.approx(12 + (100 * 85 / 3500) / scale_top * (220 - 24), abs=0.1)
    assert f'fill="{MUTED}"' in marks.iloc[3] and "<text" in marks.iloc[-1]
    leaky = rates_forest(
        _rates({"0": (100, 30), "1": (100, 1)}, "birads"),
        [Factor("birads", "categorical", ["0", "1"], post_outcome=True)],
    )
    assert (
        leaky["factor"].iloc[0] == "birads  (leaks the label)"
        and f'fill="{WARN}"' in leaky[RATE_MARK].iloc[0]
    )


def test_eda_draws_its_page_without_matplotlib():
    """The page's pictures are marks in its tables: the eda command loads no plotting library."""
    code = (
        "import sys\n"
        "import mammo_insight.stages.eda, mammo_insight.stats.report\n"
        "print('MPL' if 'matplotlib' in sys.modules else 'NO-MPL')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "NO-MPL"


def test_an_axis_labels_its_round_ticks_at_their_positions():
    scale = Scale(0.0, 8.15)
    drawn = axis(scale, "%")
    labels = re.findall(r'<text x="([\d.]+)"[^>]*>([^<]+)</text>', drawn)
    assert [text for _, text in labels] == ["0%", "2%", "4%", "6%", "8%"]
    assert [float(x) for x, _ in labels] == pytest.approx([scale.x(v) for v in (0, 2, 4, 6, 8)], abs=0.05)
    assert [
        t for _, t in re.findall(r'<text x="([\d.]+)"[^>]*>([^<]+)</text>', axis(Scale(0.1, 7, log=True)))
    ] == [
        "0.1",
        "0.2",
        "0.5",
        "1",
        "2",
        "5",
    ]
