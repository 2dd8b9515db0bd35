"""cohort.dicom_record reads sequences from their raw bytes: the codes it finds are pydicom's own, in every
encoding a header may use."""

from __future__ import annotations

import itertools

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from mammo_insight.cohort.dicom_record import Header, header_record, view_codes

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
