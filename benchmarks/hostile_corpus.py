"""A hostile corpus (issue 31): cases beyond the issue's listed ones, each run through the same entry
point a user reaches, each outcome put in one category:

- clear error: a one-line MammoInsightError (or a CLI usage error, exit 2), or for an image a
  failures.csv row whose reason names the file and the cause;
- correct: the run succeeded and its oracle (what the right result is) holds;
- traceback: any other exception, or a traceback on the terminal;
- silent wrong: success where a refusal was due, or a result the oracle rejects;
- hole: dataset content that drives the terminal, reaches a spreadsheet formula, or a file out of the root.

    python benchmarks/hostile_corpus.py            # every case, totals by category and by kind
    python benchmarks/hostile_corpus.py --show 20  # and the first 20 outcomes' messages

Kinds: training options (TOML), CLI options, cohort tables (CSV), generic mappings (TOML), image files
(DICOM headers, PNG), run folders, terminal and spreadsheet output. Everything is written under a
temporary folder; nothing is downloaded. The target is 0 tracebacks, 0 silent wrong and 0 holes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))  # lying_dicom: DICOMs whose header lies, shared with the tests

from mammo_insight.errors import MammoInsightError

CATEGORIES = ("clear error", "correct", "traceback", "silent wrong", "hole")
ERROR = "error"  # the expected outcome: a clear refusal
RSNA_HEADER = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "machine_id"]


@dataclass
class Case:
    kind: str
    name: str
    run: Callable[[], object]
    expect: str | Callable[[object], bool]  # ERROR, or an oracle over run()'s result
    hole: bool = False  # a failed oracle is a hole (confinement, escaping), not a wrong result


def classify(case: Case) -> tuple[str, str]:
    """(category, message) of one case."""
    try:
        result = case.run()
    except MammoInsightError as exc:
        text = str(exc)
        one_line = text.strip() and "\n" not in text.strip()
        return ("clear error" if one_line else "traceback"), text[:300]
    except SystemExit as exc:  # a CLI usage error (typer) or main()'s exit 2
        return ("clear error" if exc.code == 2 else "traceback"), f"exit {exc.code}"
    except Exception as exc:  # noqa: BLE001 - the corpus counts every other exception as a traceback
        return "traceback", "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
    if case.expect == ERROR:
        return ("hole" if case.hole else "silent wrong"), f"accepted: {str(result)[:200]}"
    try:
        ok = case.expect(result)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - an oracle that cannot read the result fails the case
        ok, result = False, exc
    if not ok:
        return ("hole" if case.hole else "silent wrong"), f"oracle failed on: {str(result)[:200]}"
    if isinstance(result, dict) and result.get("status") == "failed":  # a failures.csv row naming the cause
        return "clear error", str(result.get("reason"))[:300]
    return "correct", ""


# training options ----------------------------------------------------------------------------------------


def option_cases(tmp: Path) -> Iterator[Case]:
    from mammo_insight.runs.config import load_config, option_ranges

    def loader(body: str) -> Callable[[], object]:
        path = tmp / f"opt_{abs(hash(body))}.toml"
        path.write_text(body)
        return lambda: load_config(path)

    for key, between in sorted(option_ranges().items()):
        table, _, name = key.rpartition(".")
        head = f"[{table}]\n" if table else ""
        pair = key in ("image_size", "augment.erase_scale")
        integer = key not in _FLOAT_KEYS
        for label, value in (("nan", "nan"), ("above the range", _toml_number(between.hi * 2 + 1, integer))):
            if integer and label == "nan":
                value = "-9223372036854775807"
            text = f"[{value}, {value}]" if pair else value
            yield Case("training option", f"{key} {label}", loader(f"{head}{name} = {text}\n"), ERROR)
    for body in (
        'view_mode = "triple"',
        'loss = "hinge"',
        'device = "tpu"',
        'pool = "median"',
        'schedule = "cyclic"',
        "model = 3",
        "folds = 2.5",
        'label_column = ""',
        "pretrained = true\nweights = 'w.pt'",
        "augment = 1",
        "[augment]\nerase_scale = [0.5, 0.1]",
        "[augment]\nunknown = 1",
        "image_size = [512]",
        "x = 1",
        "\ufeffseed = 1\n\x00",
    ):
        yield Case("training option", f"TOML {body[:30]!r}", loader(body + "\n"), ERROR)
    from mammo_insight.runs.config import PatchConfig

    for key, value in (
        ("lr", math.nan), ("lr", math.inf), ("lr", -1e-3), ("background_ratio", math.inf),
        ("background_ratio", math.nan), ("jitter", math.nan), ("tissue_level", -0.1), ("weight_decay", math.nan),
        ("seed", -1), ("patch_size", 10**6), ("lesion_patches", 10**9),
    ):  # fmt: skip
        yield Case(
            "training option",
            f"patch-train {key} = {value}",
            functools.partial(PatchConfig, **{key: value}),
            ERROR,
        )
    yield Case("training option", "all defaults", loader(""), lambda c: c.seed == 0 and c.folds == 5)
    yield Case(
        "training option",
        "edges of the ranges",
        loader("seed = 4294967295\nimage_size = [16, 4096]\nfocal_gamma = 0\n[augment]\nzoom = 0.99\n"),
        lambda c: c.seed == 2**32 - 1 and c.image_size == (16, 4096),
    )


_FLOAT_KEYS = {
    "lr", "weight_decay", "dropout", "focal_gamma", "focal_alpha", "pos_weight", "target_pos_ratio",
    "undersample_negatives", "positive_label", "warmup_pos_ratio", "unfreeze_lr_scale", "layer_decay",
    "target_sensitivity", "augment.hflip", "augment.vflip", "augment.rotate_degrees", "augment.brightness",
    "augment.contrast", "augment.noise_std", "augment.zoom", "augment.shift", "augment.erase_p",
    "augment.erase_scale", "augment.patch_drop_rate",
}  # fmt: skip


def _toml_number(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(float(value))


# CLI options ---------------------------------------------------------------------------------------------


def cli(*args: object) -> Callable[[], object]:
    """main() with these arguments; SystemExit(0) is returned as success, others propagate."""

    def go() -> object:
        from mammo_insight.cli.app import main

        argv, sys.argv = sys.argv, ["mammo-insight", *map(str, args)]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                if "Traceback" in err.getvalue():
                    raise RuntimeError(err.getvalue()[-300:]) from None
                raise
        finally:
            sys.argv = argv
        return "exit 0"

    return go


def cli_cases(tmp: Path) -> Iterator[Case]:
    out = tmp / "cli_out"
    synth = ["synth", "--out", out]
    for option, value in (
        ("--patients", "0"), ("--patients", "-3"), ("--patients", "1e9x"), ("--prevalence", "nan"),
        ("--prevalence", "1.5"), ("--prevalence", "-0.1"), ("--size", "0x0"), ("--size", "8193x100"),
        ("--size", "1e3x500"), ("--size", "512"), ("--size", "-512x256"), ("--seed", "4294967296"),
        ("--seed", "abc"),
    ):  # fmt: skip
        yield Case("CLI option", f"synth {option} {value}", cli(*synth, option, value), ERROR)
    pre = ["preprocess", "--dataset", "rsna", "--root", tmp, "--out", out]
    for option, value in (
        ("--workers", "0"), ("--bits", "12"), ("--sheet-size", "-1"), ("--max-failed-share", "nan"),
        ("--max-failed-share", "2"), ("--decoder", "magic"), ("--backend", "spark"), ("--seed", "-5"),
        ("--dataset", "dicomx"),
    ):  # fmt: skip
        args = [a for a in pre if a != "rsna"] if option == "--dataset" else pre
        if option == "--dataset":
            args = ["preprocess", "--root", tmp, "--out", out]
        yield Case("CLI option", f"preprocess {option} {value}", cli(*args, option, value), ERROR)
    for command, option, value in (
        ("compare", "--n-boot", "0"), ("ensemble", "--n-boot", "-1"), ("fuse-train", "--folds", "1"),
        ("fuse-train", "--shap-rows", "5"), ("explain", "--n", "-1"), ("train", "--folds", "1"),
        ("train", "--epochs", "0"), ("train", "--batch-size", "0"), ("train", "--threads", "0"),
        ("train", "--device", "quantum"), ("patch-train", "--patch-size", "4"), ("demo", "--patients", "5"),
    ):  # fmt: skip
        args = [command, "--out", out, option, value]
        if command == "train":
            args += ["--cache", tmp]
        yield Case("CLI option", f"{command} {option} {value}", cli(*args), ERROR)


# cohort tables -------------------------------------------------------------------------------------------


def _rows(n_women: int = 3) -> list[list[str]]:
    rows = []
    for p in range(10, 10 + n_women):
        for i, (side, view) in enumerate([("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]):
            rows.append(["1", str(p), f"{p}{i}", side, view, "55", str(int(p == 10 and side == "L")), "49"])
    return rows


def table_case(
    tmp: Path, name: str, header: list[str], rows: list[list[str]], expect, raw: bytes | None = None
):
    from mammo_insight.cohort.adapters import load_cohort

    root = tmp / f"table_{abs(hash(name))}"
    root.mkdir()
    body = raw if raw is not None else ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode()
    (root / "train.csv").write_bytes(body)
    return Case("cohort table", name, lambda: load_cohort("rsna", root), expect)


def _valid(n_images: int, n_breasts: int) -> Callable[[object], bool]:
    return lambda c: len(c.table) == n_images and c.table["breast_id"].nunique() == n_breasts


def _with(column: int, value: str, row: int = 0) -> list[list[str]]:
    rows = _rows()
    rows[row][column] = value
    return rows


def table_cases(tmp: Path) -> Iterator[Case]:
    h = RSNA_HEADER
    yield table_case(tmp, "a valid table", h, _rows(), _valid(12, 6))
    for name, rows in (
        ("laterality X", _with(3, "X")),
        ("age 200", _with(5, "200")),
        ("age -1", _with(5, "-1")),
        ("cancer 2", _with(6, "2")),
        ("cancer yes", _with(6, "yes")),
        ("cancer inf", _with(6, "inf")),
        ("age nan text", _with(5, "old")),
        ("image_id with '..'", _with(2, "../../x")),
        ("image_id absolute", _with(2, "/etc/passwd")),
        ("image_id drive letter", _with(2, "C:x")),
        ("patient_id with '..'", _with(1, "..")),
        ("image_id with ESC", _with(2, "\x1b[2J")),
        ("image_id with a tab", _with(2, "a\tb")),
        ("patient_id 250 bytes of é", _with(1, "é" * 125)),
        ("duplicated image_id", _with(2, "101")),
        ("empty patient_id", _with(1, "")),
        ("empty laterality", _with(3, "")),
        ("density Z", None),
    ):
        if rows is None:
            rows = [[*r, "Z"] for r in _rows()]
            yield table_case(tmp, name, [*h, "density"], rows, ERROR)
            continue
        yield table_case(tmp, name, h, rows, ERROR)
    yield table_case(tmp, "header only", h, [], ERROR)
    yield table_case(tmp, "empty file", h, [], ERROR, raw=b"")
    yield table_case(tmp, "binary garbage", h, [], ERROR, raw=bytes(range(256)) * 4)
    yield table_case(tmp, "two cancer columns", [*h, "cancer"], [[*r, "1"] for r in _rows()], ERROR)
    yield table_case(tmp, "two site_id columns", [*h, "site_id"], [[*r, "2"] for r in _rows()], ERROR)
    yield table_case(tmp, "no image_id column", h[:2] + h[3:], [r[:2] + r[3:] for r in _rows()], ERROR)
    yield table_case(
        tmp,
        "prediction_id of the other side",
        [*h, "prediction_id"],
        [[*r, f"{r[1]}_L"] for r in _rows()],
        ERROR,
    )
    yield table_case(
        tmp, "prediction_id per image", [*h, "prediction_id"], [[*r, r[2]] for r in _rows()], ERROR
    )
    yield table_case(
        tmp, "prediction_id consistent", [*h, "prediction_id"], [[*r, f"b{r[1]}{r[3]}"] for r in _rows()],
        _valid(12, 6),
    )  # fmt: skip
    yield table_case(tmp, "UTF-8 BOM", h, [], _valid(12, 6), raw=_csv_bytes(h, _rows(), "utf-8-sig"))
    yield table_case(tmp, "UTF-16", h, [], lambda c: len(c.table) == 12, raw=_csv_bytes(h, _rows(), "utf-16"))
    yield table_case(
        tmp, "CRLF line ends", h, [], _valid(12, 6), raw=_csv_bytes(h, _rows()).replace(b"\n", b"\r\n")
    )
    yield table_case(
        tmp, "trailing blank lines", h, [], _valid(12, 6), raw=_csv_bytes(h, _rows()) + b"\n,,,,,,,\n\n"
    )
    yield table_case(
        tmp, "site_id holding a formula", h, _with(0, '=HYPERLINK("http://x")'),
        lambda c: c.table["site_id"].iloc[0].startswith("="),
    )  # fmt: skip
    yield table_case(tmp, "site_id holding ESC", h, _with(0, "\x1b[31m"), _valid(12, 6))
    yield table_case(tmp, "age with spaces", h, _with(5, " 55 "), lambda c: c.table["age"].iloc[0] == 55)
    yield table_case(tmp, "1,000 extra columns", [*h, *[f"x{i}" for i in range(1000)]],
                     [[*r, *["1"] * 1000] for r in _rows()], _valid(12, 6))  # fmt: skip
    conflict = _rows()
    conflict[4][6] = "1"  # 11_L: CC positive, MLO negative
    yield table_case(
        tmp, "breast labelled both 0 and 1", h, conflict,
        lambda c: c.table.groupby("breast_id")["cancer"].max().sum() == 2,
    )  # fmt: skip


def _csv_bytes(header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> bytes:
    return ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode(encoding)


# generic mappings ----------------------------------------------------------------------------------------


def mapping_cases(tmp: Path) -> Iterator[Case]:
    from mammo_insight.cohort.adapters import load_cohort

    root = tmp / "generic"
    root.mkdir()
    (root / "t.csv").write_text("pid,iid,side,label\n1,a,L,0\n1,b,R,1\n2,c,L,0\n")
    (tmp / "outside.csv").write_text("pid,iid,side,label\n1,a,L,0\n")
    (root / "link.csv").symlink_to(tmp / "outside.csv")
    (root / "folder.csv").mkdir()
    os.mkfifo(root / "fifo.csv")
    columns = '[columns]\npatient_id = "pid"\nimage_id = "iid"\nlaterality = "side"\ncancer = "label"\n'

    def case(name: str, body: str, expect, hole: bool = False) -> Case:
        path = root / f"m_{abs(hash(name))}.toml"
        path.write_text(body)
        return Case("generic mapping", name, lambda: load_cohort("generic", root, path), expect, hole)

    yield case("a valid mapping", 'csv = "t.csv"\n' + columns, _valid(3, 3))
    yield case("csv absolute", 'csv = "/etc/passwd"\n' + columns, ERROR, hole=True)
    yield case("csv ..", 'csv = "../outside.csv"\n' + columns, ERROR, hole=True)
    yield case("csv a link out", 'csv = "link.csv"\n' + columns, ERROR, hole=True)
    yield case("csv a folder", 'csv = "folder.csv"\n' + columns, ERROR)
    yield case("csv a FIFO", 'csv = "fifo.csv"\n' + columns, ERROR)
    yield case("csv missing", 'csv = "nope.csv"\n' + columns, ERROR)
    yield case("no csv key", columns, ERROR)
    yield case("csv a number", "csv = 3\n" + columns, ERROR)
    yield case("unknown key", 'csv = "t.csv"\nfoo = 1\n' + columns, ERROR)
    yield case(
        "column missing from the table", 'csv = "t.csv"\n' + columns.replace('"label"', '"nope"'), ERROR
    )
    yield case("columns a string", 'csv = "t.csv"\ncolumns = "pid"\n', ERROR)
    yield case("nested 20,000 deep", 'csv = "t.csv"\nx = ' + "[" * 20000 + "]" * 20000 + "\n", ERROR)
    yield case("invalid TOML", 'csv = "t.csv\n', ERROR)
    yield case("latin-1 bytes", 'csv = "t.csv"\n# \xe9\n' + columns, _valid(3, 3))
    yield case("sep of two characters", 'csv = "t.csv"\nsep = ";;"\n' + columns, ERROR)
    yield case(
        "image_path_format out of the root",
        'csv = "t.csv"\nimage_path_format = "../../{iid}.png"\n' + columns, ERROR, hole=True,
    )  # fmt: skip


# image files ---------------------------------------------------------------------------------------------


def image_cases(tmp: Path) -> Iterator[Case]:
    import cv2
    import pydicom

    from mammo_insight.imaging.pipeline import PreprocessConfig, process_one
    from mammo_insight.synth.cohort import make_synthetic_cohort

    make_synthetic_cohort(tmp / "synth", n_patients=3, seed=7, size=(64, 48))
    source = min((tmp / "synth" / "train_images").rglob("*.dcm"))
    folder = tmp / "images"
    folder.mkdir()
    cache = tmp / "image_cache"
    config = PreprocessConfig(size=(64, 48)).to_dict()

    def one(path: Path) -> Callable[[], object]:
        task = {"image_id": path.stem, "patient_id": "p", "image_path": str(path), "image_root": str(folder),
                "cache_dir": str(cache), "config": config, "thumbnail": False}  # fmt: skip
        return lambda: process_one(task)

    def failed(record: dict) -> bool:
        """A failures row whose reason names the file and says what is wrong (not a bare exception)."""
        reason = record["reason"] or ""
        bare = re.match(r"^[^:]*: [A-Z]\w*(Error|Exception|Warning): ", reason)
        return record["status"] == "failed" and reason.startswith(record["source_path"]) and not bare

    def ok(record: dict) -> bool:
        return record["status"] == "ok"

    def dicom(
        name: str, edit: Callable[[pydicom.Dataset], None], expect=failed, window: bool = False
    ) -> Case:
        ds = pydicom.dcmread(source)
        ds.decompress()  # native pixel data: every edit below can be written
        if window:
            del ds.VOILUTSequence  # a VOI LUT takes precedence over the window (PS3.3 C.11.2)
        edit(ds)
        path = folder / f"{name}.dcm"
        ds.save_as(path)
        return Case("image file", name, one(path), expect)

    def png(name: str, pixels: np.ndarray | None, expect=failed, raw: bytes | None = None) -> Case:
        path = folder / f"{name}.png"
        if raw is not None:
            path.write_bytes(raw)
        else:
            cv2.imwrite(str(path), pixels)
        return Case("image file", name, one(path), expect)

    rng = np.random.default_rng(0)
    yield dicom("dicom unchanged", lambda d: None, ok)
    yield dicom("window width 0", lambda d: setattr(d, "WindowWidth", 0), window=True)
    yield dicom("window width -5", lambda d: setattr(d, "WindowWidth", -5), window=True)
    yield dicom("window width nan", lambda d: setattr(d, "WindowWidth", math.nan), window=True)
    yield dicom(
        "window center 1e30",
        lambda d: (setattr(d, "WindowCenter", 1e30), setattr(d, "VOILUTFunction", "LINEAR")),
        window=True,
    )
    yield dicom("slope 0", lambda d: setattr(d, "RescaleSlope", 0))
    yield dicom("slope inf", lambda d: setattr(d, "RescaleSlope", math.inf))
    yield dicom(
        "slope 1e-30",
        lambda d: (setattr(d, "RescaleSlope", 1e-30), setattr(d, "VOILUTFunction", "LINEAR")),
        window=True,
    )
    yield dicom(
        "intercept 1e9, linear window",
        lambda d: (setattr(d, "RescaleIntercept", 1e9), setattr(d, "VOILUTFunction", "LINEAR")),
        window=True,
    )
    yield dicom(
        "VOI function bogus",
        lambda d: setattr(d, "VOILUTFunction", "BOGUS"),
        lambda r: ok(r) or failed(r),
        window=True,
    )
    yield dicom("BitsStored 0", lambda d: setattr(d, "BitsStored", 0))
    yield dicom("BitsStored 20", lambda d: setattr(d, "BitsStored", 20))
    yield dicom("Rows 1", lambda d: setattr(d, "Rows", 1))
    yield dicom("Columns doubled", lambda d: setattr(d, "Columns", d.Columns * 2))
    yield dicom("photometric RGB", lambda d: setattr(d, "PhotometricInterpretation", "RGB"))
    yield dicom("photometric PALETTE", lambda d: setattr(d, "PhotometricInterpretation", "PALETTE COLOR"))
    yield dicom(
        "pixel data cut in half", lambda d: setattr(d, "PixelData", d.PixelData[: len(d.PixelData) // 2])
    )
    yield dicom("pixel data empty", lambda d: setattr(d, "PixelData", b""))
    yield dicom("no pixel data", lambda d: delattr(d, "PixelData"))
    yield dicom("samples per pixel 3", lambda d: setattr(d, "SamplesPerPixel", 3))
    yield dicom("number of frames 0", lambda d: setattr(d, "NumberOfFrames", 0), ok)  # pydicom: one frame
    yield png("png 1x5000", rng.integers(0, 255, (1, 5000), dtype=np.uint8))
    yield png("png 5x5", rng.integers(0, 255, (5, 5), dtype=np.uint8))
    yield png("png 7x4000 RGB", rng.integers(0, 255, (7, 4000, 3), dtype=np.uint8))
    yield png("png all zero", np.zeros((64, 48), np.uint8))
    yield png("png constant 16-bit", np.full((64, 48), 40000, np.uint16))
    yield png("png noise", rng.integers(0, 255, (64, 48), dtype=np.uint8), ok)
    yield png("png RGBA noise", rng.integers(0, 255, (64, 48, 4), dtype=np.uint8), ok)
    yield png(
        "png truncated",
        None,
        raw=cv2.imencode(".png", rng.integers(0, 255, (64, 48), dtype=np.uint8))[1].tobytes()[:60],
    )
    yield png("png empty file", None, raw=b"")
    yield png("png that is text", None, raw=b"hello, not an image\n" * 10)
    (folder / "a folder.dcm").mkdir()
    yield Case("image file", "a folder named .dcm", one(folder / "a folder.dcm"),
               lambda r: failed(r) and "folder" in r["reason"])  # fmt: skip
    os.mkfifo(folder / "fifo.dcm")
    yield Case("image file", "a FIFO named .dcm", one(folder / "fifo.dcm"),
               lambda r: failed(r) and "regular file" in r["reason"])  # fmt: skip
    (folder / "link.dcm").symlink_to(source)
    yield Case("image file", "a link out of the root", one(folder / "link.dcm"),
               lambda r: failed(r) and "outside the image root" in r["reason"], hole=True)  # fmt: skip
    yield from lying_cases(source, folder, one, failed, ok)
    yield from folder_link_cases(tmp)


def lying_cases(source: Path, folder: Path, one, failed, ok) -> Iterator[Case]:
    """DICOMs whose header lies about their content: the reason must name the mismatch (or the element
    whose length is bad), not a symptom ("no pixel data", a decoder's exception)."""
    import lying_dicom as lie
    import pydicom

    body = pydicom.dcmread(source)
    body.decompress()  # native pixel data under whatever header the case claims

    def case(name: str, path: Path, words: str | None) -> Case:
        expect = ok if words is None else (lambda r: failed(r) and words in r["reason"])
        return Case("image file", name, one(path), expect)

    for syntax, label in ((lie.J2K_LOSSLESS, "JPEG 2000"), (lie.JPEG_LS_LOSSLESS, "JPEG-LS"),
                          (lie.JPEG_LOSSLESS_SV1, "JPEG lossless"), (lie.RLE, "RLE")):  # fmt: skip
        path = lie.write_lying(folder / f"native under {label}.dcm", body, syntax)
        yield case(f"{label} syntax over native pixel data", path, "but the pixel data is native")
    for start, label in ((lie.J2K_START, "JPEG 2000"), (lie.LOSSLESS_JPEG_START, "lossless JPEG")):
        fragments = lie.encapsulated_body(start + bytes(60))
        path = lie.write_lying(folder / f"{label} fragments under native.dcm", fragments, lie.EXPLICIT_LE)
        yield case(f"native syntax over {label} fragments", path, "but the pixel data is encapsulated")
    path = lie.write_lying(folder / "little under big.dcm", body, lie.EXPLICIT_BE)
    yield case("big-endian syntax over a little-endian data set", path, "written Explicit VR Little Endian")
    path = lie.write_lying(folder / "plain under deflated.dcm", body, lie.DEFLATED)
    yield case("deflated syntax over a data set not deflated", path, "not deflated")
    for length in (200, 3):
        path = lie.set_rows_length(
            lie.write_lying(folder / f"rows {length}.dcm", body, lie.EXPLICIT_LE), length
        )
        yield case(f"Rows element length {length}", path, "bad element length: (0028,0010) Rows")
    path = lie.write_lying(folder / "explicit under implicit.dcm", body, "1.2.840.10008.1.2")
    yield case("implicit syntax over an explicit data set (pydicom reads it right)", path, None)
    path = lie.write_lying(folder / "long pixel length.dcm", body, lie.EXPLICIT_LE)
    lie.set_pixel_data_length(path, 0xFFFFFFF0)
    yield case("pixel data length past the end of a whole file", path, None)


def folder_link_cases(tmp: Path) -> Iterator[Case]:
    """predict's folder mode: the folder links a user makes are followed (the folder itself, a folder
    directly in it); a folder link deeper down that leads out is refused by name, never read."""
    from mammo_insight.cohort.adapters.dicom import folder_cohort

    mounted = sorted((tmp / "synth" / "train_images").iterdir())
    project = tmp / "linked_project"
    shutil.copytree(mounted[2], project / mounted[2].name)  # a plain folder beside the links
    (project / mounted[0].name).symlink_to(mounted[0], target_is_directory=True)
    (project / "site").mkdir()
    (project / "site" / mounted[1].name).symlink_to(mounted[1], target_is_directory=True)
    (tmp / "linked_studies").symlink_to(project, target_is_directory=True)
    expected = {p.stem for folder in (mounted[0], mounted[2]) for p in folder.glob("*.dcm")}

    def scan() -> object:
        return folder_cohort(tmp / "linked_studies")

    yield Case("folder link", "the folder given and a patient folder in it are links", scan,
               lambda r: set(r[0].table["image_id"]) == expected)  # fmt: skip
    linked_out = {p.stem for p in mounted[1].glob("*.dcm")}
    yield Case("folder link", "a patient folder linked out two levels down is not read", scan,
               lambda r: not linked_out & set(r[0].table["image_id"]), hole=True)  # fmt: skip
    yield Case("folder link", "... and is listed as refused, not dropped unseen", scan,
               lambda r: list(r[1]["file"]) == [f"site/{mounted[1].name}"] and "outside" in r[1]["reason"][0])  # fmt: skip


# run folders ---------------------------------------------------------------------------------------------


def run_cases(tmp: Path) -> Iterator[Case]:
    from mammo_insight.runs.run_io import load_run_config

    def run(name: str, text: str | None, expect=ERROR) -> Case:
        folder = tmp / f"run_{abs(hash(name))}"
        folder.mkdir()
        if text is not None:
            (folder / "config.json").write_text(text)
        return Case("run folder", name, lambda: load_run_config(folder), expect)

    yield run("config.json missing", None)
    yield run("config.json empty", "")
    yield run("config.json a list", "[1, 2]")
    yield run("config.json null", "null")
    yield run("config.json nested 100,000 deep", "[" * 100000 + "]" * 100000)
    yield run("config.json NaN text", '{"model": NaN}', lambda c: isinstance(c, dict))
    yield run(
        "config.json latin-1", '{"model": "\xe9"}'.encode("latin-1").decode("latin-1"), lambda c: "model" in c
    )
    folder = tmp / "run_folder_config"
    (folder / "config.json").mkdir(parents=True)
    yield Case("run folder", "config.json a folder", lambda: load_run_config(folder), ERROR)


# terminal and spreadsheet output -------------------------------------------------------------------------


def output_cases(tmp: Path) -> Iterator[Case]:
    from mammo_insight.files import write_csv_atomic

    def terminal(name: str, *args: object) -> Case:
        def go() -> str:
            from mammo_insight.cli.app import main

            argv, sys.argv = sys.argv, ["mammo-insight", *map(str, args)]
            err, out = io.StringIO(), io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                    main()
            except SystemExit:
                pass
            finally:
                sys.argv = argv
            return out.getvalue() + err.getvalue()

        return Case("terminal", name, go, lambda text: "\x1b" not in text and "\x9b" not in text, hole=True)

    root = tmp / "esc"
    root.mkdir()
    rows = _rows()
    for r in rows:
        r[0], r[7] = "\x1b[2J\x1b[31mPWN", "\x9b31m"
    (root / "train.csv").write_bytes(_csv_bytes(RSNA_HEADER, rows))
    yield terminal(
        "cohort of ESC sites", "cohort", "--dataset", "rsna", "--root", root, "--out", tmp / "c.parquet"
    )
    yield terminal(
        "preprocess of ESC sites",
        "preprocess",
        "--dataset",
        "rsna",
        "--root",
        root,
        "--out",
        tmp / "esc_cache",
    )
    yield terminal(
        "a root named with ESC",
        "cohort",
        "--dataset",
        "rsna",
        "--root",
        tmp / "\x1b[2J",
        "--out",
        tmp / "d.parquet",
    )
    yield terminal(
        "a mapping named with ESC",
        "cohort",
        "--dataset",
        "generic",
        "--root",
        root,
        "--mapping",
        tmp / "\x1b[5m.toml",
        "--out",
        tmp / "e.parquet",
    )

    def csv_case(name: str, value: str) -> Case:
        path = tmp / f"csv_{abs(hash(name))}.csv"

        def go() -> str:
            write_csv_atomic(path, pd.DataFrame({"site": [value], "n": [-1]}))
            return path.read_text()

        return Case(
            "spreadsheet", name, go, lambda text: "\n" + value[:1] not in text and ",-1" in text, hole=True
        )

    for value in (
        '=HYPERLINK("http://x","y")',
        "+cmd|' /C calc'!A0",
        "-2+3+cmd",
        "@SUM(1+1)*cmd",
        "\t=1+1",
        "\r=1+1",
    ):
        yield csv_case(f"formula {value[:12]!r}", value)


KINDS = (option_cases, cli_cases, table_cases, mapping_cases, image_cases, run_cases, output_cases)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=int, default=0, help="print this many outcomes with their messages")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)  # the corpus reads outcomes, not the stages' warnings
    with tempfile.TemporaryDirectory() as tmp:
        cases = [case for make in KINDS for case in make(Path(tmp))]
        outcomes = [(case, *classify(case)) for case in cases]
    totals = Counter(category for _, category, _ in outcomes)
    by_kind: dict[str, Counter] = {}
    for case, category, _ in outcomes:
        by_kind.setdefault(case.kind, Counter())[category] += 1
    print(f"{len(outcomes)} cases")
    print("| kind | " + " | ".join(CATEGORIES) + " |")
    print("|---|" + "---|" * len(CATEGORIES))
    for kind, counts in by_kind.items():
        print(f"| {kind} | " + " | ".join(str(counts[c]) for c in CATEGORIES) + " |")
    print("| **total** | " + " | ".join(str(totals[c]) for c in CATEGORIES) + " |")
    bad = [(c, cat, msg) for c, cat, msg in outcomes if cat in ("traceback", "silent wrong", "hole")]
    for case, category, message in bad + [o for o in outcomes if o not in bad][: args.show]:
        print(f"- [{category}] {case.kind}: {case.name!r}: {message!r}")
    print(json.dumps({c: totals[c] for c in CATEGORIES}))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
