"""The findings say what they rest on: the unit a row is, the cohort's kind, the adjustment set by name,
factor names resolved to the tables', age bands in band order, and machine ranges read with their
intervals and sites (issue 30's list of wrong sentences), on each adapter's made-up table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.stats.findings import age_findings, machine_finding
from mammo_insight.stats.findings import tests_finding as association_sentence
from mammo_insight.stats.study import run_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_a_derived_factor_is_the_same_factor_as_its_column():
    """CBIS: subtlety_quartile significant must not leave 'no detectable association for subtlety'."""
    tests = pd.DataFrame(
        {
            "factor": ["subtlety", "subtlety_quartile", "view"],
            "test": ["Mann-Whitney", "chi-square", "chi-square"],
            "significant": [False, True, False],
        }
    )
    text = association_sentence(tests)
    assert "subtlety_quartile (chi-square)" in text
    assert "No detectable association for view." in text and "for subtlety" not in text


def _band_rates(rates: list[float], n: list[int]) -> pd.DataFrame:
    levels = ["<40", "40-49", "50-59", "60-69", "70+"]
    return pd.DataFrame(
        {
            "factor": "age_band",
            "level": levels,
            "unit": "breast",
            "n": n,
            "n_cancer": [round(r * k) for r, k in zip(rates, n, strict=True)],
            "rate": rates,
            "ci_low": [r / 2 for r in rates],
            "ci_high": [r * 1.5 for r in rates],
        }
    )


def test_a_rising_rate_is_told_from_the_youngest_band_not_the_lowest():
    """RSNA: '<40' at 1.0 % (192 breasts) is above '40-49' at 0.9 %: the sentence starts at '<40'."""
    rates = _band_rates([0.010, 0.009, 0.015, 0.022, 0.030], [192, 5000, 6000, 5000, 3000])
    tests = pd.DataFrame(
        [
            {
                "factor": "age_band",
                "test": "Cochran-Armitage trend",
                "statistic": 5.0,
                "p_value": 1e-6,
                "p_adjusted": 1e-5,
                "significant": True,
            }
        ]
    )
    odds = pd.DataFrame(columns=["term", "model", "odds_ratio", "ci_low", "ci_high", "p_value"])
    text = age_findings(rates, odds, tests, pd.DataFrame(columns=["model", "factor"]))[0]
    assert text.startswith("The breast-level cancer rate rises from 1.0%") and "at age <40" in text


def test_machine_extremes_are_read_with_their_intervals_and_their_site():
    rates = pd.DataFrame(
        {
            "factor": "machine_id",
            "level": ["210", "170", "49"],
            "unit": "breast",
            "n": [468, 382, 5000],
            "n_cancer": [0, 10, 100],
            "rate": [0.0, 10 / 382, 0.02],
            "ci_low": [0.0, 0.014, 0.016],
            "ci_high": [0.008, 0.047, 0.024],
        }
    )
    crosstab = pd.DataFrame({"1": [900, 700, 0], "2": [0, 0, 9000]}, index=["210", "170", "49"])
    text = machine_finding(rates, "Machines are nested in sites.", "breast", crosstab)
    assert "do not overlap" in text and "picked as the extremes of 3 machines" in text
    assert "Both machines are at site 1" in text and "nested in sites" not in text


def _uci_root(tmp_path: Path, n: int = 500, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    severity = (rng.random(n) < 0.46).astype(int)
    age = np.clip(rng.normal(55 + 10 * severity, 12), 20, 95).round().astype(int)
    shape = np.where(rng.random(n) < 0.3 + 0.4 * severity, 4, rng.integers(1, 4, n))
    lines = ["BI-RADS,Age,Shape,Margin,Density,Severity"] + [
        f"{4 + s},{a},{sh},{rng.integers(1, 6)},{rng.integers(1, 5)},{s}"
        for s, a, sh in zip(severity, age, shape, strict=True)
    ]
    (tmp_path / "mammographic_masses.data").write_text("\n".join(lines) + "\n")
    shutil.copy(EXAMPLES / "mammographic_masses.toml", tmp_path / "m.toml")
    return tmp_path


@pytest.mark.slow
def test_uci_masses_are_counted_as_masses_of_a_biopsied_cohort(tmp_path):
    cohort = load_cohort("generic", _uci_root(tmp_path), mapping=tmp_path / "m.toml")
    assert cohort.row_unit == "mass" and cohort.kind == "biopsied lesions"
    findings = " ".join(run_study(cohort).findings)
    assert "labelled masses" in findings and "labelled images" not in findings and "masss" not in findings
    assert "cohort of biopsied lesions, not a screening population" in findings
    assert "image-level" not in findings and "screening-time factors" not in findings


@pytest.mark.slow
def test_cmmd_names_its_adjustment_set_and_its_kind(tmp_path):
    rng = np.random.default_rng(6)
    lines = ["ID1,LeftRight,Age,number,abnormality,classification,subtype"]
    for i in range(400):
        malignant = rng.random() < 0.5
        age = int(np.clip(rng.normal(45 + 12 * malignant, 10), 25, 85))
        lines.append(
            f"D1-{i:04d},{rng.choice(['L', 'R'])},{age},2,{rng.choice(['mass', 'calcification'])},"
            f"{'Malignant' if malignant else 'Benign'},"
        )
    (tmp_path / "CMMD_clinicaldata_revision.csv").write_text("\n".join(lines) + "\n")
    cohort = load_cohort("cmmd", tmp_path)
    assert cohort.kind == "biopsied lesions"
    findings = run_study(cohort).findings
    text = " ".join(findings)
    assert "screening-time" not in text.replace("no factor here is a screening-time", "")
    age = next(f for f in findings if f.startswith("Each 10 years of age"))
    assert age.endswith("after adjustment for laterality, abnormality.")  # the lesion type is a factor
