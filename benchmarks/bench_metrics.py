"""Speed of the shared metrics at RSNA scale (not a test): patient-bootstrap intervals on 54,706 images.

python benchmarks/bench_metrics.py [--boot 1000] [--repeat 3]
Simulated predictions with RSNA's shape: 54,706 images, 11,913 patients, 23,826 breasts, about 2% positive.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from mammo_insight.metrics import evaluate_predictions, metrics_with_ci, paired_bootstrap, subgroup_metrics


def rsna_like(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_patients, n_images = 11_913, 54_706
    patient = np.sort(rng.integers(0, n_patients, n_images))
    side = rng.choice(["L", "R"], n_images)
    breast = pd.Series(patient).astype(str) + "_" + side
    positive_breast = pd.Series(breast.unique()).sample(frac=0.02, random_state=seed)
    y = breast.isin(positive_breast).to_numpy(float)
    prob = 1 / (1 + np.exp(-(rng.normal(-4, 1.2, n_images) + 1.5 * y)))
    return pd.DataFrame(
        {
            "image_id": np.arange(n_images).astype(str),
            "breast_id": breast,
            "patient_id": patient.astype(str),
            "prob": prob,
            "cancer": y,
            "view": rng.choice(["CC", "MLO"], n_images),
            "site_id": rng.choice(["1", "2"], n_images),
        }
    )


def timed(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    df = rsna_like()
    breasts = df.groupby("breast_id").agg(
        patient_id=("patient_id", "first"), prob=("prob", "mean"), cancer=("cancer", "max")
    )
    other = np.clip(breasts["prob"] + np.random.default_rng(1).normal(0, 0.02, len(breasts)), 0, 1)
    cases = {
        f"metrics_with_ci, {len(df):,} images, {args.boot} resamples": lambda: metrics_with_ci(
            df["cancer"], df["prob"], df["patient_id"], 0.1, n_boot=args.boot
        ),
        f"metrics_with_ci, {len(breasts):,} breasts, {args.boot} resamples": lambda: metrics_with_ci(
            breasts["cancer"], breasts["prob"], breasts["patient_id"], 0.1, n_boot=args.boot
        ),
        f"paired_bootstrap roc_auc, {len(breasts):,} breasts": lambda: paired_bootstrap(
            breasts["cancer"], breasts["prob"], other, breasts["patient_id"], n_boot=args.boot
        ),
        "evaluate_predictions (image + breast mean + breast max)": lambda: evaluate_predictions(
            df, n_boot=args.boot
        ),
        "subgroup_metrics (view, site; 200 resamples)": lambda: subgroup_metrics(df, ["view", "site_id"]),
    }
    print(f"{'case':<62} {'best of ' + str(args.repeat):>10}")
    for name, fn in cases.items():
        print(f"{name:<62} {timed(fn, args.repeat):>9.2f}s")


if __name__ == "__main__":
    main()
