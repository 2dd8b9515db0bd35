"""Preprocess throughput on a Dask LocalCluster against the local process pool, both with 2 workers.

Usage: python benchmarks/bench_scaleout.py [--data DIR] [--size 512x256] [--repeats 2] [--copies 4]

DIR is the real-data folder (default $MAMMO_INSIGHT_DATA_DIR); every RSNA DICOM under DIR/rsna is used,
each ``copies`` times per pass. Both engines run the whole pipeline (process_one) as `mammo-insight
preprocess --workers 2 [--backend dask]` does, start-up included (the pool's forkserver, the cluster's
scheduler and worker processes), best of ``repeats`` after a warm-up. Prints images per second and the
cluster's overhead in percent.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench_preprocess import best_seconds

from mammo_insight.imaging.pipeline import PreprocessConfig, process_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("MAMMO_INSIGHT_DATA_DIR"))
    parser.add_argument("--size", default="512x256")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args()
    if args.data is None:
        raise SystemExit("give --data or set MAMMO_INSIGHT_DATA_DIR")
    files = sorted((args.data / "rsna").rglob("*.dcm"), key=lambda p: -p.stat().st_size) * args.copies
    h, w = (int(v) for v in args.size.lower().split("x"))
    config = PreprocessConfig(size=(h, w), decoder="pydicom")
    rate = {
        engine: len(files) / best_seconds(process_one, files, config, 2, args.repeats, engine=engine)
        for engine in ("local", "dask")
    }
    print(
        f"{len(files) // args.copies} RSNA DICOMs x {args.copies}, output {args.size}, 2 workers, "
        f"{os.cpu_count()} CPUs, best of {args.repeats}, start-up included\n"
    )
    print("| engine | whole pipeline (img/s) |")
    print("|---|---|")
    print(f"| local process pool | {rate['local']:.2f} |")
    print(f"| dask LocalCluster | {rate['dask']:.2f} |")
    print(f"\ncluster overhead: {100 * (rate['local'] / rate['dask'] - 1):+.1f}% wall time")


if __name__ == "__main__":
    main()
