"""Encode synthetic display images as DICOMs with the variety found in real screening archives.

Each image gets one ``DicomProfile`` (transfer syntax, photometric interpretation, bits stored, rescale,
VOI LUT form). Stored values are chosen so that the CORRECT display pipeline (modality LUT, then VOI LUT,
then inversion for MONOCHROME1) shows bright tissue on a dark background: MONOCHROME1 files store
inverted values. Fake identifying tags (PatientName, PatientBirthDate, InstitutionName, ...) are
written on purpose so hardening tests can check they never reach any output. UIDs derive from the
seed and ids (no clock, no randomness): same seed, same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from mammo_insight.files import atomic_write
from mammo_insight.imaging.jpeg_lossless import encode_jpeg_lossless
from mammo_insight.synth.headers import MACHINES, VIEW_CODES, acquisition, phi_tags

MAMMO_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
MAMMO_FOR_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.2.1")
IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1473.1")  # fixed: no library version in the bytes
SYNTAXES = (JPEG2000Lossless, JPEGLosslessSV1, RLELossless, ExplicitVRLittleEndian)
J2K_MIN_SIDE = 32


@dataclass(frozen=True)
class DicomProfile:
    syntax: UID
    photometric: str  # MONOCHROME1 or MONOCHROME2
    bits_stored: int  # 12 or 16
    voi: str  # LINEAR, SIGMOID or LUT (a VOI LUT Sequence plus a LINEAR window)
    slope: float
    intercept: float


# Cycled over images in a seeded order: every transfer syntax meets both photometric interpretations,
# both bit depths and every VOI form within the first 16 images of any cohort.
PROFILES = (
    DicomProfile(JPEG2000Lossless, "MONOCHROME1", 16, "SIGMOID", 1.0, 0.0),
    DicomProfile(JPEG2000Lossless, "MONOCHROME2", 12, "LINEAR", 1.0, 0.0),
    DicomProfile(JPEG2000Lossless, "MONOCHROME2", 16, "LINEAR", 0.5, -100.0),
    DicomProfile(JPEG2000Lossless, "MONOCHROME1", 12, "LUT", 1.0, 0.0),
    DicomProfile(JPEGLosslessSV1, "MONOCHROME1", 12, "LINEAR", 1.0, 0.0),
    DicomProfile(JPEGLosslessSV1, "MONOCHROME2", 16, "SIGMOID", 1.0, 0.0),
    DicomProfile(JPEGLosslessSV1, "MONOCHROME2", 12, "LUT", 1.0, 0.0),
    DicomProfile(JPEGLosslessSV1, "MONOCHROME1", 16, "LINEAR", 2.0, -1024.0),
    DicomProfile(RLELossless, "MONOCHROME2", 12, "SIGMOID", 1.0, 0.0),
    DicomProfile(RLELossless, "MONOCHROME1", 16, "LINEAR", 1.0, 0.0),
    DicomProfile(RLELossless, "MONOCHROME2", 16, "LINEAR", 1.0, -1000.0),
    DicomProfile(RLELossless, "MONOCHROME1", 12, "SIGMOID", 1.0, 0.0),
    DicomProfile(ExplicitVRLittleEndian, "MONOCHROME2", 16, "LINEAR", 1.0, 0.0),
    DicomProfile(ExplicitVRLittleEndian, "MONOCHROME1", 16, "LINEAR", 0.5, 0.0),
    DicomProfile(ExplicitVRLittleEndian, "MONOCHROME2", 12, "SIGMOID", 1.0, 0.0),
    DicomProfile(ExplicitVRLittleEndian, "MONOCHROME1", 12, "LUT", 1.0, 0.0),
)


@dataclass(frozen=True)
class ImageMeta:
    """Header facts for one image (ids as in train.csv).

    machine_id, size_factor, density: what the acquisition values depend on (synth.headers);
    modifiers: (code, meaning) view modifiers of a work-up image; instance: "" for the screening image,
    else what this extra file is ("spot", "processing", ...: part of its UID and file name).
    """

    patient_id: str
    image_id: str
    laterality: str
    view: str
    age: float
    site_id: str
    seed: int
    machine_id: str = ""
    size_factor: float = 1.0
    density: str = ""
    modifiers: tuple[tuple[str, str], ...] = ()
    instance: str = ""


def _stored_range(bits: int) -> tuple[int, int]:
    """Stored values used for brightness 0..1 (before MONOCHROME1 inversion): most of the bit range."""
    top = (1 << bits) - 1
    return int(top * 0.04), int(top * 0.92)


def to_stored(pixels: np.ndarray, padding: np.ndarray, profile: DicomProfile) -> tuple[np.ndarray, int]:
    """Display brightness -> stored uint16 values; returns the array and the padding value."""
    lo, hi = _stored_range(profile.bits_stored)
    stored = lo + np.round(np.clip(pixels, 0.0, 1.0) * (hi - lo))
    if profile.photometric == "MONOCHROME1":
        stored = hi + lo - stored
    pad_value = hi if profile.photometric == "MONOCHROME1" else lo
    stored[padding] = pad_value
    return stored.astype(np.uint16), pad_value


def _uid(meta: ImageMeta, *parts: str) -> UID:
    return generate_uid(entropy_srcs=["mammo-insight-synth", str(meta.seed), meta.patient_id, *parts])


def study_uid(meta: ImageMeta) -> UID:
    """The woman's one screening study (synth writes outcomes.csv keyed by it)."""
    return _uid(meta, "study")


