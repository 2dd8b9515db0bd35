"""Detection rates of corrupt pixel streams: every transfer syntax the synthetic generator writes, four
kinds of damage (synth/corrupt.py), each file's verdict from read_image (failed = caught).

    python benchmarks/bench_corruption.py [--patients 8] [--seeds 3] [--sizes 500 2000]

Prints, per syntax and damage, how many damaged files failed with a reason, how many decoded to wrong
pixels without a word (missed) and how many decoded to the right pixels anyway (harmless).
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import pydicom

from mammo_insight.errors import DicomError
from mammo_insight.imaging.decode import read_image
from mammo_insight.synth.cohort import make_synthetic_cohort
from mammo_insight.synth.corrupt import DAMAGES, write_damaged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000], help="bytes damaged per run")
    args = parser.parse_args()
    counts: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        make_synthetic_cohort(root, n_patients=args.patients, seed=0, size=(256, 192), prevalence=0.5)
        for source in sorted(root.rglob("*.dcm")):
            syntax = pydicom.dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
            good = read_image(source).pixels
            for damage in DAMAGES:
                for n in args.sizes if damage != "truncate" else (0,):
                    for seed in range(args.seeds):
                        out = write_damaged(source, Path(tmp) / "damaged.dcm", damage, n, seed=seed)
                        try:
                            pixels = read_image(out).pixels
                        except DicomError:
                            counts[(syntax, damage)]["caught"] += 1
                            continue
                        same = pixels.shape == good.shape and (pixels == good).all()
                        counts[(syntax, damage)]["harmless" if same else "missed"] += 1
    print(f"{'transfer syntax':<48} {'damage':<9} {'caught':>7} {'missed':>7} {'harmless':>8}  rate")
    for (syntax, damage), c in sorted(counts.items()):
        total = c["caught"] + c["missed"]
        rate = c["caught"] / total if total else float("nan")
        print(
            f"{syntax[:48]:<48} {damage:<9} {c['caught']:>7} {c['missed']:>7} {c['harmless']:>8}  {rate:.0%}"
        )


if __name__ == "__main__":
    main()
