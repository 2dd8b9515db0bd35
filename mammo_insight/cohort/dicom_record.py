"""One DICOM header as one row of the cohort table: what a study of site, machine, view, age and acquisition
needs, and nothing that identifies a woman.

Identifiers (PatientID, StudyInstanceUID, AccessionNumber, SOPInstanceUID) and identifying places
(InstitutionName, StationName, DeviceSerialNumber) are kept only as keyed hashes (HMAC-SHA256 under the
project's salt, cohort.dicom_scan): the same woman gets the same id in every command of one project, and no
id can be traced back by hashing likely MRNs. The birth date serves only to compute an age when PatientAge
is absent; names, dates and physician fields are never read into a row. Manufacturer and model name no
person or place and stay as they are.

View modifiers (ViewModifierCodeSequence, inside the ViewCodeSequence item or beside it) are kept as codes
and meanings; the ones that mark diagnostic work-up (spot compression, magnification, rolled or tangential
views: taken because a finding was seen) also fill ``workup_view``, a column the leakage audit checks.
"""

from __future__ import annotations

import hmac
import io
import os
import re
import struct
from datetime import date
from functools import cache, lru_cache
from typing import Any

from mammo_insight.cohort.dicom_header import VIEW_CODES

# SOP classes by UID: the row says which (a secondary capture is a copy, often annotated, of another image)
SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "mammography for presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "mammography for processing",
    "1.2.840.10008.5.1.4.1.1.1.1": "digital x-ray for presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "digital x-ray for processing",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "breast tomosynthesis",
}
# view modifier meanings (DICOM CID 4015) that mark a diagnostic work-up image, lower case, matched as words
WORKUP_MODIFIERS = ("spot compression", "magnification", "magnified", "rolled", "tangential")
# continuous acquisition columns and the header keyword each comes from
NUMERIC_TAGS = {
    "kvp": "KVP",
    "tube_current_ma": "XRayTubeCurrent",
    "exposure_time_ms": "ExposureTime",
    "thickness_mm": "BodyPartThickness",
    "compression_force_n": "CompressionForce",
    "organ_dose_mgy": "OrganDose",
    "entrance_dose_mgy": "EntranceDoseInmGy",
    "rows": "Rows",
    "columns": "Columns",
    "bits_stored": "BitsStored",
}
ACQUISITION_FACTORS = {
    "manufacturer": "categorical",
    "model": "categorical",
    "target_filter": "categorical",
    "presentation_intent": "categorical",
    "burned_in_annotation": "categorical",
    "view_modifiers": "categorical",
    "workup_view": "categorical",
    "kvp": "continuous",
    "exposure_mas": "continuous",
    "thickness_mm": "continuous",
    "compression_force_n": "continuous",
    "organ_dose_mgy": "continuous",
    "images_in_study": "continuous",
}
# the acquisition factors the breast itself sets (automatic exposure control reads its thickness and density;
# the compression is of this breast): Cohort.exposure, modelled beside the screening factors, not among them
EXPOSURE_FACTORS = (
    "kvp",
    "exposure_mas",
    "target_filter",
    "thickness_mm",
    "compression_force_n",
    "organ_dose_mgy",
)
TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT"}
BINARY_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
ITEM_TAG, UNDEFINED_LENGTH = (0xFFFE, 0xE000), 0xFFFFFFFF
TRANSFER_SYNTAX_TAG = 0x00020010
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # where dcmread's stop_before_pixels stops
AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def keyed_id(kind: str, value: str, salt: bytes) -> str:
    """``kind``'s first letter + 16 hex of HMAC-SHA256(salt, kind:value): stable within a project, opaque outside."""
    return kind[0] + hmac.digest(salt, f"{kind}:{value}".encode(), "sha256")[:8].hex()


def _dictionary_vr(tag: int) -> str:
    """The VR an implicit-VR element's tag has in the DICOM dictionary (pydicom imported here only: the
    cohort's outcomes join imports this module, and eda never reads a header)."""
    from pydicom.datadict import dictionary_VR

    return dictionary_VR(tag)


@cache
def _tag(keyword: str) -> int | None:
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(keyword)


