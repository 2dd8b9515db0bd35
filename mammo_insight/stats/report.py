"""The eda HTML page: findings first, then the evidence (rates, tests, odds ratios, missingness, leakage).

Written for a clinician-researcher: numbers as percentages with intervals, drawn as marks in the tables
that hold them (stats.forest_tables), one sentence under each saying how to read it, the long tables
folded away. Every string from the data goes through
the report blocks, which escape it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammo_insight.report import (
    Section,
    bullet_list,
    details,
    metric_cards,
    paragraph,
    render_page,
    table,
)
from mammo_insight.stats.design import AGE_CENTER
from mammo_insight.stats.forest_tables import (
    age_forest,
    auc_marks,
    missingness_heat,
    odds_marks,
    pct,
    rate_ci,
    rates_forest,
    with_marks,
)
from mammo_insight.stats.leakage import LEAK_OR, LEAKY_AUC, SUSPECT_AUC, SUSPECT_OR
from mammo_insight.stats.study import StudyResult
from mammo_insight.stats.tests import CORRECTION

ODDS_MARK = "odds ratio, 95% CI (log scale; dashed: 1)"
AUC_MARK = "AUC alone (grey: chance; dotted: suspect, leaky)"


def rates_display(rates: pd.DataFrame, unit: str | None = None) -> pd.DataFrame:
    """Rates as a reader wants them: '2.1% (1.9–2.3%)'."""
    sub = rates if unit is None else rates[rates["unit"] == unit]
    first = (sub["factor"] != sub["factor"].shift()) | (sub["unit"] != sub["unit"].shift())
    return pd.DataFrame(
        {
            "factor": sub["factor"].where(first, ""),
            "level": sub["level"],
            **({} if unit else {"unit": sub["unit"]}),
            "n": sub["n"].map("{:,}".format),
            "cancers": sub["n_cancer"].map("{:,}".format),
            "rate (95% CI)": [
                rate_ci(r, lo, hi)
                for r, lo, hi in zip(sub["rate"], sub["ci_low"], sub["ci_high"], strict=True)
            ],
        }
    )


def odds_display(odds: pd.DataFrame) -> pd.DataFrame:
    """The odds ratios as a forest table: one log scale for every row, its axis as the last row."""
    marks, scale = odds_marks(odds)
    display = pd.DataFrame(
        {
            "model": odds["model"],
            "term": odds["term"],
            "odds ratio (95% CI)": [
                f"{o:.2f} ({lo:.2f}–{hi:.2f})"
                for o, lo, hi in zip(odds["odds_ratio"], odds["ci_low"], odds["ci_high"], strict=True)
            ],
            "p": odds["p_value"].map(_fmt_p),
        }
    )
    return with_marks(display, ODDS_MARK, marks, scale)


def _fmt_p(p: float) -> str:
    return "<\u00a00.001" if p < 0.001 else f"{p:.3f}"  # no-break space: never wraps in a narrow column


def tests_display(tests: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "factor": tests["factor"],
            "test": tests["test"],
            "unit": tests["unit"],
            "n": tests["n"].map("{:,}".format),
            "levels": tests["n_levels"],
            "p": tests["p_value"].map(_fmt_p),
            f"p ({CORRECTION})": tests["p_adjusted"].map(_fmt_p),
            "p clustered by woman": tests["p_clustered"].map(lambda p: "–" if pd.isna(p) else _fmt_p(p)),
            "significant": tests["significant"].map({True: "yes", False: "no"}),
            "note": tests["note"],
        }
    )


def leakage_display(leakage: pd.DataFrame) -> pd.DataFrame:
    """The audit, leaky columns first, each column's AUC alone drawn over its permutations' band."""
    ordered = leakage.assign(_rank=leakage["verdict"].map({"leaky": 0, "suspect": 1}).fillna(2)).sort_values(
        ["_rank", "auc_alone"], ascending=[True, False]
    )
    marks, scale = auc_marks(ordered, LEAKY_AUC, SUSPECT_AUC)
    display = pd.DataFrame(
        {
            "column": ordered["column"]
            + ordered["audited"].map({"values": "", "missingness": " (missing or not)"}),
            "known at screening": ordered["available_at_screening"].map({True: "yes", False: "no"}),
            "AUC alone": ordered["auc_alone"].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}"),
            "chance (95% of permutations)": [
                "–" if pd.isna(lo) else f"{lo:.3f}–{hi:.3f}"
                for lo, hi in zip(ordered["null_low"], ordered["null_high"], strict=True)
            ],
            "missing: odds ratio (95% exact)": [
                "–" if pd.isna(o) else f"{o:.3g} ({lo:.3g}–{hi:.3g})"
                for o, lo, hi in zip(
                    ordered["missing_or"], ordered["or_low"], ordered["or_high"], strict=True
                )
            ],
            "verdict": ordered["verdict"],
            "why": [
                r if r else ("empty column" if pd.isna(a) else "")
                for r, a in zip(ordered["reason"], ordered["auc_alone"], strict=True)
            ],
        }
    )
    return with_marks(display, AUC_MARK, marks, scale)


def models_display(models: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": models["model"],
            "breasts used": models["n_breasts"].map("{:,}".format),
            "women": models["n_patients"].map("{:,}".format),
            "cancers": models["n_cancer"],
            "breasts dropped": models["n_dropped"].map("{:,}".format),
            "converged": models["converged"].map({True: "yes", False: "no"}),
        }
    )


def _overview(result: StudyResult) -> Section:
    s = result.summary

    def count(key: str) -> str:
        return "not identified" if s[key] is None else f"{s[key]:,}"

    def share(k: str, n: str) -> str:
        return "–" if s[k] is None or not s[n] else f"{s[k]:,}/{s[n]:,} = {pct(s[k] / s[n])}"

    cards = metric_cards(
        {
            "images": count("n_images"),
            "women": count("n_patients"),
            "breasts": count("n_breasts"),
            "breasts with cancer": count("n_cancer_breasts"),
            "breast-level prevalence": share("n_cancer_breasts", "n_labelled_breasts"),
            "image-level prevalence": share("n_cancer_images", "n_labelled_images"),
        }
    )
    return Section(
        "Overview",
        [
            cards,
            paragraph(f"What the label means in {result.dataset}: {result.label_meaning}"),
            paragraph(
                "Rates are given with 95% Wilson intervals; a breast is the unit the label belongs to, so the "
                "breast level is the headline and the image and woman levels are in the CSV."
                if s["n_breasts"] is not None
                else "Rates are given with 95% Wilson intervals. This source does not identify breasts"
                + (" or women" if s["n_patients"] is None else "")
                + ": every figure is per image (table row), and the tests take rows as independent.",
                "note",
            ),
        ],
    )


def _rates(result: StudyResult) -> list[Section]:
    plotted = [f for f in result.factors if f.kind != "continuous"]
    blocks = []
    if plotted:
        blocks += [
            table(rates_forest(result.rates, plotted), max_rows=1000),
            paragraph(
                "Per breast (per image for view, which varies within a breast): the cancer rate of each level "
                "with its 95% Wilson interval, drawn on the factor's own scale (the row under its levels); the "
                "dashed line is the overall rate; an arrow marks an interval running past the scale. Grey: "
                "value not recorded. Red: leaks the label (decided after the outcome or flagged by the audit).",
                "note",
            ),
        ]
    blocks += [
        details("All units (image, breast, woman)", [table(rates_display(result.rates), max_rows=1000)]),
        paragraph(
            "A breast or a woman counts under a level when one of her images has it; for view, which "
            "varies within a breast, a breast counts under each of its views.",
            "note",
        ),
    ]
    sections = [Section("Cancer rates by factor", blocks)]
    if len(result.age_rates):
        sections.append(
            Section(
                "Age as a continuous trend",
                [
                    table(age_forest(result.age_rates, result.age_fit)),
                    paragraph(
                        "Breast-level cancer rate in 5-year age bins (bins with fewer than 30 breasts left out), "
                        "observed with its 95% Wilson interval (dot and line), beside the logistic trend on age "
                        "at the bin's middle with its 95% band (dark tick on the grey band; standard errors "
                        "clustered on women).",
                        "note",
                    ),
                ],
            )
        )
    return sections


def _tests(result: StudyResult) -> Section:
    if result.tests.empty:
        return Section("Association tests", [paragraph("No test could be run (too few levels or cancers).")])
    n = len(result.tests)
    return Section(
        "Association tests",
        [
            paragraph(
                f"{n} tests were run, so p-values are corrected for {n} tests with Holm's method (family-wise "
                "error 5%). Chi-square, or Fisher's exact test where an expected count is below 5; for ordered "
                "factors also the Cochran-Armitage trend test. Levels recorded as missing are left out of these "
                "tests; post-outcome columns are not tested. These tests take each breast (or image, for "
                "factors that vary within a breast) as independent, which a woman's two breasts are not: the "
                "note column says where that applies; for tests over images (whose views share a breast's "
                "label) 'p clustered by woman' asks the same question with a logistic Wald test on a covariance "
                "clustered by woman (a check beside the test, outside the Holm family). The same family holds the joint Wald test of each "
                "factor in each adjusted model (all its levels at once, covariance clustered by woman): "
                "a factor's levels are headlined only when that test is significant."
            ),
            table(tests_display(result.tests)),
        ],
    )


def _regression(result: StudyResult) -> Section:
    blocks = [
        paragraph(
            "Logistic regression of breast-level cancer with standard errors clustered on women (a "
            "woman's two breasts are not independent). Age enters per 10 years (centred at "
            f"{AGE_CENTER:.0f}); each categorical factor is compared with its reference level; a "
            "recorded-as-missing level stays in the model as its own level."
        )
    ]
    if len(result.odds_ratios):
        blocks += [
            table(odds_display(result.odds_ratios), "Odds ratios", max_rows=1000),
            paragraph(
                "Odds ratios with 95% intervals on one log scale (the last row); an interval crossing the "
                "dashed line at 1 is compatible with no effect.",
                "note",
            ),
        ]
    blocks.append(table(models_display(result.models), "Breasts each model used and dropped"))
    notes = [
        f"{r['model']}: {note}"
        for _, r in result.models.iterrows()
        for note in str(r["notes"]).split("; ")
        if note
    ]
    if notes:
        blocks += [paragraph("What each model left out, pooled or dropped, and why:"), bullet_list(notes)]
    return Section("Adjusted odds ratios", blocks)


def _missingness(result: StudyResult) -> Section:
    blocks = [
        table(missingness_heat(result.missingness), "Share of images with the column empty"),
        paragraph(result.nesting),
    ]
    if not result.site_machine.empty:
        crosstab = result.site_machine.map("{:,}".format).reset_index()
        crosstab.columns = ["machine"] + [f"site {c}" for c in crosstab.columns[1:]]
        blocks.append(table(crosstab, "Images per machine and site"))
    return Section("Missingness, sites and machines", blocks)


def _leakage(result: StudyResult) -> Section:
    return Section(
        "Leakage audit",
        [
            paragraph(
                "A column is leaky when the dataset declares it decided after the outcome, when its values occur "
                "in one class only, when its recording depends strongly on the label (the odds ratio of a "
                f"breast's value being missing, cancers against non-cancers, with its whole exact 95% interval "
                f"beyond {LEAK_OR:g} or below 1/{LEAK_OR:g}), or when alone it predicts the label with AUC >= "
                f"{LEAKY_AUC}. It is suspect when that odds ratio's interval excludes 1 with an estimate beyond "
                f"{SUSPECT_OR:g} (or below 1/{SUSPECT_OR:g}), or when its AUC alone is >= {SUSPECT_AUC}: no "
                "screening-time factor comes near, a proxy of the outcome does. The AUC alone is out of fold: "
                "each level's cancer rate is counted among the other folds' women (5 folds grouped by woman) and "
                "scores the held-out breasts, pairs taken within a held-out fold, so a column without "
                "information centres on 0.5 and may fall either side of it. 'Chance' is the central 95% of "
                "the same AUC with the labels permuted. Leaky and suspect columns leave the headline findings "
                "and the models by default, with the reason in the table."
            ),
            table(leakage_display(result.leakage), max_rows=1000),
            paragraph(
                "The mark: each column's AUC alone (dot) over the central 95% of its permutations (grey); "
                f"dashed 0.5 = no information; dotted: the suspect ({SUSPECT_AUC}) and leaky ({LEAKY_AUC}) "
                "thresholds.",
                "note",
            ),
        ],
    )


def _notes(result: StudyResult) -> Section:
    notes = result.notes or ["Every column with a role was analysed."]
    return Section(
        "Notes on the data",
        [
            bullet_list(notes),
            paragraph(
                "Tables: tables/rates.csv, tests.csv, odds_ratios.csv, models.csv, missingness.csv, leakage.csv "
                "(aggregates only: no row-level data and no identifiers).",
                "note",
            ),
        ],
    )


def render_study(result: StudyResult, path: str | Path) -> Path:
    """Write the study's self-contained HTML page."""
    sections = [
        _overview(result),
        Section("Findings", [bullet_list(result.findings)]),
        *_rates(result),
        _tests(result),
        _regression(result),
        _missingness(result),
        _leakage(result),
        _notes(result),
    ]
    return render_page(
        path,
        f"Dataset study: {result.dataset}",
        sections,
        subtitle="What in the metadata relates to cancer, what leaks the label, and what is missing.",
    )
