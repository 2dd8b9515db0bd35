"""cohort.dicom_record reads headers and sequences from their raw bytes: the elements and codes it finds are
pydicom's own, in every encoding a header may use, and a damaged file reads as dcmread reads it."""

from __future__ import annotations

import itertools

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from mammo_insight.cohort.dicom_record import Header, header_record, read_header, view_codes

SYNTAX = {
    (False, True): pydicom.uid.ExplicitVRLittleEndian,
    (True, True): pydicom.uid.ImplicitVRLittleEndian,
    (False, False): pydicom.uid.ExplicitVRBigEndian,
}


def _code(value: str, meaning: str, undefined: bool) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    item.is_undefined_length_sequence_item = undefined
    return item


def _sequence(items: list[Dataset], undefined: bool) -> Sequence:
    seq = Sequence(items)
    seq.is_undefined_length = undefined
    return seq


def _header(path, implicit: bool, little: bool, undefined: bool) -> Dataset:
    """A header whose view item holds a nested modifier sequence, beside a top-level one."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = (
        "1.2.840.10008.5.1.4.1.1.1.2",
        "1.2.3",
        "MG",
        "P",
    )
    ds.Rows, ds.Columns = 64, 48
    view = _code("399162004", "cranio-caudal", undefined)
    view.ViewModifierCodeSequence = _sequence([_code("C-11", "Magnification", undefined)], undefined)
    ds.ViewCodeSequence = _sequence([view], undefined)
    ds.ViewModifierCodeSequence = _sequence(
        [_code("C-22", "Spot Compression", undefined), _code("C-33", "Rolled", undefined)], undefined
    )
    ds.file_meta.TransferSyntaxUID = SYNTAX[(implicit, little)]
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path, stop_before_pixels=True)


@pytest.mark.parametrize(
    ("implicit", "little", "undefined"),
    [c for c in itertools.product([False, True], [True, False], [False, True]) if c[0] is False or c[1]],
)
def test_sequences_read_raw_give_pydicoms_codes(tmp_path, implicit, little, undefined):
    ds = _header(tmp_path / "a.dcm", implicit, little, undefined)
    expected = {
        "view_code": "399162004",
        "view_meaning": "cranio-caudal",
        "view_modifier_codes": "C-22 | C-33 | C-11",
        "view_modifiers": "spot compression | rolled | magnification",
        "workup_view": "spot compression | rolled | magnification",
    }
    assert view_codes(Header(ds)) == expected
    # the same codes when pydicom has converted every sequence first (a dataset made in memory, a test's)
    converted = pydicom.dcmread(tmp_path / "a.dcm", stop_before_pixels=True)
    for item in converted.ViewCodeSequence:
        item.ViewModifierCodeSequence  # noqa: B018 - converts the nested sequence
    assert view_codes(converted) == expected
    assert header_record(ds, b"s")["sop_class"] == "mammography for presentation"


def _plain(ds: Dataset) -> dict[int, object]:
    """Every element's value as pydicom converts it, into sequence items; a value pydicom cannot convert
    stands as its error's type (so two readings compare without raising)."""
    values: dict[int, object] = {}
    for tag in list(ds.keys()):  # a Dataset iterates over converted elements; keys are its tags
        try:
            value = ds[tag].value
        except Exception as exc:  # noqa: BLE001 - the comparison is of what each reader read
            value = type(exc)
        values[int(tag)] = [_plain(item) for item in value] if isinstance(value, Sequence) else value
    return values


def _elements(header: Header) -> dict[int, object]:
    """The dataset's and its file meta's elements (the meta's at tag + 1 << 32)."""
    assert sorted(header.elements) == sorted(map(int, list(header.ds.keys())))
    meta = _plain(header.meta.ds) if header.meta is not None else {}
    return _plain(header.ds) | {(1 << 32) + tag: value for tag, value in meta.items()}


def _reading(path) -> tuple[str, object]:
    """('ok', the elements) of read_header, or ('error', the exception's type)."""
    try:
        return "ok", _elements(read_header(path))
    except Exception as exc:  # noqa: BLE001 - the comparison is of what each reader does
        return "error", type(exc)


def _dcmread(path) -> tuple[str, object]:
    try:
        return "ok", _elements(Header(pydicom.dcmread(path, stop_before_pixels=True)))
    except Exception as exc:  # noqa: BLE001
        return "error", type(exc)


@pytest.mark.parametrize(
    ("implicit", "little", "undefined"),
    [c for c in itertools.product([False, True], [True, False], [False, True]) if c[0] is False or c[1]],
)
def test_read_header_reads_what_dcmread_reads(tmp_path, implicit, little, undefined):
    _header(tmp_path / "a.dcm", implicit, little, undefined)
    assert _reading(tmp_path / "a.dcm") == _dcmread(tmp_path / "a.dcm")
    assert header_record(read_header(tmp_path / "a.dcm"), b"s") == header_record(
        pydicom.dcmread(tmp_path / "a.dcm", stop_before_pixels=True), b"s"
    )


def test_files_off_the_fast_path_are_read_by_dcmread(tmp_path):
    """Deflated, a meta group that names the wrong VR encoding, no preamble: pydicom's own reading or error."""
    ds = _header(tmp_path / "a.dcm", False, True, False)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    data = (tmp_path / "a.dcm").read_bytes()
    explicit = pydicom.uid.ExplicitVRLittleEndian.encode() + b"\0"
    assert data.count(explicit) == 1
    (tmp_path / "lies.dcm").write_bytes(
        data.replace(explicit, pydicom.uid.ImplicitVRLittleEndian.encode() + b"\0\0\0")
    )
    (tmp_path / "bare.dcm").write_bytes(data[132:])
    for name in ("deflated.dcm", "lies.dcm", "bare.dcm"):
        assert _reading(tmp_path / name) == _dcmread(tmp_path / name), name
    assert _reading(tmp_path / "deflated.dcm")[0] == "ok"
    assert _reading(tmp_path / "bare.dcm") == ("error", pydicom.errors.InvalidDicomError)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    keep=st.integers(0, 10_000),
    syntax=st.sampled_from(sorted(SYNTAX)),
)
def test_damaged_files_read_as_dcmread_reads_them(tmp_path, cuts, keep, syntax):
    """Bytes changed and the file cut short anywhere: read_header gives dcmread's elements or its error type."""
    original = tmp_path / f"{syntax}.dcm"
    if not original.exists():
        _header(original, *syntax, undefined=True)
    data = bytearray(original.read_bytes())
    for at, byte in cuts:
        data[at % len(data)] = byte
    (tmp_path / "b.dcm").write_bytes(bytes(data[: max(keep % (len(data) + 1), 1)]))
    assert _reading(tmp_path / "b.dcm") == _dcmread(tmp_path / "b.dcm")


def test_the_real_dicoms_read_as_dcmread_reads_them(data_dir):
    """RSNA's (JPEG 2000 / JPEG-LS, headers stripped by Kaggle) and CBIS-DDSM's files, element for element."""
    files = sorted(data_dir.rglob("*.dcm"))
    assert files
    for path in files:
        reading = _reading(path)
        assert reading[0] == "ok", path
        assert reading == _dcmread(path), path
