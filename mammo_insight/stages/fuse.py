"""`fuse-train`: LightGBM on breast-level metadata plus out-of-fold CNN embeddings, compared and explained.

Never imports torch (LightGBM's and torch's OpenMP runtimes stay in separate processes: `embed` vs
`fuse-train`).

    from mammo_insight.stages import fuse
    result = fuse.run_fuse(fuse.FuseConfig(dataset="rsna", root=Path("data/rsna")))
    result.scores_table()            # one row per model; result renders its headline in Jupyter
    fuse.write_fuse(result, Path("out/fusion"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mammo_insight.cohort.outcomes import outcomes_spec
from mammo_insight.cohort.schema import Cohort
from mammo_insight.cohort.source import load_cohort_source
from mammo_insight.errors import MammoInsightError
from mammo_insight.fusion.answers import MODEL_WORDS
from mammo_insight.fusion.config import FusionConfig
from mammo_insight.fusion.emb_table import read_embeddings
from mammo_insight.fusion.lgbm import LgbmParams
from mammo_insight.fusion.outputs import write_outputs
from mammo_insight.fusion.pipeline import FusionResult, run_fusion
from mammo_insight.fusion.report import render_report, roc_figure
from mammo_insight.metrics.compare import scores_table
from mammo_insight.report import fmt_ci
from mammo_insight.stages.base import StageResult, finish_stage


@dataclass(frozen=True)
class FuseConfig:
    """Where the cohort and embeddings come from, and how the models are fitted and scored."""

    dataset: str | None = None
    root: Path | None = None
    mapping: Path | None = None
    outcomes: Path | None = None  # --dataset dicom: labels joined from this CSV (cohort.outcomes)
    on: str = "study"
    label: str = "cancer"
    cohort: Path | None = None
    embeddings: Path | None = None
    planted_risk: Path | None = None  # a synthetic cohort's planted_risk.csv: the oracle beside the models
    folds: int = 5
    seed: int = 0
    include_leaky: tuple[str, ...] = ()
    include_workup: bool = False
    n_boot: int = 1000
    shap_rows: int = 3000
    workers: int = 2
    threads: int = 1
    allow_partial: bool = False  # embeddings covering under FusionConfig.min_coverage of the breasts

    def fusion_config(self) -> FusionConfig:
        return FusionConfig(
            folds=self.folds,
            seed=self.seed,
            include_leaky=list(self.include_leaky),
            include_workup=self.include_workup,
            n_boot=self.n_boot,
            shap_rows=self.shap_rows,
            workers=self.workers,
            allow_partial=self.allow_partial,
            params=LgbmParams(n_jobs=self.threads),
        )


@dataclass(frozen=True)
class FuseResult(StageResult):
    """The fitted comparison (FusionResult) with where its inputs came from."""

    config: FuseConfig
    fusion: FusionResult
    dataset: str
    label_meaning: str = ""
    inputs: dict[str, Path] = field(default_factory=dict)
    stage = "fuse-train"
    title = "Fusion: LightGBM + SHAP"

    @property
    def scores(self) -> dict:
        return self.fusion.scores

    def scores_table(self) -> pd.DataFrame:
        return scores_table(self.fusion.scores)

    def figures(self) -> list[tuple[Callable[[], Any], str]]:
        return [(lambda: roc_figure(self.fusion), "ROC curves (out-of-fold)")]

    def headline(self) -> dict[str, str]:
        return {
            f"{MODEL_WORDS.get(m, m)} ROC-AUC": fmt_ci(body["roc_auc"]) for m, body in self.scores.items()
        }

    def lines(self) -> list[str]:
        return [
            f"{model}: breast-level ROC-AUC {fmt_ci(body['roc_auc'])}, PR-AUC {fmt_ci(body['pr_auc'])}, "
            f"pF1 {fmt_ci(body['pf1'])}, {body['n']} breasts, {body['n_pos']} positive"
            for model, body in self.scores.items()
        ]

    def problems(self) -> list[str]:
        return list(self.fusion.warnings)


def run_fuse(config: FuseConfig, cohort: Cohort | None = None) -> FuseResult:
    """Cross-validate metadata-only, image-only and fused models on `cohort` (or the config's source)."""
    inputs: dict[str, Path] = {}
    if cohort is None:
        cohort, inputs = load_cohort_source(
            cohort=config.cohort,
            dataset=config.dataset,
            root=config.root,
            mapping=config.mapping,
            outcomes=outcomes_spec(config.outcomes, config.on, config.label),
        )
    embeddings = read_embeddings(config.embeddings) if config.embeddings is not None else None
    if config.embeddings is not None:
        inputs["embeddings"] = config.embeddings
    planted = None
    if config.planted_risk is not None:
        planted = read_planted_risk(config.planted_risk)
        inputs["planted_risk"] = config.planted_risk
    fusion = run_fusion(
        cohort.table,
        embeddings,
        config.fusion_config(),
        post_outcome=cohort.post_outcome,
        factors=cohort.factors,
        planted_risk=planted,
    )
    return FuseResult(config, fusion, config.dataset or cohort.dataset, cohort.label_meaning, inputs)


def read_planted_risk(path: Path) -> pd.Series:
    """planted_risk per breast_id from synth's planted_risk.csv; a missing file or column is a one-line error."""
    if not Path(path).is_file():
        raise MammoInsightError(f"--planted-risk: {path} does not exist")
    frame = pd.read_csv(path, dtype={"breast_id": str})
    missing = [c for c in ("breast_id", "planted_risk") if c not in frame.columns]
    if missing:
        raise MammoInsightError(
            f"{path}: missing column(s) {', '.join(missing)} (expected breast_id, planted_risk)"
        )
    return frame.set_index("breast_id")["planted_risk"].astype(float)


def write_fuse(result: FuseResult, out: Path) -> Path:
    """metrics.json, oof_predictions.csv, tables/*.csv, then the manifest, then OUT/index.html."""
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(result.fusion, out)
    c = result.config
    fusion_config = c.fusion_config()
    config = {
        "dataset": result.dataset,
        "root": c.root,
        "cohort": c.cohort,
        "embeddings": c.embeddings,
        "planted_risk": c.planted_risk,
        "folds": result.fusion.folds.get("k", c.folds),
        "folds_requested": c.folds,
        "include_leaky": list(c.include_leaky),
        "include_workup": c.include_workup,
        "n_boot": c.n_boot,
        "shap_rows": c.shap_rows,
        "workers": c.workers,
        "params": vars(fusion_config.params),
        "logistic": vars(fusion_config.logistic),
        "n_pca": fusion_config.n_pca,
    }
    page = out / "index.html"
    finish_stage(
        out,
        result,
        config,
        seed=c.seed,
        inputs=result.inputs,
        render=lambda: render_report(result.fusion, out, result.dataset, result.label_meaning),
    )
    return page
