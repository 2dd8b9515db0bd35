"""`eda`: the statistical study of a cohort (rates, tests, odds ratios, missingness, leakage) and its report.

from mammo_insight.stages import eda
result = eda.run_eda(eda.EdaConfig(dataset="rsna", root=Path("data/rsna")))
result.rates                      # a DataFrame; result renders its headline in Jupyter
eda.write_eda(result, Path("out/eda"))
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from mammo_insight.cohort.outcomes import outcomes_spec
from mammo_insight.cohort.schema import Cohort, label_conflicts
from mammo_insight.cohort.source import load_cohort_source
from mammo_insight.files import write_csv_atomic, write_text_atomic
from mammo_insight.report import table
from mammo_insight.stages.base import StageResult, finish_stage
from mammo_insight.stats.report import odds_display, render_study
from mammo_insight.stats.study import SUMMARY_KEYS, StudyResult, run_study


@dataclass(frozen=True)
class EdaConfig:
    """Where the cohort comes from (--cohort, or --dataset/--root[/--mapping]) and the tests' seed."""

    dataset: str | None = None
    root: Path | None = None
    mapping: Path | None = None
    outcomes: Path | None = None  # --dataset dicom: labels joined from this CSV (cohort.outcomes)
    on: str = "study"
    label: str = "cancer"
    cohort: Path | None = None
    seed: int = 0


@dataclass(frozen=True)
class EdaResult(StageResult):
    """The study's tables (DataFrames), its findings, and the input files it read."""

    config: EdaConfig
    study: StudyResult
    inputs: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, pd.DataFrame] = field(default_factory=dict)  # the cohort's loading listings
    label_conflicts: pd.DataFrame = field(default_factory=pd.DataFrame)  # breasts labelled both 0 and 1
    stage = "eda"
    title = "Dataset study (EDA)"

    @property
    def rates(self) -> pd.DataFrame:
        return self.study.rates

    @property
    def odds_ratios(self) -> pd.DataFrame:
        return self.study.odds_ratios

    @property
    def leakage(self) -> pd.DataFrame:
        return self.study.leakage

    @property
    def missingness(self) -> pd.DataFrame:
        return self.study.missingness

    @property
    def tests(self) -> pd.DataFrame:
        return self.study.tests

    @property
    def findings(self) -> list[str]:
        return self.study.findings

    def tables(self) -> list[Markup]:
        return [table(odds_display(self.odds_ratios), "Odds ratios with 95% intervals", max_rows=1000)]

    def headline(self) -> dict[str, str]:
        s = self.study.summary
        women = "not identified" if s["n_patients"] is None else f"{s['n_patients']:,}"
        if s["n_breasts"] is None:
            k, n, unit = s["n_cancer_images"], s["n_labelled_images"], "images with cancer"
        else:
            k, n, unit = s["n_cancer_breasts"], s["n_labelled_breasts"], "breasts with cancer"
        return {"images": f"{s['n_images']:,}", "women": women, unit: f"{k:,} of {n:,} ({k / n:.2%})"}

    def lines(self) -> list[str]:
        summary = ", ".join(f"{key}: {value}" for key, value in self.headline().items())
        return [summary, *(f"- {finding}" for finding in self.findings[:3])]


def run_eda(config: EdaConfig, cohort: Cohort | None = None) -> EdaResult:
    """Compute every table of the study: on `cohort` when given (a notebook's), else on the config's source."""
    inputs: dict[str, Path] = {}
    if cohort is None:
        cohort, inputs = load_cohort_source(
            cohort=config.cohort,
            dataset=config.dataset,
            root=config.root,
            mapping=config.mapping,
            outcomes=outcomes_spec(config.outcomes, config.on, config.label),
        )
    conflicts = label_conflicts(cohort.table)
    if len(conflicts):
        note = (
            f"{len(conflicts):,} breast(s) have images labelled both 0 and 1: each counts as positive (a "
            "breast's label is the maximum of its images'); they are listed in tables/label_conflicts.csv."
        )
        cohort = replace(cohort, notes=[*cohort.notes, note])
    return EdaResult(config, run_study(cohort, seed=config.seed), inputs, dict(cohort.reports), conflicts)


def write_eda(result: EdaResult, out: Path) -> Path:
    """OUT/summary.json and tables/*.csv, then the manifest, then OUT/index.html; returns the page."""
    study = result.study
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "summary.json", json.dumps({k: study.summary[k] for k in SUMMARY_KEYS}, indent=2))
    for name in ("rates", "odds_ratios", "leakage", "missingness", "tests", "models"):
        write_csv_atomic(tables / f"{name}.csv", getattr(study, name))
    for name, listing in result.reports.items():  # a DICOM scan's files not used, an outcomes match
        write_csv_atomic(tables / f"{name}.csv", listing)
    write_csv_atomic(tables / "label_conflicts.csv", result.label_conflicts)
    if not study.site_machine.empty:
        write_csv_atomic(tables / "site_machine.csv", study.site_machine, index=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result.config).items()}
    config["dataset"] = study.dataset
    page = out / "index.html"
    finish_stage(
        out,
        result,
        config,
        seed=result.config.seed,
        inputs=result.inputs,
        render=lambda: render_study(study, page),
    )
    return page
