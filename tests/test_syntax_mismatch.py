"""A DICOM whose transfer syntax does not match its content (issue 31): the failure names the file and the
mismatch ("transfer syntax X but the pixel data is Y"), or the element whose length is bad, never a
symptom such as "no pixel data", "file not found" or a decoder's exception."""

from __future__ import annotations

import pandas as pd
import pydicom
import pytest
from lying_dicom import (
    DEFLATED,
    EXPLICIT_BE,
    EXPLICIT_LE,
    J2K_LOSSLESS,
    J2K_START,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    LOSSLESS_JPEG_START,
    RLE,
    encapsulated_body,
    native_body,
    set_rows_length,
    write_lying,
)

from mammo_insight.errors import DicomError
from mammo_insight.imaging.decode import read_image


@pytest.mark.parametrize(
    ("syntax", "name"),
    [
        (J2K_LOSSLESS, "JPEG 2000 Image Compression (Lossless Only)"),
        (JPEG_LS_LOSSLESS, "JPEG-LS Lossless Image Compression"),
        (JPEG_LOSSLESS_SV1, "JPEG Lossless, Non-Hierarchical, First-Order Prediction"),
        (RLE, "RLE Lossless"),
    ],
    ids=["jpeg2000", "jpeg-ls", "jpeg-lossless", "rle"],
)
def test_a_compressed_syntax_over_native_pixel_data_is_named(syntax, name, tmp_path):
    path = write_lying(tmp_path / "x.dcm", native_body(), syntax)
    with pytest.raises(DicomError) as caught:
        read_image(path, "auto")
    message = str(caught.value)
    assert message.startswith(f"{path}: transfer syntax {name}"), message
    assert "but the pixel data is native (6144 uncompressed bytes" in message and "\n" not in message


@pytest.mark.parametrize(
    ("fragment", "codec"),
    [(J2K_START + bytes(60), "a JPEG 2000 codestream"), (LOSSLESS_JPEG_START + bytes(60), "a lossless JPEG")],
    ids=["jpeg2000", "jpeg-lossless"],
)
def test_a_native_syntax_over_encapsulated_fragments_is_named(fragment, codec, tmp_path):
    path = write_lying(tmp_path / "x.dcm", encapsulated_body(fragment), EXPLICIT_LE)
    with pytest.raises(DicomError, match=r"x.dcm: transfer syntax Explicit VR Little Endian but the pixel data is "
                       rf"encapsulated \(compressed fragments; the first holds {codec}"):  # fmt: skip
        read_image(path, "auto")


@pytest.mark.parametrize(
    ("syntax", "written"),
    [(EXPLICIT_BE, "Explicit VR Little Endian"), (DEFLATED, "Explicit VR Little Endian, not deflated")],
    ids=["big-endian", "deflated"],
)
def test_a_data_set_written_in_another_encoding_is_named(syntax, written, tmp_path):
    """Read as its header says, the data set is garbage: "no pixel data" or a zlib error, before."""
    path = write_lying(tmp_path / "x.dcm", native_body(), syntax)
    with pytest.raises(DicomError) as caught:
        read_image(path, "auto")
    assert str(caught.value).endswith(f"but the data set and its pixel data are written {written}")
    assert f"{path}: transfer syntax {pydicom.uid.UID(syntax).name}" in str(caught.value)


@pytest.mark.parametrize(
    ("length", "consequence"),
    [(200, "runs over the pixel data element"), (3, "what follows it is no valid element")],
)
def test_a_bad_element_length_names_the_element_not_missing_pixel_data(length, consequence, tmp_path):
    path = set_rows_length(write_lying(tmp_path / "x.dcm", native_body(), EXPLICIT_LE), length)
    with pytest.raises(DicomError) as caught:
        read_image(path, "auto")
    message = str(caught.value)
    assert message.startswith(f"{path}: a bad element length: (0028,0010) Rows (US) claims {length} bytes")
    assert consequence in message and "no pixel data" not in message


def test_a_truncated_file_stays_truncated_not_a_bad_length(tmp_path):
    """A file cut inside its encapsulated pixel data: the element before it ends where the pixel data
    begins, so no length is blamed (the slow hardening test found this on a synthetic JPEG 2000 file)."""
    path = write_lying(tmp_path / "x.dcm", encapsulated_body(J2K_START + bytes(200)), J2K_LOSSLESS)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DicomError, match=r"x.dcm: the file is truncated") as caught:
        read_image(path, "auto")
    assert "bad element length" not in str(caught.value)


def test_honest_files_of_every_kind_still_decode(tmp_path):
    """The checks only speak on a mismatch: the same body under its true syntax decodes."""
    body = native_body()
    raw = read_image(write_lying(tmp_path / "ok.dcm", body, EXPLICIT_LE), "auto")
    assert raw.pixels.tobytes() == body.PixelData


def test_preprocess_lists_each_mismatch_in_failures_csv(tmp_path):
    """Through the stage: each lying file is one failures row naming it and the mismatch; the rest cache."""
    from mammo_insight.stages.preprocess import PreprocessStageConfig, run_preprocess
    from mammo_insight.synth.cohort import make_synthetic_cohort

    make_synthetic_cohort(tmp_path / "ds", n_patients=2, seed=4, size=(64, 48))
    files = sorted((tmp_path / "ds" / "train_images").rglob("*.dcm"))
    compressed = next(f for f in files if pydicom.dcmread(f).file_meta.TransferSyntaxUID.is_encapsulated)
    encapsulated = pydicom.dcmread(compressed)  # its own compressed pixel data, now declared native
    others = [f for f in files if f != compressed]
    native = pydicom.dcmread(others[0])
    native.decompress()
    expect = {
        compressed.stem: "transfer syntax Explicit VR Little Endian but the pixel data is encapsulated",
        others[
            0
        ].stem: "transfer syntax JPEG 2000 Image Compression (Lossless Only) but the pixel data is native",
        others[
            1
        ].stem: "transfer syntax Explicit VR Big Endian but the data set and its pixel data are written",
        others[2].stem: "a bad element length: (0028,0010) Rows",
    }
    write_lying(compressed, encapsulated, EXPLICIT_LE)
    write_lying(others[0], native, J2K_LOSSLESS)
    write_lying(others[1], native, EXPLICIT_BE)
    set_rows_length(write_lying(others[2], native, EXPLICIT_LE), 200)
    config = PreprocessStageConfig("rsna", tmp_path / "ds", tmp_path / "cache", size=(64, 48), sheet_size=0)
    result = run_preprocess(config)
    failures = pd.read_csv(tmp_path / "cache" / "failures.csv", dtype=str).set_index("image_id")["reason"]
    assert set(failures.index) == set(expect), failures
    paths = {path.stem: path for path in files}
    for image_id, words in expect.items():
        assert failures[image_id].startswith(f"{paths[image_id]}: {words}"), failures[image_id]
        assert "\n" not in failures[image_id]
    assert result.summary["ok"] == len(files) - len(expect)