def _voi_lut_item(lo: int, hi: int) -> Dataset:
    """A VOI LUT Sequence item mapping stored lo..hi to 12-bit output through a gentle S-curve."""
    n = hi - lo + 1
    t = np.linspace(0.0, 1.0, n)
    curve = 1.0 / (1.0 + np.exp(-6.0 * (t - 0.5)))
    curve = (curve - curve[0]) / (curve[-1] - curve[0])
    item = Dataset()
    item.add_new(0x00283002, "US", [n if n < 65536 else 0, lo, 16])  # LUTDescriptor
    item.LUTExplanation = "SYNTHETIC S-CURVE"
    item.add_new(0x00283006, "OW", np.round(curve * 65535).astype("<u2").tobytes())  # LUTData
    return item


def build_dataset(
    stored: np.ndarray, pad_value: int | None, profile: DicomProfile, meta: ImageMeta
) -> Dataset:
    """A Digital Mammography For Presentation dataset with the given pixels (still uncompressed)."""
    rows, cols = stored.shape
    sop_uid = _uid(meta, meta.image_id, *([meta.instance] if meta.instance else []))
    sop_class = MAMMO_FOR_PROCESSING if meta.instance == "processing" else MAMMO_FOR_PRESENTATION
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = IMPLEMENTATION_UID
    fm.ImplementationVersionName = "MAMMOINSIGHT01"
    ds = Dataset()
    ds.file_meta = fm
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20200101"
    ds.Modality = "MG"
    for keyword, value in phi_tags(meta.patient_id, meta.site_id, meta.machine_id or "0").items():
        setattr(ds, keyword, value)
    age = 60 if np.isnan(meta.age) else int(meta.age)
    # born after the study day of the year: StudyDate - PatientBirthDate gives the age itself
    ds.PatientBirthDate = f"{2019 - age:04d}{1 + int(meta.patient_id) % 12:02d}15"
    if meta.site_id == "1":  # site 2 leaves PatientAge out: its age comes from the dates
        ds.PatientAge = f"{age:03d}Y"
    ds.PatientSex = "F"
    set_acquisition(ds, meta)
    ds.StudyInstanceUID = study_uid(meta)
    ds.SeriesInstanceUID = _uid(meta, "series", meta.laterality)
    ds.InstanceNumber = 1
    ds.ImageLaterality = meta.laterality
    ds.ViewPosition = meta.view
    ds.PresentationIntentType = "FOR PROCESSING" if meta.instance == "processing" else "FOR PRESENTATION"
    ds.BurnedInAnnotation = "YES"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = profile.photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = profile.bits_stored
    ds.HighBit = profile.bits_stored - 1
    ds.PixelRepresentation = 0
    if pad_value is not None:
        ds.PixelPaddingValue = pad_value
    lo, hi = _stored_range(profile.bits_stored)
    ds.RescaleIntercept = f"{profile.intercept:g}"
    ds.RescaleSlope = f"{profile.slope:g}"
    ds.RescaleType = "US"
    center = profile.slope * (lo + hi) / 2 + profile.intercept
    width = profile.slope * (hi - lo) * 0.95
    ds.WindowCenter = f"{center:.2f}"
    ds.WindowWidth = f"{width:.2f}"
    ds.VOILUTFunction = "SIGMOID" if profile.voi == "SIGMOID" else "LINEAR"
    if profile.voi == "LUT":
        ds.VOILUTSequence = Sequence(
            [
                _voi_lut_item(
                    int(profile.slope * lo + profile.intercept), int(profile.slope * hi + profile.intercept)
                )
            ]
        )
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()
    return ds


