"""Time fuse-train on RSNA's real train.csv (54,706 images, 23,826 breasts) with random 64-d embeddings.

Usage: python benchmarks/bench_fusion.py [PATH/TO/rsna]   (default: $MAMMO_INSIGHT_DATA_DIR/rsna)
Prints the time of each part (leakage audit, features, 5-fold CV of the four models with LightGBM's in-fold
search, per-view models, metrics with 1000 patient-bootstrap resamples, the adjusted odds ratio and scanner
probes, final model, SHAP values, SHAP interactions) and of the report. The embeddings are random (no CNN
here), so the image AUCs are ~0.5 by design.

Then the metadata-only comparison exactly as `fuse-train --dataset rsna --root PATH` runs it (folds drawn
with seed 0, 1000 resamples), and the two metadata models' ROC-AUC on two more fold draws (seeds 1, 2),
because a fold draw moves breast-level ROC-AUC by a few thousandths.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.fusion.config import FusionConfig
from mammo_insight.fusion.lgbm import FoldFitting, LgbmParams, cross_validate, grouped_folds
from mammo_insight.fusion.logistic import cross_validate_logistic
from mammo_insight.fusion.outputs import write_outputs
from mammo_insight.fusion.pipeline import run_fusion
from mammo_insight.fusion.report import render_report
from mammo_insight.metrics import roc_auc
from mammo_insight.report import fmt_ci

DIM = 64


def random_embeddings(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = [f"emb_{i:03d}" for i in range(DIM)]
    patients = table["patient_id"].unique()
    fold_of = pd.Series(rng.permutation(len(patients)) % 5, index=patients)
    images = table[["image_id", "breast_id", "patient_id", "view", "cancer"]].reset_index(drop=True)
    images = pd.concat(
        [images, pd.DataFrame(rng.normal(size=(len(images), DIM)).astype(np.float32), columns=cols)], axis=1
    )
    images["level"], images["fold"], images["oof"] = (
        "image",
        images["patient_id"].map(fold_of).to_numpy(),
        True,
    )
    breasts = images.groupby("breast_id").agg(
        patient_id=("patient_id", "first"),
        cancer=("cancer", "max"),
        fold=("fold", "first"),
        **{c: (c, "mean") for c in cols},
    )
    breasts = breasts.reset_index().assign(level="breast", view="CC+MLO", oof=True)
    return pd.concat([images, breasts], ignore_index=True)


def main() -> None:
    root = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(os.environ.get("MAMMO_INSIGHT_DATA_DIR", ".")) / "rsna"
    )
    t0 = time.perf_counter()
    table = load_cohort("rsna", root).table
    emb = random_embeddings(table)
    print(
        f"load cohort + random embeddings: {time.perf_counter() - t0:6.1f} s "
        f"({len(table):,} images, {table['breast_id'].nunique():,} breasts, {DIM}-d)"
    )
    t0, cpu0 = time.perf_counter(), os.times()
    result = run_fusion(table, emb, FusionConfig())
    total, cpu1 = time.perf_counter() - t0, os.times()
    for part, seconds in result.timings.items():
        print(f"  {part:32s} {seconds:6.1f} s")
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(
        f"fuse-train (5-fold CV x 4 models + per-view + metrics + SHAP): {total:6.1f} s wall, {cpu:6.1f} s CPU "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other work shares them)"
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        write_outputs(result, Path(out))
        render_report(result, Path(out), "rsna")
        print(f"outputs + HTML report: {time.perf_counter() - t0:6.1f} s")
    for model, body in result.scores.items():
        print(f"{model}: ROC-AUC {body['roc_auc']['value']:.3f}")
    metadata_only(table)


def metadata_only(table: pd.DataFrame) -> None:
    """The README's real-data figure: fuse-train without embeddings, then two more fold draws."""
    t0, cpu0 = time.perf_counter(), os.times()
    result = run_fusion(table, None, FusionConfig())
    cpu1 = os.times()
    print(
        f"\nmetadata only, as fuse-train runs it (seed 0): {time.perf_counter() - t0:.1f} s wall, "
        f"{(cpu1.user - cpu0.user) + (cpu1.system - cpu0.system):.1f} s CPU; best: {result.best_metadata}"
    )
    for model, body in result.scores.items():
        print(f"  {model:18s} ROC-AUC {fmt_ci(body['roc_auc'])}")
    d = result.comparisons["metadata_logistic_vs_metadata"]["roc_auc"]
    print(f"  logistic - LightGBM: {d['diff']:+.3f} ({d['ci_low']:+.3f} to {d['ci_high']:+.3f})")
    for model, per_fold in result.settings.items():
        print(f"  {model} settings per fold: {per_fold}")
    breasts, y = result.breasts, result.breasts["cancer"].to_numpy(int)
    meta = breasts[result.meta_features]
    groups = breasts["patient_id"].astype(str).to_numpy()
    for seed in (1, 2):
        fold = grouped_folds(y, groups, 5, seed)
        lr = cross_validate_logistic(meta, y, fold, workers=2).prob
        trees = cross_validate(
            meta, None, y, fold, fitting=FoldFitting(LgbmParams(), seed=seed), groups=groups, workers=2
        ).prob
        print(f"  folds seed {seed}: logistic {roc_auc(y, lr):.4f}, LightGBM {roc_auc(y, trees):.4f}")


if __name__ == "__main__":
    main()
