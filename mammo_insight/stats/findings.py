"""Plain-language findings written from the numbers, for the top of the report.

Every sentence is computed from the study's tables (nothing is hard-coded about any dataset), and
each carries its interval or test so a reader can judge it without opening the tables.
"""

from __future__ import annotations

import pandas as pd

from mammo_insight.stats.factors import MISSING
from mammo_insight.stats.regression import AGE_TERM

MIN_BAND_N = 100  # an age band with fewer breasts is too noisy to headline
MIN_MACHINE_N = 200


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(row: pd.Series) -> str:
    return f"{_pct(row['rate'])} (95% CI {_pct(row['ci_low'])}–{_pct(row['ci_high'])}, {int(row['n_cancer'])}/{int(row['n']):,})"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _or(row: pd.Series) -> str:
    return (
        f"OR {row['odds_ratio']:.2f} (95% CI {row['ci_low']:.2f}–{row['ci_high']:.2f}, {_p(row['p_value'])})"
    )


def prevalence_finding(summary: dict) -> str:
    return (
        f"{summary['n_cancer_breasts']:,} of {summary['n_breasts']:,} breasts "
        f"({_pct(summary['prevalence_breast'])}) and {summary['n_cancer_patients']:,} of "
        f"{summary['n_patients']:,} women have cancer; {_pct(summary['prevalence_image'])} of the "
        f"{summary['n_images']:,} images are positive."
    )


def age_findings(rates: pd.DataFrame, odds: pd.DataFrame, tests: pd.DataFrame) -> list[str]:
    bands = rates[
        (rates["factor"] == "age_band")
        & (rates["unit"] == "breast")
        & (rates["level"] != MISSING)
        & (rates["n"] >= MIN_BAND_N)
    ].reset_index(drop=True)
    out = []
    if len(bands) >= 2:
        low, high = bands.loc[bands["rate"].idxmin()], bands.loc[bands["rate"].idxmax()]
        verb = "rises" if high.name > low.name else "falls"
        first, last = (low, high) if high.name > low.name else (high, low)
        sentence = (
            f"The breast-level cancer rate {verb} from {_ci(first)} at age {first['level']} to "
            f"{_ci(last)} at {last['level']}"
        )
        trend = tests[(tests["factor"] == "age_band") & (tests["test"] == "Cochran-Armitage trend")]
        if len(trend):
            sentence += f" (trend test {_p(trend['p_value'].iloc[0])}, Holm-adjusted {_p(trend['p_adjusted'].iloc[0])})"
        out.append(sentence + ".")
    term = odds[(odds["term"] == AGE_TERM) & (odds["model"] == "all breasts")]
    if len(term):
        row = term.iloc[0]
        out.append(
            f"Each 10 years of age multiplies the odds of cancer by {row['odds_ratio']:.2f} "
            f"(95% CI {row['ci_low']:.2f}–{row['ci_high']:.2f}, {_p(row['p_value'])}) "
            "after adjustment for the other screening-time factors."
        )
    return out


def adjusted_findings(odds: pd.DataFrame) -> list[str]:
    """Each model's non-age terms: which adjusted odds ratios have an interval excluding 1, which do not."""
    out = []
    for model, group in odds[odds["term"] != AGE_TERM].groupby("model", sort=False):
        clear = group[(group["ci_low"] > 1) | (group["ci_high"] < 1)]
        unclear = group.drop(clear.index)
        besides = " besides age" if (odds.loc[odds["model"] == model, "term"] == AGE_TERM).any() else ""
        text = f"Adjusted model '{model}': "
        text += (
            (
                "odds ratio with a 95% interval excluding 1 for "
                + "; ".join(f"{r['term']}, {_or(r)}" for _, r in clear.iterrows())
                + ". "
            )
            if len(clear)
            else f"no factor{besides} has an interval excluding 1. "
        )
        if len(unclear):
            text += "No clear effect (interval includes 1): " + ", ".join(unclear["term"]) + "."
        out.append(text.strip())
    return out


def tests_finding(tests: pd.DataFrame) -> str:
    if tests.empty:
        return "No association test could be run (too few levels or cancers)."
    sig = tests[tests["significant"]]
    names = ", ".join(f"{r['factor']} ({r['test']})" for _, r in sig.iterrows()) or "none"
    quiet = [f for f in dict.fromkeys(tests["factor"]) if f not in set(sig["factor"])]
    text = (
        f"{len(tests)} association tests were run; after Holm's correction for {len(tests)} tests, "
        f"significant at 5%: {names}."
    )
    if quiet:
        text += f" No detectable association for {', '.join(quiet)}."
    return text


def machine_finding(rates: pd.DataFrame, remark: str) -> str:
    machines = rates[
        (rates["factor"] == "machine_id")
        & (rates["unit"] == "breast")
        & (rates["n"] >= MIN_MACHINE_N)
        & (rates["level"] != MISSING)
    ].reset_index(drop=True)
    if len(machines) < 2:
        return ""
    low, high = machines.loc[machines["rate"].idxmin()], machines.loc[machines["rate"].idxmax()]
    return (
        f"Among machines with at least {MIN_MACHINE_N} breasts, the rate ranges from {_ci(low)} on machine "
        f"{low['level']} to {_ci(high)} on machine {high['level']}. {remark}"
    )


def missingness_findings(missing: pd.DataFrame) -> list[str]:
    """Columns recorded at some sites and (almost) absent at others: structural missingness."""
    per_site = missing[missing["site_id"] != "all"]
    out = []
    for column, group in per_site.groupby("column", sort=False):
        absent = group[group["missing_fraction"] >= 0.95]
        present = group[group["missing_fraction"] <= 0.5]
        if len(absent) and len(present):
            out.append(
                f"{column} is missing at site {', '.join(absent['site_id'])} "
                f"({', '.join(_pct(v) for v in absent['missing_fraction'])} of images) but recorded at site "
                f"{', '.join(present['site_id'])}: structural missingness, handled by an explicit 'missing' "
                "level and per-site models."
            )
    return out


def leakage_finding(leakage: pd.DataFrame, recorded: set[str]) -> str:
    """The leaky columns this dataset actually records (empty post-outcome columns are not news)."""
    leaky = leakage[(leakage["verdict"] == "leaky") & leakage["column"].isin(recorded)]
    if leaky.empty:
        return "No column leaks the label: none is decided after the outcome and none predicts it with AUC >= 0.9 alone."
    parts = []
    for _, r in leaky.iterrows():
        auc = "" if pd.isna(r["auc_alone"]) else f" (AUC {r['auc_alone']:.2f} alone)"
        why = "decided after the outcome" if not r["available_at_screening"] else "implausibly predictive"
        parts.append(f"{r['column']}{auc}, {why}")
    return "Leaky columns, excluded from models by default: " + "; ".join(parts) + "."


def write_findings(
    summary: dict,
    rates: pd.DataFrame,
    tests: pd.DataFrame,
    odds: pd.DataFrame,
    *,
    missing: pd.DataFrame,
    leakage: pd.DataFrame,
    nesting: str,
) -> list[str]:
    """The findings, most important first; empty strings are dropped."""
    recorded = set(missing.loc[(missing["site_id"] == "all") & (missing["missing_fraction"] < 1), "column"])
    findings = [
        prevalence_finding(summary),
        *age_findings(rates, odds, tests),
        *adjusted_findings(odds),
        tests_finding(tests),
        machine_finding(rates, nesting),
        *missingness_findings(missing),
        leakage_finding(leakage, recorded),
    ]
    return [f for f in findings if f]
