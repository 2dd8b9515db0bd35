"""Files per second of the DICOM header scan (`--dataset dicom`) against a bare pydicom loop, 1 and 2 workers,
and the scan's peak memory as the tree grows.

Usage: python benchmarks/bench_header_scan.py [--files 10000 100000] [--workers 1 2] [--repeats 2] [--tree DIR]

The tree: N header-only files (no pixel data: what the scan reads is the header) written once under
DIR/<N> (default a temporary folder) from the synthetic cohort's own header builder (synth.dicom: identifying
tags, machine and exposure tags, a view code sequence; about 2 kB each), spread over one folder per 100 files.
"Bare" is ``pydicom.dcmread(path, stop_before_pixels=True)`` over the same files in this process; "scan" is
cohort.dicom_scan.scan_tree as the adapter runs it (file walk, worker pool, chunks of 256 files, every
header made a cohort row, a journal line per file, the table at the end) with a fresh journal per pass.
Each setting runs in its own child process (so peak RSS is its own; the pool's workers are the fork
server's children and hold one chunk of 256 files at a time), ``repeats`` times, best wall time kept. Prints a Markdown table and the ratios the issue asks about: scan with one worker over the bare loop
(per core), two workers over one, and peak memory per file between the sizes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FILES_PER_FOLDER = 100


def make_tree(root: Path, n: int) -> Path:
    """N header-only synthetic mammography files under root (kept: a second run reuses them)."""
    from mammo_insight.synth.dicom import PROFILES, ImageMeta, build_dataset

    done = root / ".complete"
    if done.is_file() and int(done.read_text()) == n:
        return root
    stored = np.zeros((8, 8), dtype=np.uint16)
    for i in range(n):
        meta = ImageMeta(
            patient_id=str(10_000 + i // 4),
            image_id=str(1_000_000 + i),
            laterality="LR"[i // 2 % 2],
            view=("CC", "MLO")[i % 2],
            age=40.0 + i % 40,
            site_id=str(1 + i % 2),
            seed=0,
            machine_id=("49", "216", "21", "48")[i % 4],
            size_factor=1.0 + 0.25 * (i % 3),
            density="ABCD"[i % 4],
        )
        ds = build_dataset(stored, None, PROFILES[12], meta)
        ds.Rows, ds.Columns = 3328, 2560  # a real mammogram's size; the pixel data itself is left out
        del ds.PixelData
        folder = root / f"{i // FILES_PER_FOLDER:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
    done.write_text(str(n))
    return root


def _bare(root: Path) -> int:
    import pydicom

    n = 0
    for path in sorted(root.rglob("*.dcm")):
        pydicom.dcmread(path, stop_before_pixels=True)
        n += 1
    return n


def _scan(root: Path, workers: int) -> int:
    from mammo_insight.cohort.dicom_scan import ScanConfig, scan_tree

    with tempfile.TemporaryDirectory(prefix="bench_scan_") as journal:
        result = scan_tree(ScanConfig(root, b"bench salt", Path(journal), workers=workers))
    assert result.failures.empty, result.failures.head()  # the .complete marker is hidden, never listed
    return len(result.images)


def child(mode: str, root: Path, workers: int, repeats: int) -> dict:
    """One setting's best time and this process's (and its workers') peak RSS."""
    best, n = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = _bare(root) if mode == "bare" else _scan(root, workers)
        best = min(best, time.perf_counter() - start)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"files": n, "seconds": best, "peak_mb": own}


def _run_child(mode: str, root: Path, workers: int, repeats: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--root",
            str(root),
            "--workers",
            str(workers),
            "--repeats",
            str(repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tree", type=Path, default=None)
    parser.add_argument("--child", default=None)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.root, args.workers[0], args.repeats)))
        return
    base = args.tree or Path(tempfile.mkdtemp(prefix="bench_header_tree_"))
    print("| files | setting | files/s | peak RSS MB (main process) |")
    print("|---|---|---|---|")
    rates: dict[tuple[int, str], float] = {}
    peaks: dict[int, float] = {}
    for n in args.files:
        root = make_tree(base / str(n), n)
        settings = [("bare", 1), *(("scan", w) for w in args.workers)]
        for mode, workers in settings:
            r = _run_child(mode, root, workers, args.repeats)
            name = "bare dcmread loop" if mode == "bare" else f"scan, {workers} worker(s)"
            rates[(n, name)] = r["files"] / r["seconds"]
            if mode == "scan" and workers == args.workers[0]:
                peaks[n] = r["peak_mb"]
            print(f"| {n:,} | {name} | {rates[(n, name)]:,.0f} | {r['peak_mb']:.0f} |")
    for n in args.files:
        one = rates.get((n, "scan, 1 worker(s)"))
        two = rates.get((n, "scan, 2 worker(s)"))
        bare = rates[(n, "bare dcmread loop")]
        if one:
            print(f"{n:,} files: scan with 1 worker / bare loop = {one / bare:.2f}x")
        if one and two:
            print(f"{n:,} files: 2 workers / 1 worker = {two / one:.2f}x")
    if len(peaks) > 1:
        (a, pa), (b, pb) = min(peaks.items()), max(peaks.items())
        print(
            f"main-process peak RSS {pa:.0f} MB at {a:,} files, {pb:.0f} MB at {b:,} ({(pb - pa) * 1024 / (b - a):.1f} kB per further file)"
        )


if __name__ == "__main__":
    main()
