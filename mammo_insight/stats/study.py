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

import numpy as np
import pandas as pd
import polars as pl

from mammo_insight.cohort.schema import UNITS, Cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.progress import Timings, progress_bar
from mammo_insight.stats.breasts import mixed_breast_notes
from mammo_insight.stats.factors import UNIT_IDS, Factor, build_study_frame
from mammo_insight.stats.findings import WALD, StudyTables, write_findings
from mammo_insight.stats.leakage import audit_leakage, flagged_columns
from mammo_insight.stats.missingness import (
    missingness_by_site,
    nesting_remark,
    site_machine_table,
    site_structure,
)
from mammo_insight.stats.rates import compute_rates, rates_by_age
from mammo_insight.stats.regression import ModelFits, age_curve, clustered_association_p, fit_models
from mammo_insight.stats.tests import TEST_COLUMNS, adjust_family, association_tests

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
    "n_labelled_images",
    "n_labelled_breasts",
    "known_units",
]
# the timed parts of run_study, in order: the progress bar names the one running
STUDY_PARTS = (
    "summary",
    "leakage",
    "frame",
    "rates",
    "age_rates",
    "structure",
    "regression",
    "tests",
    "clustering",
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


def summarise(table: pd.DataFrame, known_units: tuple[str, ...] = UNITS) -> dict[str, Any]:
    """Headline counts; prevalences are over images / breasts with a known label (their denominators are
    ``n_labelled_*``). A unit the source cannot identify (Cohort.known_units) gets None, never a count of
    placeholder ids."""
    labelled = table[table["cancer"].notna()]
    positive = labelled[labelled["cancer"] == 1]
    n_labelled_breasts = int(labelled["breast_id"].nunique())
    breasts, patients = "breast" in known_units, "patient" in known_units
    return {
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()) if patients else None,
        "n_breasts": int(table["breast_id"].nunique()) if breasts else None,
        "n_cancer_images": len(positive),
        "n_cancer_breasts": int(positive["breast_id"].nunique()) if breasts else None,
        "n_cancer_patients": int(positive["patient_id"].nunique()) if patients else None,
        "prevalence_image": float(len(positive) / len(labelled)) if len(labelled) else float("nan"),
        "prevalence_breast": (
            float(positive["breast_id"].nunique() / n_labelled_breasts)
            if n_labelled_breasts and breasts
            else None
        ),
        "n_labelled_images": len(labelled),
        "n_labelled_breasts": n_labelled_breasts if breasts else None,
        "known_units": list(known_units),
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
    units = tuple(cohort.known_units)
    summary = timed("summary", lambda: summarise(table, units))
    leakage = timed("leakage", lambda: audit_leakage(table, post_outcome=cohort.post_outcome, seed=seed))
    leaky = set(flagged_columns(leakage))
    study = timed(
        "frame", lambda: build_study_frame(table, cohort.factors, leaky, post_outcome=cohort.post_outcome)
    )
    rates = timed("rates", lambda: compute_rates(study.frame, study.factors, units))
    age_flagged = "age" in leaky or "age" in cohort.post_outcome
    frame_for_age = (
        study.frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("age")) if age_flagged else study.frame
    )
    age_rates = timed("age_rates", lambda: rates_by_age(frame_for_age))
    structure, aliases = timed("structure", lambda: site_structure(study.frame, study.factors))
    fits = timed(
        "regression",
        lambda: fit_models(study.frame, study.factors, site_aliases=set(aliases), exposure=cohort.exposure),
    )
    tests = timed("tests", lambda: association_tests(study.frame, study.factors, seed=seed))
    tests, joint = timed(
        "clustering", lambda: one_family(tests, fits, units=units, frame=study.frame, factors=study.factors)
    )
    age_fit = timed("age_curve", lambda: age_curve(frame_for_age, age_rates["age_mid"].to_numpy()))
    missing = timed("missingness", lambda: missingness_by_site(table))
    crosstab = timed("site_machine", lambda: site_machine_table(table))
    nesting = nesting_remark(crosstab)
    notes = [*cohort.notes, *study.notes, *mixed_breast_notes(study.frame, study.factors)]
    findings = timed(
        "findings",
        lambda: write_findings(
            StudyTables(summary, rates, tests, fits.odds, joint, missing, leakage, crosstab),
            nesting=nesting,
            structure=structure,
            aliases=aliases,
            row_unit=cohort.row_unit,
            kind=cohort.kind,
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
        fits.odds,
        fits.models,
        missing,
        crosstab,
        nesting,
        leakage,
        findings,
        notes,
        timings,
    )


def _independence_note(frame: pl.DataFrame, unit: str, units: tuple[str, ...]) -> str:
    """What a test over breasts or images assumes about the woman's other units (her clustering)."""
    if "patient" not in units:
        return f"women not identified: {unit}s are taken as independent"
    per_woman = frame.group_by("patient_id").agg(pl.col(UNIT_IDS[unit]).n_unique().alias("k"))
    n_several = int((per_woman["k"] > 1).sum())
    if not n_several:
        return ""
    return f"assumes independent {unit}s ({n_several:,} of {len(per_woman):,} women contribute several)"


def one_family(
    tests: pd.DataFrame,
    fits: ModelFits,
    *,
    units: tuple[str, ...],
    frame: pl.DataFrame,
    factors: list[Factor],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The association tests and every adjusted model's joint Wald tests as one Holm family.

    Returns the tests table (joint tests appended, p-values adjusted over all rows, units and independence
    notes stated, and ``p_clustered``: an image-level test's question asked again with a logistic Wald
    test clustered by woman, since the views of a breast share its label; breast-level tests keep only their
    note, a woman's two breasts being far less alike) and the joint tests with their adjusted p-values.
    """
    if "breast" not in units:  # breasts are placeholders: each image is its own
        tests = tests.assign(unit=tests["unit"].replace({"breast": "image"}))
    by_name = {f.name: f for f in factors}
    tests["p_clustered"] = np.nan
    for unit in ("breast", "image"):
        at_unit = tests["unit"] == unit
        note = _independence_note(frame, unit, units) if at_unit.any() else ""
        if not note:
            continue
        tests.loc[at_unit, "note"] = [
            "; ".join(n for n in (old, note) if n) for old in tests.loc[at_unit, "note"]
        ]
        if unit == "image" and "patient" in units:  # views of a breast share its label: ask again, clustered
            first = at_unit & ~tests["factor"].duplicated()
            tests.loc[first, "p_clustered"] = [
                clustered_association_p(frame, by_name[f], unit) for f in tests.loc[first, "factor"]
            ]
    models = fits.models.set_index("model")
    joint_rows = [
        {
            "factor": r["factor"],
            "test": f"{WALD} (model '{r['model']}')",
            "unit": "breast" if "breast" in units else "image",
            "n": int(models.loc[r["model"], "n_breasts"]),
            "n_levels": int(r["n_terms"]),
            "statistic": r["statistic"],
            "p_value": r["p_value"],
            "note": "logistic regression, covariance clustered by woman"
            if "patient" in units
            else "logistic regression; women not identified, units taken as independent",
            "reason": "joint test of the factor's terms in an adjusted model",
        }
        for _, r in fits.joint.iterrows()
    ]
    family = adjust_family(
        pd.concat([tests, pd.DataFrame(joint_rows, columns=TEST_COLUMNS)], ignore_index=True)
    )
    is_joint = family["test"].str.startswith(WALD)
    joint = fits.joint.assign(
        p_adjusted=family.loc[is_joint, "p_adjusted"].to_numpy(),
        significant=family.loc[is_joint, "significant"].to_numpy().astype(bool),
    )
    family["significant"] = family["significant"].astype(bool)
    return family, joint
