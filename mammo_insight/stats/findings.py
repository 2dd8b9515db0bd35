"""Plain-language findings written from the numbers, for the top of the report.

Every sentence is computed from the study's tables (nothing is hard-coded about any dataset), carries
its interval or test, and claims no more than that test: "rises" only when the trend test is
significant after Holm's correction and the band rates rank in band order (Spearman >= 0.8, same sign);
age's effect in words only when its own interval excludes 1; a multi-level factor is headlined only when
its joint (Wald) test in that model is significant within the one Holm family of every test run.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from scipy.stats import spearmanr

from mammo_insight.stats.design import AGE_TERM
from mammo_insight.stats.factors import MISSING
from mammo_insight.stats.regression import AGE_ALONE

MIN_BAND_N = 100  # an age band with fewer units is too noisy to headline
MIN_MACHINE_N = 200
MIN_BAND_RHO = 0.8  # Spearman correlation of band rates with band order for "rises"/"falls"
WALD = "Wald joint test"


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


def _of(k: int, n: int, what: str) -> str:
    """'79 of 389 images (20.3%)': the percentage is always the printed numerator over the printed denominator."""
    return f"{k:,} of {n:,} {what} ({_pct(k / n) if n else '–'})"


KIND_NOTES = {
    "diagnostic": " These are diagnostic exams, not a screening population: rates are not screening cancer rates.",
    "biopsied lesions": " This is a cohort of biopsied lesions, not a screening population: a rate is the share "
    "of lesions that proved malignant, not a screening cancer rate, and no factor here is a screening-time "
    "risk factor.",
}


def prevalence_finding(summary: dict, row_unit: str = "image", kind: str = "screening") -> str:
    """Cancer counts at each unit the source identifies, each percentage from the numbers beside it;
    ``row_unit`` names what one row is (the adapter's), ``kind`` the cohort's kind."""
    return _prevalence(summary, row_unit) + KIND_NOTES.get(kind, "")


def _plural(unit: str) -> str:
    return f"{unit}es" if unit.endswith(("s", "x", "ch", "sh")) else f"{unit}s"


def _prevalence(summary: dict, row_unit: str) -> str:
    rows = _plural(row_unit)
    images = _of(summary["n_cancer_images"], summary["n_labelled_images"], f"labelled {rows}")
    unlabelled_images = summary["n_images"] - summary["n_labelled_images"]
    tail = (
        f" ({summary['n_images']:,} {rows} in all, {unlabelled_images:,} without a label)"
        if unlabelled_images
        else ""
    )
    if summary["n_breasts"] is None:
        who = "women" if summary["n_patients"] is None else "breasts"
        return (
            f"{images} are positive{tail}. The source does not identify {who}, so each {row_unit} counts as its own "
            f"unit: {'woman- and breast' if who == 'women' else 'breast'}-level figures are unavailable."
        )
    n_labelled = summary["n_labelled_breasts"]
    breasts = _of(
        summary["n_cancer_breasts"],
        n_labelled,
        "labelled breasts" if n_labelled < summary["n_breasts"] else "breasts",
    )
    women = (
        f" and {summary['n_cancer_patients']:,} of {summary['n_patients']:,} women"
        if summary["n_patients"] is not None
        else " (women are not identified by the source)"
    )
    return f"{breasts}{women} have cancer; {images} are positive{tail}."


def _joint(joint: pd.DataFrame, model: str, factor: str) -> pd.Series | None:
    rows = joint[(joint["model"] == model) & (joint["factor"] == factor)]
    return rows.iloc[0] if len(rows) else None


def _holm(row: pd.Series) -> str:
    return f"{_p(row['p_value'])}, Holm-adjusted {_p(row['p_adjusted'])}"


def age_findings(
    rates: pd.DataFrame,
    odds: pd.DataFrame,
    tests: pd.DataFrame,
    joint: pd.DataFrame,
    unit: str = "breast",
    word: str | None = None,
) -> list[str]:
    """The age-band pattern in words the trend test and the bands support, and the adjusted age odds ratio.

    ``unit``: the rates' unit (image, breast); ``word``: how the text names it (the adapter's row unit)."""
    word = word or unit
    bands = rates[
        (rates["factor"] == "age_band")
        & (rates["unit"] == unit)
        & (rates["level"] != MISSING)
        & (rates["n"] >= MIN_BAND_N)
    ].reset_index(drop=True)
    out = []
    trend = tests[(tests["factor"] == "age_band") & (tests["test"] == "Cochran-Armitage trend")]
    if len(bands) >= 2:
        t = trend.iloc[0] if len(trend) else None
        # the bands support a direction when their rates rank (almost) in band order, that way round
        flat = bands["rate"].nunique() == 1
        rho = 0.0 if len(bands) < 3 or flat else float(spearmanr(range(len(bands)), bands["rate"]).statistic)
        steady = t is not None and abs(rho) >= MIN_BAND_RHO and (rho > 0) == (t["statistic"] > 0)
        test_text = f"trend test {_holm(t)}" if t is not None else "no trend test"
        if steady and bool(t["significant"]):
            # the youngest and the oldest band shown (band order, not the lowest and highest rate)
            first, last = bands.iloc[0], bands.iloc[-1]
            verb = "rises" if rho > 0 else "falls"
            out.append(
                f"The {word}-level cancer rate {verb} from {_ci(first)} at age {first['level']} to "
                f"{_ci(last)} at {last['level']} ({test_text}; bands with at least {MIN_BAND_N} {_plural(word)})."
            )
        else:
            pattern = "; ".join(
                f"{r['level']} {_pct(r['rate'])} ({int(r['n_cancer'])}/{int(r['n']):,})"
                for _, r in bands.iterrows()
            )
            why = (
                "the trend test finds a linear trend but the bands do not rise or fall steadily"
                if t is not None and bool(t["significant"])
                else "no clear trend with age"
            )
            out.append(f"By age band the {word}-level cancer rate is {pattern}: {why} ({test_text}).")
    term = odds[(odds["term"] == AGE_TERM) & (odds["model"] == "all breasts")]
    if len(term):
        row = term.iloc[0]
        test = _joint(joint, "all breasts", "age")
        excludes_one = row["ci_low"] > 1 or row["ci_high"] < 1
        ci = (
            f"{row['odds_ratio']:.2f} (95% CI {row['ci_low']:.2f}–{row['ci_high']:.2f}, {_p(row['p_value'])})"
        )
        if excludes_one and (test is None or bool(test["significant"])):
            verb = "multiplies" if row["odds_ratio"] > 1 else "multiplies (lowers)"
            out.append(f"Each 10 years of age {verb} the odds of cancer by {ci} {_adjusted_for(odds)}.")
        elif excludes_one:
            out.append(
                f"After adjustment, the odds ratio per 10 years of age is {ci}: its interval excludes 1, but "
                f"it is not significant after Holm's correction ({_holm(test)})."
            )
        else:
            out.append(
                f"After adjustment, age shows no clear effect: odds ratio per 10 years {ci}, an interval that "
                "includes 1."
            )
    return out


def adjustment_set(odds: pd.DataFrame, model: str = "all breasts") -> list[str]:
    """The factors (other than age) a fitted model adjusts for, by the names of the odds-ratio table."""
    terms = odds.loc[(odds["model"] == model) & (odds["term"] != AGE_TERM), "term"]
    return list(dict.fromkeys(t.split("=")[0].split(" (per SD")[0] for t in terms))


def _adjusted_for(odds: pd.DataFrame) -> str:
    names = adjustment_set(odds)
    return f"after adjustment for {', '.join(names)}" if names else "with no other factor in the model"


def adjusted_findings(odds: pd.DataFrame, joint: pd.DataFrame, aliases: dict[str, str]) -> list[str]:
    """Per model: the factors whose joint test survives Holm, with their levels' intervals; the rest by name."""
    out = []
    for model, group in odds[(odds["term"] != AGE_TERM) & (odds["model"] != AGE_ALONE)].groupby(
        "model", sort=False
    ):
        factors = list(dict.fromkeys(t.split("=")[0].split(" (per SD")[0] for t in group["term"]))
        clear, quiet = [], []
        for factor in factors:
            terms = group[
                group["term"].str.startswith(f"{factor}=") | group["term"].str.startswith(f"{factor} (per SD")
            ]
            test = _joint(joint, model, factor)
            if test is None or not bool(test["significant"]):
                quiet.append(factor + (f" (joint test {_holm(test)})" if test is not None else ""))
                continue
            shown = []
            for _, r in terms[(terms["ci_low"] > 1) | (terms["ci_high"] < 1)].iterrows():
                level = r["term"].split(" (vs")[0]
                alias = (
                    f"; the same images as site {aliases[level]}: a site contrast" if level in aliases else ""
                )
                shown.append(f"{r['term']}, {_or(r)}{alias}")
            clear.append(f"{factor} (joint test {_holm(test)})" + (": " + "; ".join(shown) if shown else ""))
        age = _joint(joint, model, "age")
        besides = " besides age" if age is not None and bool(age["significant"]) else ""
        text = f"Adjusted model '{model}': "
        text += (
            "factors significant after Holm's correction: " + " | ".join(clear) + ". "
            if clear
            else f"no factor{besides} is significant after Holm's correction. "
        )
        if quiet:
            text += "No clear effect: " + ", ".join(quiet) + "."
        out.append(text.strip())
    return out


