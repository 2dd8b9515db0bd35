"""The whole dataset study in one call, and the files of the eda output contract.

``run_study`` computes every table (rates, tests, odds ratios, missingness, leakage, findings) from a
cohort; the eda stage (mammo_insight.stages.eda) writes them. Each part is timed, so the benchmark can
say where the time goes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mammo_insight.cohort.schema import Cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.progress import Timings, progress_bar
from mammo_insight.stats.factors import Factor, build_study_frame
from mammo_insight.stats.findings import write_findings
from mammo_insight.stats.leakage import audit_leakage
from mammo_insight.stats.missingness import missingness_by_site, nesting_remark, site_machine_table
from mammo_insight.stats.rates import compute_rates, rates_by_age
from mammo_insight.stats.regression import age_curve, fit_models
from mammo_insight.stats.tests import association_tests

log = logging.getLogger(__name__)

SUMMARY_KEYS = [
    "n_images",
    "n_patients",
    "n_breasts",
    "n_cancer_images",
    "n_cancer_breasts",
    "n_cancer_patients",
    "prevalence_image",
    "prevalence_breast",
]
# the timed parts of run_study, in order: the progress bar names the one running
STUDY_PARTS = (
    "summary",
    "leakage",
    "frame",
    "rates",
    "age_rates",
    "tests",
    "regression",
    "age_curve",
    "missingness",
    "site_machine",
    "findings",
)


@dataclass
class StudyResult:
    """Every table of the study; the report and the CSV files are written from it."""

    dataset: str
    label_meaning: str
    summary: dict[str, Any]
    factors: list[Factor]
    rates: pd.DataFrame
    age_rates: pd.DataFrame
    age_fit: pd.DataFrame
    tests: pd.DataFrame
    odds_ratios: pd.DataFrame
    models: pd.DataFrame
    missingness: pd.DataFrame
    site_machine: pd.DataFrame
    nesting: str
    leakage: pd.DataFrame
    findings: list[str]
    notes: list[str]
    timings: dict[str, float] = field(default_factory=dict)


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    """Headline counts; prevalences are over images / breasts with a known label."""
    labelled = table[table["cancer"].notna()]
    positive = labelled[labelled["cancer"] == 1]
    n_labelled_breasts = labelled["breast_id"].nunique()
    return {
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()),
        "n_breasts": int(table["breast_id"].nunique()),
        "n_cancer_images": len(positive),
        "n_cancer_breasts": int(positive["breast_id"].nunique()),
        "n_cancer_patients": int(positive["patient_id"].nunique()),
        "prevalence_image": float(len(positive) / len(labelled)) if len(labelled) else float("nan"),
        "prevalence_breast": (
            float(positive["breast_id"].nunique() / n_labelled_breasts)
            if n_labelled_breasts
            else float("nan")
        ),
    }


def run_study(cohort: Cohort, seed: int = 0) -> StudyResult:
    """Compute every table of the study from a validated cohort, with a progress bar naming each part."""
    with progress_bar() as bar:
        task = bar.add_task("eda", total=len(STUDY_PARTS))
        timings = Timings()

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            bar.update(task, description=f"eda: {name}")
            with timings.part(name):
                result = fn()
            bar.advance(task)
            return result

        return _study(cohort, seed, timed, timings)


def _study(
    cohort: Cohort, seed: int, timed: Callable[[str, Callable[[], Any]], Any], timings: Timings
) -> StudyResult:
    table = cohort.table
    if table["cancer"].isna().all():
        raise MammoInsightError(
            f"eda: {cohort.dataset}: column 'cancer' is empty in all {len(table)} rows, "
            "so there is nothing to study (map the label column, e.g. in the TOML [label])"
        )
    summary = timed("summary", lambda: summarise(table))
    leakage = timed("leakage", lambda: audit_leakage(table, post_outcome=cohort.post_outcome))
    leaky = set(leakage.loc[leakage["verdict"] == "leaky", "column"])
    study = timed(
        "frame", lambda: build_study_frame(table, cohort.factors, leaky, post_outcome=cohort.post_outcome)
    )
    rates = timed("rates", lambda: compute_rates(study.frame, study.factors))
    age_rates = timed("age_rates", lambda: rates_by_age(study.frame))
    tests = timed("tests", lambda: association_tests(study.frame, study.factors, seed=seed))
    odds, models = timed("regression", lambda: fit_models(study.frame, study.factors))
    age_fit = timed("age_curve", lambda: age_curve(study.frame))
    missing = timed("missingness", lambda: missingness_by_site(table))
    crosstab = timed("site_machine", lambda: site_machine_table(table))
    nesting = nesting_remark(crosstab)
    findings = timed(
        "findings",
        lambda: write_findings(
            summary, rates, tests, odds, missing=missing, leakage=leakage, nesting=nesting
        ),
    )
    return StudyResult(
        cohort.dataset,
        cohort.label_meaning,
        summary,
        study.factors,
        rates,
        age_rates,
        age_fit,
        tests,
        odds,
        models,
        missing,
        crosstab,
        nesting,
        leakage,
        findings,
        study.notes,
        timings,
    )