class Header:
    """A dataset's elements by tag, as pydicom read them (raw until used): one pass over the header instead
    of a tag conversion per lookup. ``ds``, the pydicom dataset (None for a sequence item read by _items),
    converts what _value does not decode itself; ``meta``, the file meta group's Header when there is one."""

    def __new__(cls, ds: Any, elements: dict[int, Any] | None = None, meta: Any = None) -> Header:  # noqa: PYI034
        return ds if isinstance(ds, Header) else super().__new__(cls)

    def __init__(self, ds: Any, elements: dict[int, Any] | None = None, meta: Any = None) -> None:
        if ds is self:
            return
        self.ds = ds
        # raw as read (Dataset.elements() would convert each)
        self.elements = elements if elements is not None else {int(e.tag): e for e in ds.values()}
        file_meta = meta if meta is not None else getattr(ds, "file_meta", None)
        self.meta = Header(file_meta) if file_meta is not None else None


def _past_file_meta(tag: int, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002


def _at_pixel_data(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_DATA_TAGS


def read_header(path: str | os.PathLike[str]) -> Header:
    """A file's header without its pixel data, as ``pydicom.dcmread(path, stop_before_pixels=True)`` reads it.

    dcmread spends about half its time on what a header scan does not need (a FileDataset and its
    bookkeeping); a plain Part 10 file (preamble, "DICM", a file meta group, no command set, a transfer
    syntax that is neither deflated nor private) is read here with pydicom's own dataset reader, which keeps
    its check of the VR encoding, and with the checks dcmread makes of the file meta (its first element and
    the transfer syntax converted, the encoding chosen by dcmread's rule). Any other file, and any file that
    reader stumbles on, goes through dcmread, whose result or error is then the answer: a test holds the two
    to the same elements and the same errors on damaged files.
    """
    import pydicom
    from pydicom.filereader import read_dataset

    with open(path, "rb") as fp:
        if fp.read(132)[128:] == b"DICM":
            try:
                meta = read_dataset(fp, False, True, stop_when=_past_file_meta)
                _meta_value(meta.get_item(next(iter(meta.keys()))))  # dcmread converts the first element
                syntax_element = meta.get_item(TRANSFER_SYNTAX_TAG)
                syntax = _meta_value(syntax_element) if syntax_element is not None else None
                next_group = fp.read(2)
                fp.seek(-len(next_group), os.SEEK_CUR)
                encoding = _encoding(syntax) if len(next_group) == 2 and next_group != b"\0\0" else None
                if encoding is not None:
                    return Header(read_dataset(fp, *encoding, stop_when=_at_pixel_data), meta=meta)
            except Exception:  # noqa: BLE001, S110 - dcmread below gives such a file its own reading or error
                pass
    return Header(pydicom.dcmread(path, stop_before_pixels=True))


@lru_cache(maxsize=1024)
def _meta_value(element: Any) -> Any:
    """A raw file meta element's value, converted as dcmread converts it. One writer's files share their
    file meta elements byte for byte, so the conversions (a fifth of a header's reading) are cached."""
    from pydicom.dataelem import convert_raw_data_element

    return convert_raw_data_element(element).value


@cache
def _encoding(syntax: str | None) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) as dcmread chooses them for a transfer syntax; None where dcmread does
    more than choose (no syntax: it guesses; deflated: it inflates; private: its own table)."""
    from pydicom import uid

    if (
        syntax is None
        or syntax == uid.DeflatedExplicitVRLittleEndian
        or syntax in uid.PrivateTransferSyntaxes
    ):
        return None
    if syntax == uid.ImplicitVRLittleEndian:
        return True, True
    return False, syntax != uid.ExplicitVRBigEndian


def _items(elem: Any) -> list[Header]:
    """A sequence's items, read from its raw bytes without making a pydicom Dataset of each.

    Converting a sequence through pydicom (a Sequence of Datasets, each built with its bookkeeping) cost
    more than the rest of a row; the items' elements are read here with pydicom's own element reader and
    left raw like the top level's. A sequence of undefined length was converted by dcmread already.
    """
    from pydicom.filereader import data_element_generator

    value = elem.value
    if not isinstance(value, bytes):
        return [Header(item) for item in value or []]
    fp = io.BytesIO(value)
    head = "<HHL" if elem.is_little_endian else ">HHL"
    items = []
    while len(tag_length := fp.read(8)) == 8:
        group, element, length = struct.unpack(head, tag_length)
        if (group, element) != ITEM_TAG:  # the sequence delimiter: no more items
            break
        # an item of undefined length ends at its delimiter, where pydicom's reader stops
        body = fp if length == UNDEFINED_LENGTH else io.BytesIO(fp.read(length))
        found = data_element_generator(body, elem.is_implicit_VR, elem.is_little_endian)
        items.append(Header(None, {int(e.tag): e for e in found}))
    return items


def _value(header: Any, keyword: str) -> Any:
    """The element's value, its raw bytes decoded here for the simple VRs and sequences.

    pydicom leaves a header's elements raw until one is used and then converts it through its hooks, which
    costs more per element than reading the whole header did; a row needs about forty, so the text and
    binary number VRs are decoded from the raw bytes directly (UTF-8, else Latin-1: the ids are only
    hashed, and the same bytes always give the same id) and a sequence's items are read raw (_items).
    Other VRs and converted elements go through pydicom.
    """
    ds = header if type(header) is Header else Header(header)  # called some fifty times a row
    elem = ds.elements.get(_tag(keyword))
    if elem is None:
        return None
    value = elem.value
    if not isinstance(value, bytes):
        return _items(elem) if elem.VR == "SQ" else value
    vr = elem.VR or _dictionary_vr(elem.tag)
    if vr in BINARY_VRS:
        size = struct.calcsize(BINARY_VRS[vr])
        if len(value) < size:
            return None
        return struct.unpack_from(("<" if elem.is_little_endian else ">") + BINARY_VRS[vr], value)[0]
    if vr in TEXT_VRS:
        try:
            return value.decode("utf-8").strip(" \x00")
        except UnicodeDecodeError:
            return value.decode("latin-1").strip(" \x00")
    if vr == "SQ":
        return _items(elem)
    if ds.ds is None:
        from pydicom.dataelem import convert_raw_data_element

        return convert_raw_data_element(elem).value
    return ds.ds[elem.tag].value


def text_of(ds: Any, keyword: str) -> str:
    value = _value(ds, keyword)
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def number_of(ds: Any, keyword: str) -> float | None:
    value = _value(ds, keyword)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str):
            value = value.split("\\")[0]
        elif hasattr(value, "__getitem__"):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _date(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        return None


def age_of(ds: Any) -> float | None:
    """PatientAge ('058Y', '006M'), else whole years from PatientBirthDate to StudyDate; None when neither."""
    match = re.fullmatch(r"(\d{1,3})([YMWD])", text_of(ds, "PatientAge").upper())
    if match:
        return round(int(match.group(1)) * AGE_UNITS[match.group(2)], 2)
    born, seen = _date(text_of(ds, "PatientBirthDate")), _date(text_of(ds, "StudyDate"))
    if born is None or seen is None or seen < born:
        return None
    return float(seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day)))


def _codes(items: Any) -> tuple[list[str], list[str]]:
    codes, meanings = [], []
    for item in items or []:
        code, meaning = text_of(item, "CodeValue"), text_of(item, "CodeMeaning")
        if code or meaning:
            codes.append(code)
            meanings.append(meaning.lower())
    return codes, meanings


def view_codes(ds: Any) -> dict[str, str | None]:
    """The view code and meaning, the modifiers' codes and meanings (' | '-joined), and the work-up ones."""
    view_items = list(_value(ds, "ViewCodeSequence") or [])
    view_code, view_meaning = _codes(view_items[:1])
    modifiers = [*(_value(ds, "ViewModifierCodeSequence") or [])]
    for item in view_items:
        modifiers.extend(_value(item, "ViewModifierCodeSequence") or [])
    mod_codes, mod_meanings = _codes(modifiers)
    workup = [m for m in mod_meanings if any(w in m for w in WORKUP_MODIFIERS)]
    return {
        "view_code": view_code[0] if view_code else None,
        "view_meaning": view_meaning[0] if view_meaning else None,
        "view_modifier_codes": " | ".join(mod_codes) or None,
        "view_modifiers": " | ".join(mod_meanings) or None,
        "workup_view": " | ".join(workup) or None,
    }


def _laterality(ds: Any) -> str | None:
    """ImageLaterality, else the series' Laterality (as cohort.dicom_header reads them)."""
    side = (text_of(ds, "ImageLaterality") or text_of(ds, "Laterality")).upper()[:1]
    return side if side in ("L", "R") else None


def _machine(ds: Any, salt: bytes) -> str | None:
    """The machine: its serial number, else its station name, hashed (both can name a hospital)."""
    for keyword in ("DeviceSerialNumber", "StationName"):
        value = text_of(ds, keyword)
        if value:
            return keyed_id("machine", f"{text_of(ds, 'Manufacturer')}|{value}", salt)
    return None


def _exposure_mas(ds: Any) -> float | None:
    mas = number_of(ds, "Exposure")
    if mas is None and (uas := number_of(ds, "ExposureInuAs")) is not None:
        mas = uas / 1000.0
    return mas


def _yes_no(text: str) -> float | None:
    return {"YES": 1.0, "NO": 0.0}.get(text.upper())


def _meta_sop_class(ds: Header) -> str:
    """The file meta's SOP class, read raw too (pydicom's conversion of it cost more than a row)."""
    return text_of(ds.meta, "MediaStorageSOPClassUID") if ds.meta is not None else ""


def header_record(ds: Any, salt: bytes, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """One cohort row (without image_path and image_id, which the scan sets) from a header read without pixels.

    ``extra``: column -> DICOM keyword of further tags a mapping file asks for, kept as text.
    """
    ds = Header(ds)
    sop_uid = text_of(ds, "SOPClassUID") or _meta_sop_class(ds)
    sop = SOP_CLASSES.get(sop_uid, sop_uid or None)
    intent = text_of(ds, "PresentationIntentType").upper() or None
    spacing = number_of(ds, "ImagerPixelSpacing") or number_of(ds, "PixelSpacing")
    target, filt = text_of(ds, "AnodeTargetMaterial").upper(), text_of(ds, "FilterMaterial").upper()
    ids = {
        "patient_id": ("patient", text_of(ds, "PatientID")),
        "study_id": ("study", text_of(ds, "StudyInstanceUID")),
        "accession_id": ("accession", text_of(ds, "AccessionNumber")),
        "site_id": ("site", text_of(ds, "InstitutionName")),
    }
    row: dict[str, Any] = {col: keyed_id(kind, v, salt) if v else None for col, (kind, v) in ids.items()}
    views = view_codes(ds)
    row.update(
        {
            "laterality": _laterality(ds),
            "view": text_of(ds, "ViewPosition").upper()
            or VIEW_CODES.get(views["view_code"] or "")
            or VIEW_CODES.get(views["view_meaning"] or ""),
            "age": age_of(ds),
            "machine_id": _machine(ds, salt),
            "implant": _yes_no(text_of(ds, "BreastImplantPresent")),
            "modality": text_of(ds, "Modality").upper() or None,
            "sop_class": sop,
            "secondary_capture": "yes" if sop == "secondary capture" else "no",
            "presentation_intent": intent,
            "for_processing": "yes" if (intent == "FOR PROCESSING" or "processing" in str(sop)) else "no",
            "burned_in_annotation": text_of(ds, "BurnedInAnnotation").upper() or None,
            "manufacturer": text_of(ds, "Manufacturer") or None,
            "model": text_of(ds, "ManufacturerModelName") or None,
            "exposure_mas": _exposure_mas(ds),
            "target_filter": f"{target}/{filt}" if target or filt else None,
            "pixel_spacing_mm": spacing,
            "photometric_interpretation": text_of(ds, "PhotometricInterpretation").upper() or None,
            **views,
        }
    )
    row.update({col: number_of(ds, keyword) for col, keyword in NUMERIC_TAGS.items()})
    row.update({col: text_of(ds, keyword) or None for col, keyword in (extra or {}).items()})
    return row
