"""Decoder speed per transfer syntax (the table behind `--decoder auto`), and preprocess with the default.

    python benchmarks/bench_decoders.py [--data DIR]   (DIR default $MAMMO_INSIGHT_DATA_DIR)

Counts CPU seconds of this one process (time.process_time, one thread each), so the figures hold on a
shared machine where wall time does not: megapixels per CPU second for each installed decoder on one
synthetic 1024 x 768 file per transfer syntax (RSNA's four), then images per CPU second for decoding
alone and for the whole preprocess of one image (process_one, 512x256 PNG) on the real RSNA DICOMs
under DIR/rsna with `auto` and with `pydicom`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pydicom

from mammo_insight.imaging.decode import auto_backend, available_backends, read_image
from mammo_insight.imaging.pipeline import PreprocessConfig, process_one
from mammo_insight.synth.cohort import make_synthetic_cohort


def per_syntax(tmp: Path) -> None:
    make_synthetic_cohort(tmp, n_patients=6, seed=2, size=(1024, 768))
    files: dict[str, list[Path]] = {}
    for path in sorted(tmp.rglob("*.dcm")):
        name = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
        files.setdefault(name, []).append(path)
    backends = available_backends()
    print(f"megapixels per CPU second ({', '.join(backends)} installed); auto's choice last")
    for name, paths in files.items():
        speeds = []
        for backend in backends:
            read_image(paths[0], backend)  # warm-up
            start, pixels = time.process_time(), 0
            for path in paths:
                pixels += read_image(path, backend).pixels.size
            speeds.append(f"{backend} {pixels / 1e6 / (time.process_time() - start):6.1f}")
        print(f"  {name[:48]:<48} {' | '.join(speeds)}  -> {auto_backend(name)}")


def real_rsna(data: Path, tmp: Path) -> None:
    files = sorted((data / "rsna").rglob("*.dcm"))
    if not files:
        print(f"no RSNA DICOMs under {data / 'rsna'}: real-file figures skipped")
        return
    print(f"{len(files)} real RSNA DICOMs ({read_image(files[0]).transfer_syntax}), images per CPU second:")
    for decoder in ("auto", "pydicom"):
        config = PreprocessConfig(size=(512, 256), decoder=decoder).to_dict()
        read_image(files[0], decoder)
        start = time.process_time()
        for path in files:
            read_image(path, decoder)
        decode = len(files) / (time.process_time() - start)
        start = time.process_time()
        for i, path in enumerate(files):
            task = {"image_id": f"{path.stem}_{i}", "patient_id": path.parent.name, "image_path": str(path)}
            record = process_one(
                {**task, "cache_dir": str(tmp / decoder), "config": config, "thumbnail": False}
            )
            assert record["status"] == "ok", record
        pipeline = len(files) / (time.process_time() - start)
        print(f"  {decoder:<8} decode {decode:5.2f}, whole preprocess {pipeline:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MAMMO_INSIGHT_DATA_DIR", ".")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        per_syntax(Path(tmp) / "synth")
        real_rsna(args.data, Path(tmp))


if __name__ == "__main__":
    main()
