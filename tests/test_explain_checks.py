"""Pointing game, energy inside the lesion and rank correlation on hand-made maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_insight.explain.checks import (
    area_fraction,
    energy_inside,
    in_check_sample,
    mean_with_ci,
    pointing_hit,
    rank_correlation,
    summarise_checks,
)
from mammo_insight.imaging.annotations import circle_mask as lesion_mask

SHAPE = (100, 120)
LESION = np.array([[30.0, 40.0, 10.0]])


def _map_with_peak(x: int, y: int) -> np.ndarray:
    m = np.zeros(SHAPE, np.float32)
    m[y, x] = 1.0
    return m


def test_lesion_mask_is_the_disc():
    mask = lesion_mask(SHAPE, LESION)
    assert mask[40, 30] and mask[40, 40] and not mask[40, 41] and not mask[51, 30]
    assert abs(mask.sum() - np.pi * 100) < 0.1 * np.pi * 100
    assert lesion_mask(SHAPE, LESION, tolerance=5)[40, 45]


def test_pointing_hit_and_miss_and_tolerance():
    inside = lesion_mask(SHAPE, LESION)
    assert pointing_hit(_map_with_peak(35, 42), inside) == 1.0
    assert pointing_hit(_map_with_peak(80, 80), inside) == 0.0
    near = _map_with_peak(43, 40)  # 3 px outside the circle
    assert pointing_hit(near, inside) == 0.0
    assert pointing_hit(near, lesion_mask(SHAPE, LESION, tolerance=5)) == 1.0


def test_flat_map_scores_the_chance_level():
    inside = lesion_mask(SHAPE, LESION)
    support = np.zeros(SHAPE, bool)
    support[:, :60] = True
    flat = np.zeros(SHAPE, np.float32)
    assert pointing_hit(flat, inside, support) == pytest.approx(area_fraction(inside, support))
    assert area_fraction(inside, support) == pytest.approx(inside.sum() / (100 * 60))
    assert np.isnan(energy_inside(flat, inside))


def test_energy_inside():
    inside = lesion_mask(SHAPE, LESION)
    m = np.zeros(SHAPE, np.float32)
    m[inside] = 1.0
    assert energy_inside(m, inside) == pytest.approx(1.0)
    m[:, 100:] = 1.0  # 20 columns outside, same weight
    expected = inside.sum() / (inside.sum() + 20 * 100)
    assert energy_inside(m, inside) == pytest.approx(expected)


def test_rank_correlation():
    rng = np.random.default_rng(0)
    a = rng.random((20, 10))
    assert rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert abs(rank_correlation(a, rng.random((20, 10)))) < 0.3
    assert np.isnan(rank_correlation(a, np.zeros_like(a)))


def test_mean_with_ci_resamples_groups_and_skips_nan():
    values = np.array([1.0, 1.0, 0.0, 0.0, np.nan])
    out = mean_with_ci(values, groups=np.array(["a", "a", "b", "b", "c"]), n_boot=500)
    assert out["mean"] == 0.5 and out["n"] == 4
    assert out["ci_low"] == 0.0 and out["ci_high"] == 1.0  # two women: each resample is 0, 0.5 or 1
    assert mean_with_ci(np.array([np.nan]))["mean"] is None


def test_summarise_checks_columns():
    frame = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c"],
            "pointing": [1.0, 0.0, 1.0],
            "energy_inside": [0.5, 0.1, 0.3],
            "rank_corr": [0.1, 0.2, np.nan],
        }
    )
    summary = summarise_checks(frame, n_boot=200)
    assert summary["pointing"]["mean"] == pytest.approx(2 / 3)
    assert summary["rank_corr"]["n"] == 2
    assert "area_fraction" not in summary


def test_one_hit_in_n_gives_one_over_n_in_the_table_and_the_summary():
    """The CSV's pointing column over the in_checks rows and the summary are the same number."""
    inside = lesion_mask(SHAPE, LESION)
    n = 5
    sampled = [_map_with_peak(35, 42)] + [_map_with_peak(80, 80)] * (n - 1)  # one hit, n - 1 misses
    rows = [
        {"patient_id": f"p{i}", "categories": "checked", "pointing": pointing_hit(m, inside)}
        for i, m in enumerate(sampled)
    ]
    rows.append(
        {"patient_id": "g", "categories": "TP", "pointing": 1.0}
    )  # gallery pick: confident, not sampled
    rows.append({"patient_id": "u", "categories": "FP+checked", "pointing": np.nan})  # sampled, no lesion
    table = pd.DataFrame(rows)
    table["in_checks"] = in_check_sample(table)
    assert table["in_checks"].tolist() == [True] * n + [False, False]
    assert table.loc[table["in_checks"], "pointing"].mean() == 1 / n
    assert summarise_checks(table[table["in_checks"]], n_boot=200)["pointing"]["mean"] == 1 / n
    assert table["pointing"].mean() != 1 / n  # the gallery hit would inflate it


def test_check_sample_keeps_a_flat_map_that_has_no_energy():
    inside = lesion_mask(SHAPE, LESION)
    flat = np.zeros(SHAPE, np.float32)
    table = pd.DataFrame(
        {
            "categories": ["FN+checked", "TP"],
            "pointing": [pointing_hit(flat, inside), 1.0],
            "energy_inside": [energy_inside(flat, inside), 0.2],
        }
    )
    assert in_check_sample(table).tolist() == [True, False]
    assert not in_check_sample(table.drop(columns="pointing")).any()
