"""Growth of `eda` and `fuse-train` (metadata only) with cohort size: RSNA's train.csv replicated.

    python benchmarks/bench_scale.py [--csv /work/shared/data/rsna/train.csv] [--copies 1 5 20]
                                     [--stages eda fuse-train] [--threads 2] [--work DIR]

Each size is the real table copied k times with new patient and image ids per copy (so a copy is a
new set of women, not duplicated rows of the same ones). Each command runs as the CLI in its own
subprocess; wall time, CPU time (user + system) and peak resident memory come from that child's
rusage (os.wait4), so nothing of the parent is counted. Prints one row per (stage, size) and the
growth of each figure between consecutive sizes next to the growth in rows (growth no worse than
linear: time ratio <= row ratio). Goals on an idle 2-core machine: eda on 20x (1,094,120 rows) <= 30 s
wall and <= 4 GB peak; fuse-train on 20x <= 3 min, its figures at 1x unchanged by any speed-up.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PATIENT_STRIDE = 1_000_000  # above RSNA's largest patient_id (65,534)
IMAGE_STRIDE = 10_000_000_000  # above RSNA's largest image_id (~2.1e9)


@dataclass(frozen=True)
class Measure:
    stage: str
    copies: int
    rows: int
    wall_s: float
    cpu_s: float
    peak_mb: float
    ok: bool


def replicate(csv: Path, copies: int, root: Path) -> int:
    """root/train.csv = `copies` copies of csv, each with its own patient and image ids; returns rows."""
    table = pd.read_csv(csv)
    parts = []
    for copy in range(copies):
        part = table.copy()
        part["patient_id"] = part["patient_id"] + copy * PATIENT_STRIDE
        part["image_id"] = part["image_id"] + copy * IMAGE_STRIDE
        parts.append(part)
    root.mkdir(parents=True, exist_ok=True)
    big = pd.concat(parts, ignore_index=True)
    big.to_csv(root / "train.csv", index=False)
    return len(big)


def run_command(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, bool]:
    """(wall s, CPU s, peak MB, exit ok) of one command in a child process, from that child's rusage
    (os.wait4: nothing of this process is counted); a failure prints the tail of its stderr."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(f"  {cmd[:4]} failed (exit {proc.returncode}):\n{err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode == 0


def measure(stage: str, root: Path, out: Path, env: dict[str, str]) -> tuple[float, float, float, bool]:
    """(wall s, CPU s, peak MB, exit ok) of one CLI command in a child process."""
    cmd = [sys.executable, "-m", "mammo_insight.cli.app", stage, "--dataset", "rsna", "--root", str(root)]
    return run_command([*cmd, "--out", str(out)], env)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", type=Path, default=Path("/work/shared/data/rsna/train.csv"))
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--stages", nargs="+", default=["eda", "fuse-train"], choices=["eda", "fuse-train"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="keep the tables and outputs here")
    args = parser.parse_args()
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        env[var] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        results: list[Measure] = []
        for copies in args.copies:
            root = work / f"rsna_x{copies}"
            rows = replicate(args.csv, copies, root)
            for stage in args.stages:
                wall, cpu, peak, ok = measure(stage, root, work / f"{stage}_x{copies}", env)
                results.append(Measure(stage, copies, rows, wall, cpu, peak, ok))
                print(
                    f"{stage:<10} x{copies:<3} {rows:>9,} rows  {wall:7.1f} s wall  {cpu:7.1f} s CPU  "
                    f"{peak:7.0f} MB peak{'' if ok else '  FAILED'}",
                    flush=True,
                )
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (the machine is shared)")
    print("growth between consecutive sizes (rows ratio | wall, CPU, peak memory ratios):")
    for stage in args.stages:
        runs = [r for r in results if r.stage == stage]
        for small, large in itertools.pairwise(runs):
            print(
                f"  {stage:<10} x{small.copies} -> x{large.copies}: rows {large.rows / small.rows:5.1f}x | "
                f"wall {large.wall_s / small.wall_s:5.2f}x, CPU {large.cpu_s / small.cpu_s:5.2f}x, "
                f"peak {large.peak_mb / small.peak_mb:5.2f}x"
            )


if __name__ == "__main__":
    main()
