"""Benchmark: the whole eda study on RSNA's train.csv (54,706 rows; target: at most 20 s on 2 cores), and
the `eda` command against ydata-profiling's default report on the same CSV (target: at most 0.5x its CPU).

    python benchmarks/bench_eda.py [--csv /work/shared/data/rsna/train.csv] [--repeats 3] [--threads 2]
                                   [--ydata-python PYTHON]

Prints the time of each part (cohort load, leakage audit, rates, tests, regression, ..., report
rendering) and the total of the study proper (everything after the load), best of the repeats.
Without the real file it times a synthetic RSNA-like table of the same size.

Then, side by side in one run, each as a command in its own process (CPU = user + system seconds of
that child from os.wait4, imports and writing the report included; peak resident memory from the same
call): ``mammo-insight eda --dataset rsna --root DIR`` and ``ProfileReport(pd.read_csv(CSV)).to_file()``
with ydata-profiling's defaults. ydata-profiling is not a dependency of this project: install it in a
separate environment (``python -m venv /tmp/ydata && /tmp/ydata/bin/pip install ydata-profiling``; its
pins would move this project's pandas and numpy) and pass that environment's python as --ydata-python.
The two take turns ``repeats`` times; the lowest CPU of each is compared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_scale import run_command  # one child-process measurement for both benchmarks

YDATA = (
    "import sys, pandas as pd\n"
    "from ydata_profiling import ProfileReport\n"
    "ProfileReport(pd.read_csv(sys.argv[1]), title='RSNA', progress_bar=False).to_file(sys.argv[2])\n"
)


def compare_with_ydata(csv: Path, ydata_python: str, repeats: int) -> None:
    """eda's CPU seconds beside ydata-profiling's on the same CSV, best of ``repeats`` turns each."""
    env = dict(os.environ)
    best: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "mammo-insight eda": [sys.executable, "-m", "mammo_insight.cli.app", "eda", "--dataset", "rsna"]
            + ["--root", str(csv.parent), "--out", f"{tmp}/eda"],
            "ydata-profiling": [ydata_python, "-c", YDATA, str(csv), f"{tmp}/ydata.html"],
        }
        for _ in range(repeats):
            for name, cmd in runs.items():
                wall, cpu, peak, ok = run_command(cmd, env)
                if not ok:
                    raise SystemExit(f"{name} failed")
                if name not in best or cpu < best[name][0]:
                    best[name] = (cpu, wall, peak)
    print(f"side by side on {csv} (best of {repeats}, each command in its own process):")
    for name, (cpu, wall, peak) in best.items():
        print(f"  {name:<18} {cpu:6.2f} s CPU  {wall:6.2f} s wall  {peak:6.0f} MB peak")
    ratio = best["mammo-insight eda"][0] / best["ydata-profiling"][0]
    print(f"  eda / ydata-profiling CPU = {ratio:.2f}x (goal <= 0.5x)\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", type=Path, default=Path("/work/shared/data/rsna/train.csv"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ydata-python", default=None, help="a python that can import ydata_profiling")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ[var] = str(args.threads)
    # first, while this process is small: a child's peak RSS starts from its parent's at the fork
    if args.ydata_python and args.csv.is_file():
        compare_with_ydata(args.csv, args.ydata_python, args.repeats)
    elif args.csv.is_file():
        print("(no --ydata-python: the comparison with ydata-profiling is skipped)")

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
