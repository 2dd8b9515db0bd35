"""Time of `ensemble` and `compare` on RSNA-sized out-of-fold predictions (no training: fake run folders).

    python benchmarks/bench_run_sets.py [--women 11913] [--runs 2] [--n-boot 1000]

Writes RSNA-shaped runs (about 4.6 images per woman, 2% positive breasts, 5 folds) with random scores and
prints the seconds spent opening them (with the fold check), averaging and scoring the ensemble, and
comparing every pair (image and breast level, 3 paired metrics + DeLong each).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_insight.metrics import evaluate_predictions
from mammo_insight.runs.run_sets import averaged_predictions, compare_runs, open_run_set


def fake_oof(n_women: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_breast = rng.choice([2, 2, 2, 3], size=2 * n_women)
    rows = {"image_id": [], "breast_id": [], "patient_id": [], "fold": [], "cancer": []}
    for b, n in enumerate(per_breast):
        woman = b // 2
        label = float(rng.random() < 0.02)
        for v in range(n):
            rows["image_id"].append(f"{b}_{v}")
            rows["breast_id"].append(f"W{woman}_{'LR'[b % 2]}")
            rows["patient_id"].append(f"W{woman}")
            rows["fold"].append(woman % 5)
            rows["cancer"].append(label)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--women", type=int, default=11913)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    oof = fake_oof(args.women, 0)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        roots = []
        for k in range(args.runs):
            root = Path(tmp) / f"run{k}"
            root.mkdir()
            (root / "config.json").write_text(json.dumps({"model": "m", "seed": 0, "folds": 5}))
            oof.assign(prob=rng.random(len(oof))).to_csv(root / "oof_predictions.csv", index=False)
            roots.append(root)
        start = time.perf_counter()
        runs = open_run_set(roots)
        opened = time.perf_counter()
        images, breasts = averaged_predictions(runs)
        evaluate_predictions(images, None, args.n_boot, 0, breast_preds=breasts)
        ensembled = time.perf_counter()
        compare_runs(runs, n_boot=args.n_boot)
        compared = time.perf_counter()
    print(f"{len(oof):,} images, {args.women:,} women, {args.runs} runs, {args.n_boot} resamples")
    print(f"open + fold check: {opened - start:.1f} s")
    print(f"ensemble (average + metrics, 3 levels): {ensembled - opened:.1f} s")
    print(f"compare ({args.runs} runs' metrics + every pair at 2 levels): {compared - ensembled:.1f} s")


if __name__ == "__main__":
    main()
