"""Images per second for decoding alone and for the whole preprocess pipeline, 1 and 2 workers, and what
the one-worker pool costs over decoding in this process.

Usage: python benchmarks/bench_preprocess.py [--data DIR] [--size 512x256] [--repeats 3] [--decoder pydicom]
       [--copies 2] [--workers 1 2]

DIR is the real-data folder (default $MAMMO_INSIGHT_DATA_DIR); every RSNA DICOM under DIR/rsna is used.
"Decode" is read_image (header + pixel decode with the named decoder); "pipeline" is process_one
(the same decode, display table, breast box, crop, flip, resize, pad, atomic 8-bit PNG write) with
the same decoder, run by the same engine as `mammo-insight preprocess` (a process pool, one worker
included, so that a decoder that crashes costs one file). The pipeline also runs in this process, a
plain loop with no pool, the way `--workers 1` ran before: the ratio is what the pool costs. Each
setting runs ``repeats`` times after a warm-up and the best wall time is kept (a fresh pool, fork
server included, in every pass). Prints a Markdown table and the ratios: pipeline overhead over decode,
the 2-vs-1 worker speed-up, and the one-worker pool over the in-process loop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from mammo_insight.imaging.build import crashed_record
from mammo_insight.imaging.decode import read_image
from mammo_insight.imaging.engines import run_tasks
from mammo_insight.imaging.pipeline import PreprocessConfig, process_one


def decode_only(task: dict) -> dict:
    pixels = read_image(task["image_path"], task["config"]["decoder"]).pixels
    return {"image_id": task["image_id"], "status": "ok", "shape": pixels.shape}


def _tasks(files: list[Path], cache: Path, config: PreprocessConfig) -> list[dict]:
    return [
        {
            "image_id": f"{f.stem}_{i}",
            "patient_id": f.parent.name,
            "image_path": str(f),
            "cache_dir": str(cache),
            "config": config.to_dict(),
            "thumbnail": False,
        }
        for i, f in enumerate(files)
    ]


IN_PROCESS = "in-process"


def in_process(fn, tasks: list[dict]) -> list[dict]:
    """The tasks in a loop in this process, one OpenCV thread like a worker: no pool at all."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return [fn(task) for task in tasks]
    finally:
        cv2.setNumThreads(before)


def best_seconds(
    fn, files: list[Path], config: PreprocessConfig, workers: int, repeats: int, *, engine: str = "local"
) -> float:
    best = float("inf")
    for attempt in range(repeats + 1):  # attempt 0 warms caches and imports; it is not counted
        cache = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
        tasks = _tasks(files, cache, config)
        start = time.perf_counter()
        if engine == IN_PROCESS:
            results = in_process(fn, tasks)
        else:
            results = list(run_tasks(fn, tasks, workers=workers, engine=engine, on_crash=crashed_record))
        elapsed = time.perf_counter() - start
        shutil.rmtree(cache)
        bad = [r for r in results if r["status"] != "ok"]
        if bad:
            raise SystemExit(f"benchmark input failed: {bad[0]}")
        if attempt:
            best = min(best, elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("MAMMO_INSIGHT_DATA_DIR"))
    parser.add_argument("--size", default="512x256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decoder", default="pydicom")
    parser.add_argument(
        "--copies",
        type=int,
        default=2,
        help="each file is processed this many times per pass, so pool start-up is amortised",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="pool sizes to measure")
    args = parser.parse_args()
    if args.data is None:
        raise SystemExit("give --data or set MAMMO_INSIGHT_DATA_DIR")
    # largest first, so two workers are not left waiting on one big file at the end
    files = sorted((args.data / "rsna").rglob("*.dcm"), key=lambda p: -p.stat().st_size) * args.copies
    h, w = (int(v) for v in args.size.lower().split("x"))
    config = PreprocessConfig(size=(h, w), decoder=args.decoder)
    in_process_rate = len(files) / best_seconds(
        process_one, files, config, 1, args.repeats, engine=IN_PROCESS
    )
    rows = {}
    for workers in args.workers:
        for name, fn in (("decode", decode_only), ("pipeline", process_one)):
            rows[(name, workers)] = len(files) / best_seconds(fn, files, config, workers, args.repeats)
    print(
        f"{len(files) // args.copies} RSNA DICOMs (JPEG 2000) x {args.copies}, decoder {args.decoder}, output {args.size}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, best of {args.repeats}\n"
    )
    print("| workers | decode only (img/s) | whole pipeline (img/s) | pipeline overhead |")
    print("|---|---|---|---|")
    print(f"| in this process | | {in_process_rate:.2f} | |")
    for workers in args.workers:
        d, p = rows[("decode", workers)], rows[("pipeline", workers)]
        print(f"| {workers} | {d:.2f} | {p:.2f} | {100 * (d / p - 1):+.1f}% |")
    if 1 in args.workers:
        print(
            f"\npipeline/decode overhead, 1 worker: {100 * (rows[('decode', 1)] / rows[('pipeline', 1)] - 1):+.1f}% "
            "(target <= 15%)"
        )
        print(
            f"one-worker pool vs in this process, pipeline: {100 * (in_process_rate / rows[('pipeline', 1)] - 1):+.1f}% "
            "wall time"
        )
    if {1, 2} <= set(args.workers):
        print(
            f"2-vs-1 worker speed-up, pipeline: {rows[('pipeline', 2)] / rows[('pipeline', 1)]:.2f}x "
            f"(decode alone {rows[('decode', 2)] / rows[('decode', 1)]:.2f}x; target >= 1.7x)"
        )


if __name__ == "__main__":
    main()
