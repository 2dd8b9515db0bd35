"""Decoding backends agree; display tables follow PS3.3 C.11 for every VOI form; real files preprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from mammo_insight.imaging.decode import available_backends, read_image
from mammo_insight.imaging.intensity import LUT_MAX, display_lut, lut_index
from mammo_insight.imaging.pipeline import PreprocessConfig, prepare

U16 = np.dtype(np.uint16)


def _ds(**attrs) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 12
    ds.PixelRepresentation = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def _table(ds: Dataset, sample: np.ndarray | None = None) -> np.ndarray:
    sample = np.arange(4096, dtype=np.uint16) if sample is None else sample
    return display_lut(ds, U16, sample, ds.PhotometricInterpretation).astype(np.float64) / LUT_MAX


def test_linear_window_follows_the_standard() -> None:
    c, w = 2000.0, 1001.0
    table = _table(_ds(WindowCenter=c, WindowWidth=w, VOILUTFunction="LINEAR"))
    x = np.arange(4096.0)
    expected = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(table[:4096], expected, atol=1 / LUT_MAX)
    assert table[1000] == 0 and table[3000] == 1


def test_linear_exact_and_sigmoid_follow_the_standard() -> None:
    c, w = 1500.0, 800.0
    x = np.arange(4096.0)
    exact = _table(_ds(WindowCenter=c, WindowWidth=w, VOILUTFunction="LINEAR_EXACT"))
    np.testing.assert_allclose(exact[:4096], np.clip((x - c) / w + 0.5, 0, 1), atol=1 / LUT_MAX)
    sigmoid = _table(_ds(WindowCenter=c, WindowWidth=w, VOILUTFunction="SIGMOID"))
    np.testing.assert_allclose(sigmoid[:4096], 1 / (1 + np.exp(-4 * (x - c) / w)), atol=1 / LUT_MAX)


def test_voi_lut_sequence_wins_over_the_window_and_uses_its_own_range() -> None:
    item = Dataset()
    item.LUTDescriptor = [1024, 1000, 16]
    item.LUTData = [int(v) for v in np.linspace(100, 3100, 1024)]  # 12-bit values in a 16-bit LUT
    table = _table(_ds(VOILUTSequence=[item], WindowCenter=100, WindowWidth=10))
    assert table[0] == 0 and table[999] == 0 and table[2100] == 1 and table[4095] == 1
    assert table[1512] == pytest.approx(0.5, abs=0.01)


def test_monochrome1_is_inverted_and_rescale_applies_first() -> None:
    # window given in modality units: stored 1000..2000 -> modality 1900..3900 with slope 2, intercept -100
    ds = _ds(
        WindowCenter=2900, WindowWidth=2001, VOILUTFunction="LINEAR", RescaleSlope=2, RescaleIntercept=-100
    )
    mono2 = _table(ds)
    assert mono2[900] == 0 and mono2[2100] == 1 and mono2[1500] == pytest.approx(0.5, abs=0.01)
    ds.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_allclose(_table(ds), 1 - mono2, atol=1 / LUT_MAX)


def test_no_voi_scales_by_the_image_range() -> None:
    sample = np.array([200, 300, 1200], dtype=np.uint16)
    table = _table(_ds(), sample)
    assert table[200] == 0 and table[1200] == 1 and table[700] == pytest.approx(0.5, abs=1e-4)


def test_signed_pixels_index_the_table() -> None:
    ds = _ds(PixelRepresentation=1, WindowCenter=0, WindowWidth=201, VOILUTFunction="LINEAR")
    pixels = np.array([[-500, -100, 0, 100, 500]], dtype=np.int16)
    table = display_lut(ds, pixels.dtype, pixels, "MONOCHROME2")
    shown = table[lut_index(pixels)] / LUT_MAX
    np.testing.assert_allclose(shown[0], [0, 0, 0.5, 1, 1], atol=0.01)


@pytest.fixture(scope="module")
def synth_files(tmp_path_factory) -> dict[str, Path]:
    """One synthetic DICOM per transfer syntax."""
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("imaging_decode_synth")
    make_synthetic_cohort(root, n_patients=4, seed=2, size=(96, 64))
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*.dcm")):
        files.setdefault(
            pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name, path
        )
    assert len(files) == 4
    return files


@pytest.mark.parametrize("backend", ["gdcm", "dicomsdl"])
def test_optional_backends_decode_identical_pixels(backend, synth_files) -> None:
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    for name, path in synth_files.items():
        ref = read_image(path, "pydicom").pixels
        got = read_image(path, backend).pixels
        assert got.dtype == ref.dtype and np.array_equal(got, ref), name


@pytest.mark.real_data
def test_backends_agree_on_a_real_rsna_jpeg2000(data_dir) -> None:
    path = data_dir / "rsna" / "train_images" / "36" / "200779059.dcm"
    ref = read_image(path, "pydicom")
    assert ref.transfer_syntax.startswith("JPEG 2000") and ref.pixels.shape == (2776, 2082)
    for backend in set(available_backends()) - {"pydicom"}:
        assert np.array_equal(read_image(path, backend).pixels, ref.pixels), backend


@pytest.mark.real_data
@pytest.mark.parametrize(
    "rel",
    [
        "rsna/train_images/10006/462822612.dcm",
        "rsna/test_images/10008/361203119.dcm",
        "cbis_ddsm/P_00820/1-281.dcm",
        "mias/mdb005.png",
        "mias/mdb132.png",
    ],
)
def test_real_images_get_a_tight_display_correct_crop(data_dir, rel) -> None:
    raw = read_image(data_dir / rel)
    out = prepare(raw, PreprocessConfig(size=(128, 64)))
    geom = out.geometry
    image = out.pixels.astype(np.float64) / 255
    assert out.pixels.shape == (128, 64)
    # breast bright on dark: the cached breast is far brighter than the original's background
    preview = out.preview.astype(np.float64) / LUT_MAX
    outside = np.ones(preview.shape, bool)
    s = out.preview_stride
    outside[geom.crop_y0 // s : geom.crop_y1 // s, geom.crop_x0 // s : geom.crop_x1 // s] = False
    assert image[image > 0].mean() > 2 * np.percentile(preview[outside], 25) + 0.1
    area = geom.crop_width * geom.crop_height / (geom.orig_width * geom.orig_height)
    assert 0.1 < area < 0.8, area
    # the chest wall is on the left after the flip: tissue touches the left edge of the canvas
    rows = slice(geom.pad_y, geom.pad_y + geom.resized_height)
    near, far = geom.resized_width // 10, geom.resized_width - 1 - geom.resized_width // 10
    assert (out.pixels[rows, near] > 0).mean() > (out.pixels[rows, far] > 0).mean()


@pytest.mark.parametrize("suffix, dtype", [(".pgm", np.uint16), (".png", np.uint8)])
def test_plain_images_are_read_as_stored(tmp_path, suffix, dtype) -> None:
    import cv2

    image = np.zeros((120, 80), dtype)
    image[10:110, :50] = np.iinfo(dtype).max // 2  # a breast against the left edge
    path = tmp_path / f"img{suffix}"
    cv2.imwrite(str(path), image)
    raw = read_image(path)
    assert raw.transfer_syntax == suffix[1:].upper() and raw.header is None
    assert np.array_equal(raw.pixels, image)
    out = prepare(raw, PreprocessConfig(size=(60, 40)))
    assert out.geometry.crop_x0 == 0 and out.geometry.crop_x1 >= 50 and out.geometry.crop_x1 <= 56
    assert out.geometry.crop_y0 <= 10 and out.geometry.crop_y1 >= 110 and not out.geometry.flipped
