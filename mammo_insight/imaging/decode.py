"""Read stored pixel values from a DICOM (any transfer syntax a decoder handles) or a plain PNG/PGM.

Backends, all returning the same stored values (tests check it where they are installed):

- "pydicom": pydicom with pylibjpeg (JPEG 2000, JPEG lossless and RLE), pinned even when GDCM is
  installed (pydicom would otherwise prefer GDCM), so the name says which decoder ran; pylibjpeg
  decodes on one thread, so worker processes scale with the cores;
- "gdcm": pydicom with the GDCM plugin (``pip install mammo-insight[fast]``) for the syntaxes that
  plugin handles (not RLE, which pydicom's own decoder then reads); GDCM's JPEG 2000 decoder uses
  about 1.6 cores per image;
- "dicomsdl": dicomsdl's own decoder, often the fastest for JPEG 2000;
- "auto" (the default): per file, the fastest installed decoder for its transfer syntax, from
  ``AUTO_ORDER``, measured by ``benchmarks/bench_decoders.py`` (megapixels per CPU second, one
  thread, two runs on a shared machine, dicomsdl / pydicom / GDCM): JPEG lossless process 14
  46-48 / 13 / 19, JPEG 2000 4.9-5.1 / 4.7-4.8 / 3.9-4.0 (real RSNA files: 1.59 against 1.48
  images per CPU second), RLE 123-125 / 115-132 / 119-123 and uncompressed 280-362 / 247-296 /
  241-266: ties within the runs' noise, where pydicom (the reference decoder) is kept.

Only pixel-module tags are read; Modality, ViewPosition and PatientAge are never needed.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_insight.errors import DicomError
from mammo_insight.imaging.integrity import coded_length_problem, pixel_problem
from mammo_insight.imaging.stream_walk import stream_problem
from mammo_insight.imaging.syntax import encoding_problem, pixel_syntax_problem

BACKENDS = ("auto", "pydicom", "gdcm", "dicomsdl")
MAX_PLAIN_PIXELS = 100_000_000  # 10x the largest digitised film; a larger PNG/PGM header is not decoded
# fastest first, per transfer syntax (see the module docstring); other syntaxes use DEFAULT_ORDER
JPEG_2000 = ("dicomsdl", "pydicom", "gdcm")  # GDCM's is multi-threaded: slower per core with workers
JPEG_LOSSLESS = ("dicomsdl", "gdcm", "pydicom")
AUTO_ORDER = {
    "JPEG 2000 Image Compression (Lossless Only)": JPEG_2000,
    "JPEG 2000 Image Compression": JPEG_2000,
    "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])": JPEG_LOSSLESS,
    "JPEG Lossless, Non-Hierarchical (Process 14)": JPEG_LOSSLESS,
    "RLE Lossless": ("pydicom", "dicomsdl", "gdcm"),
}
DEFAULT_ORDER = ("pydicom", "dicomsdl", "gdcm")
PLAIN_SUFFIXES = {".png": "PNG", ".pgm": "PGM", ".tif": "TIFF", ".tiff": "TIFF"}


@dataclass
class RawImage:
    """Stored pixel values plus what is needed to display them; header is None for plain images."""

    pixels: np.ndarray
    header: object | None
    photometric: str
    transfer_syntax: str


def is_interrupt(exc: BaseException) -> bool:
    """True for the exceptions that mean "stop" (Ctrl-C, exit); every other one, a decoder's Rust panic
    (pyo3's PanicException derives from BaseException) included, is a fault of one file."""
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


def available_backends() -> list[str]:
    """Decoders usable here, fastest first."""
    found = []
    if importlib.util.find_spec("dicomsdl"):
        found.append("dicomsdl")
    found.append("pydicom")
    if importlib.util.find_spec("gdcm"):
        found.append("gdcm")
    return found


def auto_backend(transfer_syntax: str) -> str:
    """The fastest installed decoder for a transfer syntax (its name, as pydicom spells it)."""
    found = available_backends()
    return next(b for b in AUTO_ORDER.get(transfer_syntax, DEFAULT_ORDER) if b in found)


def auto_choices() -> dict[str, str]:
    """What 'auto' decodes each listed transfer syntax with here (recorded in the cache's manifest)."""
    return {**{ts: auto_backend(ts) for ts in AUTO_ORDER}, "other": auto_backend("")}


def resolve_backend(name: str) -> str:
    """A decoder name checked: 'auto' stays 'auto' (chosen per file), a named one must be installed."""
    if name not in BACKENDS:
        raise DicomError(f"unknown decoder backend {name!r}; choose one of {', '.join(BACKENDS)}")
    found = available_backends()
    if name == "auto":
        return name
    if name not in found:
        raise DicomError(f"decoder backend {name!r} is not installed (installed: {', '.join(found)})")
    return name


MIN_SIDE = 8  # pixels a side, below which no file (DICOM, PNG, PGM) is read as a mammogram


def _plain_size_problem(path: Path) -> str | None:
    """A PNG/PGM whose header claims more pixels than any mammogram (a decompression bomb), read from the
    header alone; None when the size is plausible or the header unreadable (the decoder then says why)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        return f"the header claims an image too large to decode ({exc})"
    except Exception:  # noqa: BLE001 - cv2 below reports an unreadable file in its own words
        return None
    if width * height > MAX_PLAIN_PIXELS:
        return (
            f"the header claims {width}x{height} pixels, more than the {MAX_PLAIN_PIXELS:,} decoded at most"
        )
    return None


def _read_plain(path: Path) -> RawImage:
    import cv2

    too_large = _plain_size_problem(path)
    if too_large:
        raise DicomError(f"{path}: {too_large}")

    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise DicomError(f"{path}: not a readable {PLAIN_SUFFIXES[path.suffix.lower()]} image")
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code) if pixels.shape[2] in (3, 4) else pixels[:, :, 0]
    if min(pixels.shape) < MIN_SIDE:  # the same floor as a DICOM's
        raise DicomError(
            f"{path}: a {pixels.shape[0]}x{pixels.shape[1]} image is too small to be a mammogram"
        )
    implausible = pixel_problem(pixels)
    if implausible:
        raise DicomError(f"{path}: {implausible}")
    return RawImage(pixels, None, "MONOCHROME2", PLAIN_SUFFIXES[path.suffix.lower()])


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=False)
    except InvalidDicomError as exc:
        raise DicomError(f"{path}: not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on damaged headers
        mismatch = encoding_problem(path, _declared_syntax(path))
        raise DicomError(
            f"{path}: {mismatch or f'unreadable DICOM header ({type(exc).__name__}: {exc})'}"
        ) from exc
    ended = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
    if ended:
        mismatch = encoding_problem(path, ds.file_meta.get("TransferSyntaxUID"))
        raise DicomError(
            f"{path}: {mismatch or f'the file is truncated, pixel data could not be decoded ({ended[0]})'}"
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        mismatch = encoding_problem(path, ds.file_meta.get("TransferSyntaxUID"))
        raise DicomError(f"{path}: {mismatch or 'the DICOM file has no pixel data'}")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(
            f"{path}: unsupported PhotometricInterpretation {photometric or 'missing'!r}; "
            "mammograms are MONOCHROME1 or MONOCHROME2"
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DicomError(f"{path}: {ds.SamplesPerPixel} samples per pixel; expected 1 (grayscale)")
    return ds


def _declared_syntax(path: Path):
    """The file meta's TransferSyntaxUID, or None where even the meta group does not parse."""
    from pydicom.filereader import read_file_meta_info

    try:
        return read_file_meta_info(path).get("TransferSyntaxUID")
    except Exception:  # noqa: BLE001 - no syntax to compare with: the caller's message stands
        return None


def _plugin_decodes(ds, plugin: str) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return plugin in get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins
    except (NotImplementedError, AttributeError):
        return False


@contextmanager
def _pydicom_plugin_logs_muted() -> Iterator[None]:
    """pydicom logs every failing plugin with a full traceback; the DicomError raised here already lists them."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _decode(ds, path: Path, backend: str) -> np.ndarray:
    if backend == "dicomsdl":
        import dicomsdl

        pixels = dicomsdl.open(str(path)).pixelData(storedvalue=True)
    else:
        plugin = "gdcm" if backend == "gdcm" else "pylibjpeg"
        if _plugin_decodes(ds, plugin):  # else pydicom's own choice (GDCM lacks RLE; uncompressed needs none)
            ds.pixel_array_options(decoding_plugin=plugin)
        with _pydicom_plugin_logs_muted():
            pixels = ds.pixel_array
    return np.asarray(pixels)


def _not_a_file(path: Path) -> str:
    """Why a path is not a readable image file, in the user's words (a folder is not 'not found')."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return "file not found" if exc.errno == errno.ENOENT else f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a folder, not an image file"
    return "is not a regular file (a FIFO, socket or device); not read"


def read_image(path: str | Path, backend: str = "pydicom") -> RawImage:
    """Stored pixel values (2-D, integer) of one image; raises DicomError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{path}: {_not_a_file(path)}")
    if path.suffix.lower() in PLAIN_SUFFIXES:
        return _read_plain(path)
    ds = _read_header(path)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    ts_name = ts.name if ts is not None else "unknown"
    mismatch = pixel_syntax_problem(ds)
    if mismatch:
        raise DicomError(f"{path}: {mismatch}")
    damaged = stream_problem(ds)
    if damaged:
        raise DicomError(f"{path}: pixel data could not be decoded ({ts_name}; damaged stream: {damaged})")
    try:
        pixels = _decode(ds, path, auto_backend(ts_name) if backend == "auto" else backend)
    except DicomError:
        raise
    # decoders raise RuntimeError, ValueError, even Rust panics (BaseException) on damaged streams
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        raise DicomError(
            f"{path}: pixel data could not be decoded ({ts_name}; {type(exc).__name__}: {exc})"
        ) from exc
    if pixels.ndim == 3:  # multi-frame: a mammogram is one frame; take the first
        pixels = pixels[0]
    if pixels.ndim != 2 or min(pixels.shape) < MIN_SIDE:
        raise DicomError(f"{path}: decoded pixel array has unusable shape {pixels.shape}")
    if not np.issubdtype(pixels.dtype, np.integer):
        raise DicomError(f"{path}: float pixel data is not supported (dtype {pixels.dtype})")
    if pixels.dtype.itemsize > 2:  # some decoders widen 16-bit data; the display table needs 8 or 16 bits
        narrow = np.uint16 if pixels.min() >= 0 else np.int16
        if pixels.min() < np.iinfo(narrow).min or pixels.max() > np.iinfo(narrow).max:
            raise DicomError(f"{path}: stored values exceed 16 bits (range {pixels.min()}..{pixels.max()})")
        pixels = pixels.astype(narrow)
    implausible = pixel_problem(pixels, ds) or coded_length_problem(pixels, ds)
    if implausible:
        raise DicomError(f"{path}: {implausible}")
    return RawImage(pixels, ds, str(ds.PhotometricInterpretation).upper(), ts_name)
