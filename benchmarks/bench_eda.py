"""Benchmark: the whole eda study on RSNA's train.csv (54,706 rows; target: at most 20 s on 2 cores).

    python benchmarks/bench_eda.py [--csv /work/shared/data/rsna/train.csv] [--repeats 3] [--threads 2]

Prints the time of each part (cohort load, leakage audit, rates, tests, regression, ..., report
rendering) and the total of the study proper (everything after the load), best of the repeats.
Without the real file it times a synthetic RSNA-like table of the same size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", type=Path, default=Path("/work/shared/data/rsna/train.csv"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ[var] = str(args.threads)

    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.stages.eda import EdaConfig, EdaResult, write_eda
    from mammo_insight.stats.study import run_study

    with tempfile.TemporaryDirectory() as tmp:
        root = args.csv.parent
        if not args.csv.is_file():
            from mammo_insight.synth.table import RSNA_COLUMNS, make_synthetic_table

            root = Path(tmp) / "synthetic"
            root.mkdir()
            make_synthetic_table(11913, seed=0, prevalence=0.021)[RSNA_COLUMNS].to_csv(
                root / "train.csv", index=False
            )
        best: dict[str, float] | None = None
        for _ in range(args.repeats):
            start = time.perf_counter()
            cohort = load_cohort("rsna", root)
            load = time.perf_counter() - start
            start = time.perf_counter()
            result = run_study(cohort)
            write_eda(EdaResult(EdaConfig(), result), Path(tmp) / "eda")
            timings = {"load (adapter)": load, **result.timings, "study total": time.perf_counter() - start}
            if best is None or timings["study total"] < best["study total"]:
                best = timings
    print(
        f"eda on {len(cohort.table):,} rows ({'real' if args.csv.is_file() else 'synthetic'}), "
        f"threads={args.threads}, best of {args.repeats}:"
    )
    for name, seconds in best.items():
        print(f"  {name:<16} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