def set_jpeg_lossless(
    ds: Dataset, stored: np.ndarray, bits: int, predictor: int = 1, *, rows_per_interval: int = 0
) -> Dataset:
    """``ds`` holding ``stored`` (unsigned, < 2**bits) as one lossless JPEG frame, its pixel module to
    match: the synthetic files, and real pixels re-encoded so for the checks no real file in the data
    exercises (no real lossless JPEG DICOM is in it)."""
    ds.PixelData = encapsulate(
        [encode_jpeg_lossless(stored, bits, predictor, rows_per_interval=rows_per_interval)]
    )
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1 if predictor == 1 else JPEGLossless
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits <= 8 else 16), bits, bits - 1
    ds.PixelRepresentation = 0
    return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SRT" if value.startswith("R-") else "SCT"
    item.CodeMeaning = meaning
    return item


def set_acquisition(ds: Dataset, meta: ImageMeta) -> None:
    """Machine, exposure and view code tags (synth.headers); nothing here draws from the cohort's generators."""
    manufacturer, model, (target, filt) = MACHINES.get(meta.machine_id, ("SYNTHETIC", "SYNTH-1", ("W", "RH")))
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer, model
    exposure = "" if meta.instance == "processing" else meta.instance  # a copy shares its exposure
    acq = acquisition(meta.seed, int(meta.image_id), meta.size_factor, meta.density, meta.view, exposure)
    ds.KVP = f"{acq.kvp:g}"
    ds.Exposure = round(acq.mas)
    ds.ExposureInuAs = round(acq.mas * 1000)
    ds.BodyPartThickness = f"{acq.thickness:g}"
    ds.CompressionForce = f"{acq.force:g}"
    ds.OrganDose = f"{acq.dose:g}"
    ds.AnodeTargetMaterial, ds.FilterMaterial = target, filt
    ds.BreastImplantPresent = "NO"
    view = VIEW_CODES.get(meta.view)
    if view is not None:
        item = _code(*view)
        if meta.modifiers:
            item.ViewModifierCodeSequence = Sequence([_code(*m) for m in meta.modifiers])
        ds.ViewCodeSequence = Sequence([item])


def write_dicom(
    path: Path, stored: np.ndarray, pad_value: int | None, profile: DicomProfile, *, meta: ImageMeta
) -> None:
    """Build, encode with the profile's transfer syntax and save one file."""
    ds = build_dataset(stored, pad_value, profile, meta)
    syntax = profile.syntax
    if syntax == JPEG2000Lossless and min(stored.shape) < J2K_MIN_SIDE:
        syntax = ExplicitVRLittleEndian  # openjpeg's 6 DWT levels need at least 32 pixels a side
    if syntax == JPEGLosslessSV1:
        set_jpeg_lossless(ds, stored, profile.bits_stored)
    elif syntax != ExplicitVRLittleEndian:
        # pinned plugin: GDCM, when installed, would encode RLE differently (same seed, same bytes everywhere)
        ds.compress(syntax, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))  # a kill leaves no torn file
