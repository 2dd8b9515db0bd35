"""Files per second of the DICOM header scan (`--dataset dicom`) against a bare pydicom loop, 1 and 2 workers,
and the scan's memory as the tree grows.

Usage: python benchmarks/bench_header_scan.py [--files 10000 100000] [--workers 1 2] [--repeats 2] [--tree DIR]
       [--tracemalloc]

The tree: N header-only files (no pixel data: what the scan reads is the header) written once under
DIR/<N> (default a temporary folder), spread over one folder per 100 files. The first 240 come from the
synthetic cohort's own header builder (synth.dicom: identifying tags, machine and exposure tags, a view code
sequence; about 2 kB each; 240 covers every combination of laterality, view, machine, size and density used
here); each further file is a copy of one of them with its own SOPInstanceUID (patched in place, same
length), so a large tree is written at disk speed.
"Bare" is ``pydicom.dcmread(path, stop_before_pixels=True)`` over the same files in this process; "scan" is
cohort.dicom_scan.scan_tree as the adapter runs it (file walk, worker pool, chunks of 256 files, every
header made a cohort row, the journal, the table at the end) with a fresh journal per pass.
Each pass of each setting runs in its own child process (so peak RSS is its own; the pool's workers are
the fork server's children and hold one chunk of 256 files at a time); the settings take turns, ``repeats``
rounds, best wall time kept, so a machine loaded by others weighs on each alike. Timing starts once the
main process has imported pydicom and the toolkit (in either setting); the scan's own start-up (its worker
pool's fork server, which imports the reading stack once) is timed, a fixed cost that a large tree
amortises. Prints a Markdown table and the ratios the issue asks about: scan with one worker over the bare
loop (per core), two workers over one, and memory per file between the sizes (peak RSS of the main process; with --tracemalloc also the peak of Python allocations in a further pass,
and the result table's own bytes per row, which any table of N rows must hold).
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


TEMPLATES = 240


def _template(i: int) -> bytes:
    """File i of the synthetic header builder, as bytes."""
    from pydicom.filebase import DicomBytesIO

    from mammo_insight.synth.dicom import PROFILES, ImageMeta, build_dataset

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
    ds = build_dataset(np.zeros((8, 8), dtype=np.uint16), None, PROFILES[12], meta)
    ds.Rows, ds.Columns = 3328, 2560  # a real mammogram's size; the pixel data itself is left out
    del ds.PixelData
    out = DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def make_tree(root: Path, n: int) -> Path:
    """N header-only synthetic mammography files under root (kept: a second run reuses them)."""
    import pydicom

    done = root / ".complete"
    if done.is_file() and int(done.read_text()) == n:
        return root
    templates: list[tuple[bytes, bytes]] = []
    for i in range(n):
        if i < TEMPLATES:
            data = _template(i)
            uid = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID.encode()
            templates.append((data, uid))
        else:
            data, uid = templates[i % TEMPLATES]
            data = data.replace(uid, uid[:-9] + f"{i:09d}".encode())  # file meta and dataset alike
        folder = root / f"{i // FILES_PER_FOLDER:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.dcm").write_bytes(data)
    done.write_text(str(n))
    return root


def _bare(root: Path) -> int:
    import pydicom

    n = 0
    for path in sorted(root.rglob("*.dcm")):
        pydicom.dcmread(path, stop_before_pixels=True)
        n += 1
    return n


def _scan(root: Path, workers: int) -> tuple[int, int]:
    """(rows, bytes of the result table) of one scan with a fresh journal."""
    from mammo_insight.cohort.dicom_scan import ScanConfig, scan_tree

    with tempfile.TemporaryDirectory(prefix="bench_scan_") as journal:
        result = scan_tree(ScanConfig(root, b"bench salt", Path(journal), workers=workers))
    assert result.failures.empty, result.failures.head()  # the .complete marker is hidden, never listed
    return len(result.images), int(result.images.memory_usage(deep=True).sum())


def child(mode: str, root: Path, workers: int) -> dict:
    """One pass: its wall time, this process's peak RSS, and for a scan the result table's bytes (with
    mode "trace": the peak of Python allocations under tracemalloc instead of a timing)."""
    if mode == "trace":
        import tracemalloc

        tracemalloc.start()
        n, table = _scan(root, workers)
        return {"files": n, "traced_peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}
    import pydicom  # noqa: F401 - imports are not per file: both settings start timing with theirs done

    from mammo_insight.cohort import dicom_scan  # noqa: F401

    start = time.perf_counter()
    n, table = (_bare(root), 0) if mode == "bare" else _scan(root, workers)
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"files": n, "seconds": seconds, "peak_mb": own, "table_bytes": table}


def _run_child(mode: str, root: Path, workers: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--root", str(root), "--workers", str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure(root: Path, workers: list[int], repeats: int) -> dict[str, dict]:
    """Each setting's best pass (lowest wall time) over ``repeats`` rounds in which the settings take turns."""
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for mode, w in [("bare", 1), *(("scan", w) for w in workers)]:
            name = "bare dcmread loop" if mode == "bare" else f"scan, {w} worker(s)"
            r = _run_child(mode, root, w)
            if name not in best or r["seconds"] < best[name]["seconds"]:
                best[name] = r
    return best


def _per_file_kb(values: dict[int, float]) -> str:
    (a, va), (b, vb) = min(values.items()), max(values.items())
    return f"{va:.0f} MB at {a:,} files, {vb:.0f} MB at {b:,} ({(vb - va) * 1024 / (b - a):.2f} kB per further file)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tree", type=Path, default=None)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--child", default=None)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.root, args.workers[0])))
        return
    base = args.tree or Path(tempfile.mkdtemp(prefix="bench_header_tree_"))
    print("| files | setting | files/s | peak RSS MB (main process) |")
    print("|---|---|---|---|")
    rates: dict[tuple[int, str], float] = {}
    peaks, traced, tables = {}, {}, {}
    for n in args.files:
        root = make_tree(base / str(n), n)
        for name, r in _measure(root, args.workers, args.repeats).items():
            rates[(n, name)] = r["files"] / r["seconds"]
            if name == f"scan, {args.workers[0]} worker(s)":
                peaks[n], tables[n] = r["peak_mb"], r["table_bytes"] / r["files"]
            print(f"| {n:,} | {name} | {rates[(n, name)]:,.0f} | {r['peak_mb']:.0f} |")
        if args.tracemalloc:
            traced[n] = _run_child("trace", root, args.workers[0])["traced_peak_mb"]
    for n in args.files:
        one = rates.get((n, "scan, 1 worker(s)"))
        two = rates.get((n, "scan, 2 worker(s)"))
        bare = rates[(n, "bare dcmread loop")]
        if one:
            print(f"{n:,} files: scan with 1 worker / bare loop = {one / bare:.2f}x")
        if one and two:
            print(f"{n:,} files: 2 workers / 1 worker = {two / one:.2f}x")
        print(f"{n:,} files: the result table holds {tables[n]:.0f} bytes per row")
    if len(peaks) > 1:
        print(f"main-process peak RSS {_per_file_kb(peaks)}")
    if len(traced) > 1:
        print(f"tracemalloc peak {_per_file_kb(traced)}")


if __name__ == "__main__":
    main()
