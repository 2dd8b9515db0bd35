"""The preprocess stage on the synthetic cohort (true breast boxes known) and on damaged files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.schema import Cohort, validate_cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.annotations import read as read_annotations
from mammo_insight.imaging.build import JOURNAL_FILE, Engine, build_cache
from mammo_insight.imaging.cache import (
    CACHE_COLUMNS,
    load_cache_image,
    read_cache_config,
    read_cache_index,
)
from mammo_insight.imaging.geometry import CacheGeometry
from mammo_insight.imaging.pipeline import PreprocessConfig

SIZE = (96, 48)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("imaging_synth")
    make_synthetic_cohort(root, n_patients=5, seed=7, size=(128, 96), prevalence=0.6)
    return root


@pytest.fixture(scope="module")
def cohort(synth_root) -> Cohort:
    return load_cohort("rsna", synth_root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cohort) -> Path:
    """An uninterrupted run, the yardstick for resumed ones."""
    out = tmp_path_factory.mktemp("imaging_ref")
    build_cache(cohort, out, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=4)
    return out


def _png_bytes(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted((cache / "images").rglob("*.png"))}


def test_every_synthetic_image_is_cached_with_the_contract(reference, cohort) -> None:
    index = read_cache_index(reference)
    assert len(index) == len(cohort.table)
    assert list(index.columns[-len(CACHE_COLUMNS) :]) == CACHE_COLUMNS
    assert set(index["status"]) == {"ok"}
    syntaxes = set(index["transfer_syntax"])
    assert any("2000" in s for s in syntaxes) and any("Process 14" in s for s in syntaxes)
    assert "RLE Lossless" in syntaxes and "Explicit VR Little Endian" in syntaxes
    assert set(index["photometric"]) == {"MONOCHROME1", "MONOCHROME2"}
    config = read_cache_config(reference)
    assert config["size"] == list(SIZE) and config["dataset"] == "rsna" and config["label_meaning"]
    assert (reference / "contact_sheet.png").is_file()
    assert pd.read_csv(reference / "failures.csv").empty
    image = load_cache_image(reference, index.iloc[0])
    assert image.shape == SIZE and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1


def test_crop_holds_the_true_breast_box_and_little_else(reference, synth_root) -> None:
    index = read_cache_index(reference)
    truth = pd.read_csv(synth_root / "breast_boxes.csv", dtype={"image_id": str})
    m = index.merge(truth, on="image_id")
    assert len(m) == len(index)
    cut = np.maximum.reduce([m.crop_x0 - m.x0, m.crop_y0 - m.y0, m.x1 - m.crop_x1, m.y1 - m.crop_y1]).astype(
        int
    )
    assert (cut <= 0).all(), m.loc[
        cut > 0, ["image_id", "x0", "y0", "x1", "y1", "crop_x0", "crop_y0", "crop_x1", "crop_y1"]
    ]
    ratio = ((m.crop_x1 - m.crop_x0) * (m.crop_y1 - m.crop_y0) / ((m.x1 - m.x0) * (m.y1 - m.y0))).astype(
        float
    )
    assert ratio.max() < 1.35


def test_flip_puts_every_chest_wall_on_the_left(reference) -> None:
    index = read_cache_index(reference)
    # the synthetic cohort draws right breasts against the right edge, as RSNA stores most of them
    assert (index["flipped"] == (index["laterality"] == "R")).all()
    for _, row in index.iterrows():
        image = load_cache_image(reference, row)
        cols = image.mean(axis=0)
        assert cols[: SIZE[1] // 4].mean() > cols[-SIZE[1] // 4 :].mean()


def test_tissue_is_bright_on_dark_for_every_dicom_variant(reference, synth_root, cohort) -> None:
    """Whatever the photometric, VOI form (LINEAR, SIGMOID, LUT Sequence) or rescale, tissue is bright on dark."""
    from mammo_insight.imaging.decode import read_image
    from mammo_insight.imaging.intensity import display_lut, lut_index

    truth = pd.read_csv(synth_root / "breast_boxes.csv", dtype={"image_id": str}).set_index("image_id")
    seen = set()
    for row in cohort.table.itertuples():
        raw = read_image(row.image_path)
        ds = raw.header
        seen.add((raw.photometric, str(ds.get("VOILUTFunction", "LUT" if "VOILUTSequence" in ds else "-"))))
        display = (
            display_lut(ds, raw.pixels.dtype, raw.pixels, raw.photometric)[lut_index(raw.pixels)] / 65535
        )
        box = truth.loc[row.image_id]
        w, h = box.x1 - box.x0, box.y1 - box.y0
        centre = display[box.y0 + h // 4 : box.y1 - h // 4, box.x0 + w // 4 : box.x1 - w // 4]
        outside = np.ones(display.shape, bool)
        outside[box.y0 : box.y1, box.x0 : box.x1] = False
        assert np.median(centre) > np.median(display[outside]) + 0.2, (row.image_id, raw.photometric)
    assert {p for p, _ in seen} == {"MONOCHROME1", "MONOCHROME2"}
    assert {"LINEAR", "SIGMOID", "LUT"} <= {f for _, f in seen} | {"LUT"} and len(seen) >= 4
    index = read_cache_index(reference)
    for _, row in index.iterrows():  # the canvas right of the resized crop is padding: exactly 0
        geom = CacheGeometry.from_row(row)
        padding = load_cache_image(reference, row)[:, geom.pad_x + geom.resized_width :]
        assert padding.size == 0 or padding.max() == 0


def test_annotations_follow_the_geometry(reference, cohort) -> None:
    lesions = read_annotations(reference)
    assert len(lesions) == len(cohort.annotations) > 0
    index = read_cache_index(reference).set_index("image_id")
    for rec in lesions.itertuples():
        geom = CacheGeometry.from_row(index.loc[rec.image_id])
        u, v = geom.to_cache(rec.x, rec.y)
        assert (u, v) == pytest.approx((rec.cache_x, rec.cache_y))
        assert 0 <= rec.cache_x < SIZE[1] and 0 <= rec.cache_y < SIZE[0]
        assert load_cache_image(reference, index.loc[rec.image_id])[int(rec.cache_y), int(rec.cache_x)] > 0.2


def test_sixteen_bit_cache_matches_eight_bit(tmp_path, cohort, reference) -> None:
    small = Cohort(cohort.table.head(3), cohort.dataset, cohort.label_meaning)
    build_cache(small, tmp_path, PreprocessConfig(size=SIZE, bits=16), show_progress=False, sheet_size=0)
    for _, row in read_cache_index(tmp_path).iterrows():
        a = load_cache_image(tmp_path, row)
        b = load_cache_image(reference, row)
        assert np.abs(a - b).max() <= 1 / 255 + 1e-6
        assert len(np.unique(a)) > len(np.unique(b))


def test_every_adapter_column_reaches_the_index(tmp_path, cohort) -> None:
    """A second label, is_augmented and external_only travel from the cohort into index.parquet."""
    table = cohort.table.head(4).copy()
    table["second_label"] = [1.0, 0.0, None, 1.0]
    table["is_augmented"] = pd.array([True, None, False, None], dtype="boolean")
    table["external_only"] = pd.array([None, True, None, None], dtype="boolean")
    table["scanner_note"] = ["a", "b", None, "d"]
    extra = Cohort(validate_cohort(table), cohort.dataset, cohort.label_meaning)
    build_cache(extra, tmp_path, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0)
    index = read_cache_index(tmp_path, include_failed=True)
    extras = ["second_label", "is_augmented", "external_only", "scanner_note"]
    assert list(index.columns) == [
        *table.columns[: len(table.columns) - len(extras)],
        *extras,
        *CACHE_COLUMNS,
    ]
    for col in extras:
        pd.testing.assert_series_equal(index[col], table[col].reset_index(drop=True), check_dtype=False)
    from mammo_insight.cohort.folds import train_only_mask

    assert train_only_mask(index).tolist() == [True, True, False, False]


def test_a_cohort_column_named_like_a_cache_column_is_refused_up_front(tmp_path, cohort) -> None:
    clash = Cohort(cohort.table.head(2).assign(status="x"), cohort.dataset, cohort.label_meaning)
    with pytest.raises(MammoInsightError, match="status"):
        build_cache(clash, tmp_path, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0)
    assert not (tmp_path / "index.parquet").exists()


def _bad_files(tmp: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """image_id -> (file, words its reason must contain)."""
    data = good.read_bytes()
    truncated = tmp / "truncated.dcm"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    corrupt = tmp / "corrupt.dcm"
    ds = pydicom.dcmread(good)
    start = data.index(b"\xff\x4f\xff\x51")  # JPEG 2000 codestream: SOC then SIZ
    garbled = bytearray(data)
    garbled[start : start + 48] = np.random.default_rng(0).integers(0, 256, 48, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(garbled))
    not_dicom = tmp / "not_dicom.dcm"
    not_dicom.write_text("patient_id,image_id\n1,2\n")
    no_pixels = tmp / "no_pixels.dcm"
    del ds.PixelData
    ds.save_as(no_pixels)
    return {
        "bad_truncated": (truncated, "decoded"),
        "bad_corrupt": (corrupt, "decoded"),
        "bad_not_dicom": (not_dicom, "not a DICOM"),
        "bad_no_pixels": (no_pixels, "no pixel data"),
        "bad_missing": (tmp / "gone.dcm", "not found"),
    }


def test_bad_files_are_listed_and_the_rest_is_cached(tmp_path, cohort) -> None:
    table = cohort.table
    j2k = table[
        [
            ("2000" in pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
            for p in table["image_path"]
        ]
    ].iloc[0]
    bad = _bad_files(tmp_path, Path(j2k["image_path"]))
    rows = []
    for image_id, (path, _) in bad.items():
        row = j2k.copy()
        row["image_id"], row["image_path"] = image_id, str(path)
        rows.append(row)
    good = table.head(4)
    mixed = Cohort(validate_cohort(pd.concat([good, pd.DataFrame(rows)], ignore_index=True)), "rsna", "test")
    summary = build_cache(
        mixed, tmp_path / "cache", PreprocessConfig(size=SIZE), show_progress=False, sheet_size=2
    )
    assert summary["ok"] == len(good) and summary["failed"] == len(bad)
    failures = pd.read_csv(tmp_path / "cache" / "failures.csv").set_index("image_id")
    assert set(failures.index) == set(bad)
    for image_id, (path, words) in bad.items():
        reason = failures.loc[image_id, "reason"]
        assert words in reason and path.name in reason, reason
    index = read_cache_index(tmp_path / "cache", include_failed=True)
    assert (index.set_index("image_id").loc[list(bad), "status"] == "failed").all()
    assert index.set_index("image_id").loc[list(bad), "cache_path"].isna().all()


def test_resume_after_partial_run_redoes_only_the_missing(tmp_path, cohort, reference) -> None:
    config = PreprocessConfig(size=SIZE)
    out = tmp_path / "cache"
    build_cache(cohort, out, config, show_progress=False, sheet_size=4)
    lines = (out / JOURNAL_FILE).read_text().splitlines(keepends=True)
    keep, lost = lines[:5], lines[5:]
    # a kill leaves: a journal cut mid-line, a half-written temp PNG, PNGs whose journal line never came
    (out / JOURNAL_FILE).write_text("".join(keep) + lost[0][:17])
    first_lost = json.loads(lost[0])
    (out / first_lost["cache_path"]).unlink()
    (out / "images" / ".half.tmp").write_bytes(b"\x89PNG\r\n")
    for name in ("index.parquet", "failures.csv", "annotations.parquet", "contact_sheet.png"):
        (out / name).unlink()
    kept_ids = [json.loads(line)["cache_path"] for line in keep]
    mtimes = {p: os.stat(out / p).st_mtime_ns for p in kept_ids}
    time.sleep(0.01)
    summary = build_cache(cohort, out, config, show_progress=False, sheet_size=4)
    assert summary["already_done"] == len(keep)
    assert summary["processed_now"] == len(cohort.table) - len(keep)
    assert {p: os.stat(out / p).st_mtime_ns for p in kept_ids} == mtimes
    pd.testing.assert_frame_equal(read_cache_index(out), read_cache_index(reference))
    pd.testing.assert_frame_equal(read_annotations(out), read_annotations(reference))
    assert _png_bytes(out) == _png_bytes(reference)


@pytest.mark.slow
def test_kill_mid_run_then_rerun_equals_uninterrupted(tmp_path, synth_root, reference) -> None:
    out = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "mammo_insight.cli.app",
        "preprocess",
        "--dataset",
        "rsna",
        "--root",
        str(synth_root),
        "--out",
        str(out),
        "--size",
        f"{SIZE[0]}x{SIZE[1]}",
        "--workers",
        "1",
        "--sheet-size",
        "4",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / JOURNAL_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    done_before = journal.read_text().count("\n")
    n_images = len(read_cache_index(reference))
    if proc.returncode == 0 or done_before >= n_images:
        pytest.skip("the run finished before it could be killed")
    assert not (out / "index.parquet").exists()
    rerun = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"already_done: {done_before}" in rerun.stdout
    pd.testing.assert_frame_equal(read_cache_index(out), read_cache_index(reference))
    assert _png_bytes(out) == _png_bytes(reference)


def test_changed_settings_refuse_to_resume(tmp_path, cohort) -> None:
    from mammo_insight.errors import MammoInsightError

    small = Cohort(cohort.table.head(2), cohort.dataset, cohort.label_meaning)
    build_cache(small, tmp_path, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0)
    with pytest.raises(MammoInsightError, match="size"):
        build_cache(small, tmp_path, PreprocessConfig(size=(64, 64)), show_progress=False, sheet_size=0)


def _same_as_reference(cohort, reference, tmp_path, engine: str) -> None:
    small = Cohort(cohort.table.head(6), cohort.dataset, cohort.label_meaning, cohort.annotations)
    out = tmp_path / engine
    build_cache(small, out, PreprocessConfig(size=SIZE), Engine(2, engine), show_progress=False, sheet_size=0)
    pd.testing.assert_frame_equal(read_cache_index(out), read_cache_index(reference).head(6))
    for rel, data in _png_bytes(out).items():
        assert (reference / rel).read_bytes() == data


@pytest.mark.slow
def test_process_pool_gives_the_same_cache(tmp_path, cohort, reference) -> None:
    _same_as_reference(cohort, reference, tmp_path, "local")


def test_cli_writes_the_cache(tmp_path, synth_root) -> None:
    from typer.testing import CliRunner

    from mammo_insight.cli.app import app

    out = tmp_path / "cache"
    result = CliRunner().invoke(
        app,
        [
            "preprocess",
            "--dataset",
            "rsna",
            "--root",
            str(synth_root),
            "--out",
            str(out),
            "--size",
            "64x32",
            "--no-flip",
            "--bits",
            "16",
            "--sheet-size",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    index = read_cache_index(out)
    assert not index["flipped"].any() and (index["out_width"] == 32).all()
    # without flipping, right breasts keep their chest wall on the right edge of the canvas
    right = index[index["laterality"] == "R"]
    assert (
        (right["pad_x"] + [CacheGeometry.from_row(r).resized_width for _, r in right.iterrows()]) == 32
    ).all()
    assert read_cache_config(out)["flip"] is False and read_cache_config(out)["bits"] == 16
    assert PreprocessConfig.from_cache(out) == PreprocessConfig(size=(64, 32), bits=16, flip=False)
    shutil.rmtree(out)