DERIVED_SUFFIXES = ("_quartile", "_band", "_decile")


def factor_base(name: str) -> str:
    """The column a tested factor comes from: 'subtlety_quartile' -> 'subtlety', 'age_band' -> 'age'."""
    for suffix in DERIVED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def tests_finding(tests: pd.DataFrame) -> str:
    if tests.empty:
        return "No association test could be run (too few levels or cancers)."
    sig = tests[tests["significant"]]
    names = ", ".join(f"{r['factor']} ({r['test']})" for _, r in sig.iterrows()) or "none"
    # a factor and its derived forms (subtlety, subtlety_quartile; age, age_band) are one factor: it is
    # quiet only when none of its forms is significant
    found = {factor_base(f) for f in sig["factor"]}
    quiet = [f for f in dict.fromkeys(tests["factor"]) if factor_base(f) not in found]
    n_joint = int(tests["test"].str.startswith(WALD).sum())
    text = (
        f"{len(tests)} tests were run ({len(tests) - n_joint} association tests and {n_joint} joint tests of "
        f"the adjusted models' factors); after Holm's correction for all {len(tests)}, significant at 5%: {names}."
    )
    if quiet:
        text += f" No detectable association for {', '.join(quiet)}."
    return text


def machine_finding(
    rates: pd.DataFrame,
    remark: str,
    unit: str = "breast",
    crosstab: pd.DataFrame | None = None,
    word: str | None = None,
) -> str:
    machines = rates[
        (rates["factor"] == "machine_id")
        & (rates["unit"] == unit)
        & (rates["n"] >= MIN_MACHINE_N)
        & (rates["level"] != MISSING)
    ].reset_index(drop=True)
    if len(machines) < 2:
        return ""
    low, high = machines.loc[machines["rate"].idxmin()], machines.loc[machines["rate"].idxmax()]
    overlap = low["ci_high"] >= high["ci_low"]
    gap = (
        "their 95% intervals overlap, so even these two, picked as the extremes, are not clearly different"
        if overlap
        else "their 95% intervals do not overlap, though the two are picked as the extremes of "
        f"{len(machines)} machines, which widens any gap"
    )
    text = (
        f"Among machines with at least {MIN_MACHINE_N} {_plural(word or unit)}, the rate ranges from {_ci(low)} on machine "
        f"{low['level']} to {_ci(high)} on machine {high['level']}: {gap}."
    )
    sites = _sites_of(crosstab, [str(low["level"]), str(high["level"])])
    if len(sites) == 1:
        text += (
            f" Both machines are at site {sites[0]}: the site does not explain this gap, which mixes the "
            "machine with who is imaged on it."
        )
        return text
    return f"{text} {remark}"


