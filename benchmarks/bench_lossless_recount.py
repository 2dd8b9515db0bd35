"""Cost of the lossless JPEG coded-length check (integrity.coded_length_problem) on real mammograms.

    python benchmarks/bench_lossless_recount.py [--data DIR] [--lossless FILE ...]
    (DIR default $MAMMO_INSIGHT_DATA_DIR)

No real lossless JPEG DICOM is in the data, so each real RSNA DICOM's pixels are re-encoded as one
(synth.dicom.set_jpeg_lossless, predictor 1, BitsStored bits) in its own header. Per file, CPU seconds
(time.process_time, one thread) of pydicom's decode (pylibjpeg-libjpeg), of the stream walk before it
and of the recount after it, and the recount's share of the decode; the verdict must be None (sound).
On the RSNA files as they are (JPEG 2000) the recount returns at its transfer-syntax test.

``--lossless``: real lossless JPEG DICOMs from other encoders (e.g. pydicom-data 1.0.0's JPEG-LL.dcm,
JPGLosslessP14SV1_1s_1f_8b.dcm, bad_sequence.dcm); each must pass read_image, and its copies with 8 to
2000 zero bytes in the middle of the stream must fail.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.filebase import DicomBytesIO

from mammo_insight.errors import DicomError
from mammo_insight.imaging.decode import read_image
from mammo_insight.imaging.integrity import coded_length_problem
from mammo_insight.imaging.stream_walk import stream_problem
from mammo_insight.synth.corrupt import write_damaged
from mammo_insight.synth.dicom import set_jpeg_lossless


def _cpu(func):
    start = time.process_time()
    result = func()
    return result, time.process_time() - start


def other_encoders(path: Path) -> None:
    read_image(path)  # raises if the sound file is flagged
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (8, 16, 32, 500, 2000):
            try:
                read_image(write_damaged(path, Path(tmp) / "damaged.dcm", "zeros", n))
                verdicts.append(f"{n}: missed")
            except DicomError:
                verdicts.append(f"{n}: caught")
    print(f"{path.name}: sound file passes; zero runs {', '.join(verdicts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MAMMO_INSIGHT_DATA_DIR", ".")))
    parser.add_argument("--lossless", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    for path in args.lossless:
        other_encoders(path)
    files = sorted((args.data / "rsna").rglob("*.dcm"))
    if not files:
        raise SystemExit(f"no RSNA DICOMs under {args.data / 'rsna'}")
    print(f"{'file':<22} {'size':>11} {'decode s':>9} {'walk s':>7} {'recount s':>9} {'share':>6}  verdict")
    totals, on_j2k = [0.0, 0.0, 0.0], 0.0
    for path in files:
        real = pydicom.dcmread(path)
        pixels = read_image(path).pixels
        on_j2k += _cpu(lambda real=real, pixels=pixels: coded_length_problem(pixels, real))[1]
        buffer = DicomBytesIO()
        set_jpeg_lossless(real, pixels, int(real.BitsStored)).save_as(buffer, enforce_file_format=True)
        ds = pydicom.dcmread(DicomBytesIO(buffer.getvalue()))
        walk, walk_s = _cpu(lambda ds=ds: stream_problem(ds))
        decoded, decode_s = _cpu(lambda ds=ds: ds.pixel_array)
        verdict, recount_s = _cpu(lambda ds=ds, decoded=decoded: coded_length_problem(decoded, ds))
        assert walk is None and (decoded == pixels).all(), path
        for i, seconds in enumerate((decode_s, walk_s, recount_s)):
            totals[i] += seconds
        shape = "x".join(map(str, pixels.shape))
        print(
            f"{path.parent.name + '/' + path.name:<22} {shape:>11} {decode_s:9.2f} {walk_s:7.3f} "
            f"{recount_s:9.3f} {recount_s / decode_s:6.0%}  {verdict}"
        )
    decode_s, walk_s, recount_s = totals
    print(
        f"all {len(files)}: decode {decode_s:.1f} s, walk {walk_s:.2f} s, recount {recount_s:.2f} s "
        f"({recount_s / decode_s:.0%} of the decode)"
    )
    print(f"the recount on the {len(files)} files as they are (JPEG 2000): {on_j2k:.4f} s in all")


if __name__ == "__main__":
    main()
