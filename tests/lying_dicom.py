"""DICOM files whose header lies about their content: a transfer syntax that does not match the data set
or its pixel data, an element length that is wrong. pydicom (rightly) refuses to write them, so the file
meta group and the data set are written separately here. Shared by the tests and the hostile corpus."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, generate_uid

MAMMOGRAM_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage, for presentation
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
RLE = "1.2.840.10008.1.2.5"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
J2K_START = b"\xff\x4f\xff\x51"  # SOC then SIZ: how a JPEG 2000 codestream begins
LOSSLESS_JPEG_START = b"\xff\xd8\xff\xc3"  # SOI then a process-14 frame header


def native_body(rows: int = 64, columns: int = 48, seed: int = 0) -> Dataset:
    """A 12-bit MONOCHROME2 image data set with native pixel data (random values: not constant)."""
    pixels = np.random.default_rng(seed).integers(0, 4000, (rows, columns), dtype=np.uint16)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = MAMMOGRAM_CLASS, generate_uid()
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def encapsulated_body(fragment: bytes) -> Dataset:
    """native_body's header over encapsulated pixel data holding one fragment."""
    ds = native_body()
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def write_lying(path: Path, body: Dataset, header_syntax: str) -> Path:
    """body written Explicit VR Little Endian (encapsulated pixel data kept so) under a file meta group
    whose TransferSyntaxUID says header_syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = body.get("SOPClassUID", MAMMOGRAM_CLASS)
    meta.MediaStorageSOPInstanceUID = body.get("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = UID(header_syntax)
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, body)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())
    return path


def set_rows_length(path: Path, length: int) -> Path:
    """Rewrite the length of the (0028,0010) Rows element (explicit VR US, a 2-byte length field)."""
    data = bytearray(path.read_bytes())
    at = bytes(data).index(b"\x28\x00\x10\x00US")
    struct.pack_into("<H", data, at + 6, length)
    path.write_bytes(bytes(data))
    return path


def set_pixel_data_length(path: Path, length: int) -> Path:
    """Rewrite the length of the (7FE0,0010) Pixel Data element (explicit VR OW: a 4-byte length field)."""
    data = bytearray(path.read_bytes())
    at = bytes(data).index(b"\xe0\x7f\x10\x00OW")
    struct.pack_into("<I", data, at + 8, length)
    path.write_bytes(bytes(data))
    return path