def _sites_of(crosstab: pd.DataFrame | None, machines: list[str]) -> list[str]:
    """The sites the given machines appear at ([] when unknown)."""
    if crosstab is None or crosstab.empty or not set(machines) <= set(crosstab.index.astype(str)):
        return []
    rows = crosstab.set_axis(crosstab.index.astype(str)).loc[machines]
    return sorted(str(s) for s in rows.columns[(rows > 0).any(axis=0)])


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
    """The leaky columns this dataset actually records, each with its reason (empty post-outcome columns are not news)."""
    values = leakage[leakage["audited"] == "values"]
    flagged = values["column"].isin(recorded) & values["verdict"].isin(["leaky", "suspect"])
    if not flagged.any():
        return (
            "No column leaks the label: none is declared post-outcome, none has its recording depend on the "
            "label (missingness odds ratio), and none predicts it alone with out-of-fold AUC >= 0.7."
        )
    out = []
    for verdict, title in (
        ("leaky", "Leaky columns"),
        ("suspect", "Suspect columns (a possible proxy of the outcome; check when they were recorded)"),
    ):
        rows = values[flagged & (values["verdict"] == verdict)]
        parts = []
        for _, r in rows.iterrows():
            auc = "" if pd.isna(r["auc_alone"]) else f" (out-of-fold AUC {r['auc_alone']:.2f} alone)"
            parts.append(f"{r['column']}{auc}: {r['reason']}")
        if parts:
            out.append(
                f"{title}, left out of the headline findings and the models by default: "
                + "; ".join(parts)
                + "."
            )
    return " ".join(out)


