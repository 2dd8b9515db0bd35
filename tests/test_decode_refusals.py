"""Small hostile files: a PNG decompression bomb, WindowWidth 0, an unreadable mini-MIAS film."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.schema import Cohort, validate_cohort
from mammo_insight.errors import DicomError
from mammo_insight.imaging.build import build_cache
from mammo_insight.imaging.decode import read_image
from mammo_insight.imaging.pipeline import PreprocessConfig

SIZE = (64, 32)


def _film(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = np.zeros((96, 64), np.uint8)
    image[10:86, :40] = rng.integers(80, 220, size=(76, 40))
    cv2.imwrite(str(path), image)
    return path


def _bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A small valid PNG whose header then claims width x height pixels."""
    data = bytearray(_film(path, 0).read_bytes())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(data))
    return path


def test_a_png_claiming_20000_by_20000_is_refused_from_its_header(tmp_path) -> None:
    with pytest.raises(DicomError, match=r"bomb.png: the header claims"):
        read_image(_bomb(tmp_path / "bomb.png"))


def test_an_unreadable_mias_film_becomes_a_failures_row(tmp_path) -> None:
    root = tmp_path / "mias"
    root.mkdir()
    (root / "Info.txt").write_text("mdb001 G CIRC B 30 40 5\nmdb002 F NORM\nmdb003 D CIRC M 20 30 4\n")
    _bomb(root / "mdb001.png")
    _film(root / "mdb002.png", 1)
    _film(root / "mdb003.png", 2)
    cohort = load_cohort("mias", root)
    assert len(cohort.table) == 3 and set(cohort.annotations["image_id"]) == {"mdb003"}
    summary = build_cache(
        cohort, tmp_path / "c", PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0
    )
    assert summary["ok"] == 2 and summary["failed"] == 1
    failures = pd.read_csv(tmp_path / "c" / "failures.csv")
    assert failures["image_id"].tolist() == ["mdb001"]
    reason = failures["reason"][0]
    assert "mdb001.png: the header claims" in reason and "\n" not in reason


@pytest.mark.slow
def test_window_width_zero_names_the_file(tmp_path) -> None:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path / "root"
    make_synthetic_cohort(root, n_patients=1, seed=1, size=(64, 48), prevalence=0.5)
    cohort = load_cohort("rsna", root)
    row = cohort.table.iloc[0].copy()
    ds = pydicom.dcmread(row["image_path"])
    ds.decompress()
    ds.WindowWidth = 0
    ds.VOILUTFunction = "LINEAR"
    if "VOILUTSequence" in ds:
        del ds.VOILUTSequence
    path = tmp_path / "width0.dcm"
    ds.save_as(path)
    row["image_id"], row["image_path"] = "width0", str(path)
    bad = Cohort(validate_cohort(pd.DataFrame([row])), "rsna", "t")
    build_cache(bad, tmp_path / "c", PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0)
    reason = pd.read_csv(tmp_path / "c" / "failures.csv")["reason"][0]
    assert str(path) in reason and "VOI" in reason, reason
