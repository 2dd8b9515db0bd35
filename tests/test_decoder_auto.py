"""`--decoder auto` (the default): the fastest installed decoder per transfer syntax, same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammo_insight.imaging import decode
from mammo_insight.imaging.decode import auto_backend, auto_choices, available_backends, read_image
from mammo_insight.stages.preprocess import PreprocessStageConfig

JPEG_LOSSLESS = "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])"


@pytest.fixture(scope="module")
def synth_files(tmp_path_factory) -> dict[str, Path]:
    """One synthetic DICOM per transfer syntax RSNA uses."""
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("decoder_auto")
    make_synthetic_cohort(root, n_patients=4, seed=2, size=(96, 64))
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*.dcm")):
        files.setdefault(
            pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name, path
        )
    return files


def test_auto_follows_the_measured_order_among_installed_decoders(monkeypatch):
    monkeypatch.setattr(decode, "available_backends", lambda: ["dicomsdl", "pydicom", "gdcm"])
    assert auto_backend(JPEG_LOSSLESS) == "dicomsdl" and auto_backend("RLE Lossless") == "pydicom"
    monkeypatch.setattr(decode, "available_backends", lambda: ["pydicom", "gdcm"])
    assert auto_backend(JPEG_LOSSLESS) == "gdcm"
    assert auto_backend("JPEG 2000 Image Compression (Lossless Only)") == "pydicom"
    monkeypatch.setattr(decode, "available_backends", lambda: ["pydicom"])
    assert set(auto_choices().values()) == {"pydicom"}


def test_auto_is_the_default_and_is_resolved_per_file(synth_files, monkeypatch):
    assert PreprocessStageConfig(dataset="rsna", root=Path("."), out=Path(".")).pixels().decoder == "auto"
    used: list[str] = []
    real = decode._decode

    def recording(ds, path, backend):
        used.append(backend)
        return real(ds, path, backend)

    monkeypatch.setattr(decode, "_decode", recording)
    for name, path in synth_files.items():
        got = read_image(path, "auto")
        assert used[-1] == auto_backend(name) and got.transfer_syntax == name
        assert np.array_equal(got.pixels, read_image(path, "pydicom").pixels), name


@pytest.mark.parametrize("backend", ["gdcm", "dicomsdl"])
def test_fast_extra_decoders_chosen_by_auto_decode_identically(backend, synth_files):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed (extra `fast`)")
    chosen = [name for name in synth_files if auto_backend(name) == backend]
    for name in chosen:
        ref = read_image(synth_files[name], "pydicom").pixels
        assert np.array_equal(read_image(synth_files[name], "auto").pixels, ref), name
    if backend == "dicomsdl":
        assert JPEG_LOSSLESS in chosen  # 3.5x pydicom's speed there: auto must use it