@dataclass(frozen=True)
class StudyTables:
    """The study's tables the findings are written from (``joint``: the joint Wald tests with their
    Holm-adjusted p-values, the same family as ``tests``)."""

    summary: dict
    rates: pd.DataFrame
    tests: pd.DataFrame
    odds: pd.DataFrame
    joint: pd.DataFrame
    missing: pd.DataFrame
    leakage: pd.DataFrame
    crosstab: pd.DataFrame | None = None


def write_findings(
    tables: StudyTables,
    *,
    nesting: str,
    structure: list[str],
    aliases: dict[str, str],
    row_unit: str = "image",
    kind: str = "screening",
) -> list[str]:
    """The findings, most important first; empty strings are dropped.

    ``structure``: sentences on levels that are a site or never occur at one; ``aliases``: 'factor=level' -> site.
    """
    summary, rates, tests, odds = tables.summary, tables.rates, tables.tests, tables.odds
    joint, missing, leakage, crosstab = tables.joint, tables.missing, tables.leakage, tables.crosstab
    unit = "breast" if summary["n_breasts"] is not None else "image"
    word = row_unit if unit == "image" else unit
    recorded = set(missing.loc[(missing["site_id"] == "all") & (missing["missing_fraction"] < 1), "column"])
    age_leaky = bool(((leakage["column"] == "age") & leakage["verdict"].isin(["leaky", "suspect"])).any())
    findings = [
        prevalence_finding(summary, row_unit, kind),
        *([] if age_leaky else age_findings(rates, odds, tests, joint, unit, word)),
        *adjusted_findings(odds, joint, aliases),
        tests_finding(tests),
        machine_finding(rates, nesting, unit, crosstab, word),
        *missingness_findings(missing),
        *structure,
        leakage_finding(leakage, recorded),
    ]
    return [f for f in findings if f]
