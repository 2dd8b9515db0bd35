"""Does a DICOM's content match its transfer syntax? Names the mismatch instead of its symptom.

A header that says JPEG 2000 over native pixel data, native over encapsulated fragments, big endian over
a little-endian data set, or one element length that swallows its neighbours gives, left alone, a
symptom: "the encapsulated pixel data is damaged", "no pixel data", a decoder's exception. The checks
here run when the file is read (``pixel_syntax_problem``) or after pydicom could not reach the pixel
data (``encoding_problem``), so that the failures row says what is wrong:
"transfer syntax X but the pixel data is Y", or which element's length is bad.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: every encapsulated pixel data begins with one
PIXEL_TAG = {True: b"\xe0\x7f\x10\x00", False: b"\x7f\xe0\x00\x10"}  # (7FE0,0010), by little_endian
PIXEL_VRS = (b"OB", b"OW", b"OD", b"OF", b"OV", b"UN")
# (implicit VR, little endian) -> the name of that encoding, most common first
ENCODINGS = {
    (False, True): "Explicit VR Little Endian",
    (True, True): "Implicit VR Little Endian",
    (False, False): "Explicit VR Big Endian",
}
DEFLATED = "1.2.840.10008.1.2.1.99"
PREAMBLE = 132  # 128 bytes of preamble and "DICM"


def _codec_of(fragment: bytes) -> str:
    """What a compressed fragment holds, from its first bytes."""
    if fragment.startswith(b"\xff\x4f\xff\x51"):
        return "a JPEG 2000 codestream"
    if fragment[4:8] == b"jP  ":
        return "a JPEG 2000 (JP2) file"
    if fragment.startswith(b"\xff\xd8"):
        head = fragment[:4096]
        if b"\xff\xf7" in head:
            return "a JPEG-LS stream"
        return "a lossless JPEG stream" if b"\xff\xc3" in head or b"\xff\xc7" in head else "a JPEG stream"
    segments, first = int.from_bytes(fragment[:4], "little"), int.from_bytes(fragment[4:8], "little")
    if len(fragment) >= 64 and 1 <= segments <= 15 and first == 64:  # RLE's header: count, then offsets
        return "an RLE stream"
    return "data of no format recognised"


def _native_size(ds) -> int | None:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return int(ds.Rows) * int(ds.Columns) * frames * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError):
        return None


def _first_fragment(data: bytes) -> str:
    """'; the first holds <codec>' for encapsulated pixel data, '' where its fragments do not parse."""
    from pydicom.encaps import generate_fragments, parse_basic_offsets

    buffer = io.BytesIO(data)
    try:
        parse_basic_offsets(buffer)
        first = next(generate_fragments(buffer))
    except Exception:  # noqa: BLE001 - damaged fragments: the finding stands without the codec
        return ""
    return f"; the first holds {_codec_of(first)}"


def pixel_syntax_problem(ds) -> str | None:
    """Why the pixel data's form contradicts the header's transfer syntax (native bytes under a compressed
    syntax, encapsulated fragments under a native one), as "transfer syntax X but the pixel data is Y";
    else None."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or not syntax.is_transfer_syntax or "PixelData" not in ds or not ds.PixelData:
        return None
    data = ds.PixelData  # not copied: this runs on every image
    size = _native_size(ds)
    native_size = size is not None and len(data) in (size, size + 1)  # one pad byte allowed
    encapsulated = bytes(data[:4]) == ITEM_TAG
    if syntax.is_encapsulated and not encapsulated:
        form = (
            f"native ({len(data)} uncompressed bytes, exactly Rows x Columns x BitsAllocated)"
            if native_size
            else f"not encapsulated ({len(data)} bytes that do not begin with an item tag (FFFE,E000))"
        )
    elif not syntax.is_encapsulated and encapsulated and not native_size:
        form = f"encapsulated (compressed fragments{_first_fragment(data)})"
    else:
        return None
    return f"transfer syntax {syntax.name} but the pixel data is {form}"


def _body(path: Path) -> bytes | None:
    """The data set's bytes after the file meta group, or None where there is no meta group to skip."""
    from pydicom.filereader import data_element_generator

    with open(path, "rb") as handle:
        if handle.read(PREAMBLE)[128:] != b"DICM":
            return None
        for _ in data_element_generator(handle, False, True, stop_when=lambda tag, *_: tag.group != 2):
            pass
        return handle.read()


def _reads_as(body: bytes, implicit: bool, little: bool) -> bool:
    """Whether the data set parses in this encoding as far as a sized image with pixel data."""
    from pydicom.filereader import read_dataset

    try:
        ds = read_dataset(io.BytesIO(body), implicit, little)
        return "PixelData" in ds and int(ds.Rows) > 0 and int(ds.Columns) > 0
    except Exception:  # noqa: BLE001 - any failure means "not this encoding"
        return False


def _elements(body: bytes, implicit: bool, little: bool) -> Iterator[tuple[int, str, int, int] | None]:
    """(tag, VR, value offset, length) of the top-level elements; None where parsing fails, then stops."""
    from pydicom.filereader import data_element_generator

    try:
        for raw in data_element_generator(io.BytesIO(body), implicit, little, defer_size=1024):
            yield int(raw.tag), str(raw.VR), raw.value_tell, raw.length
    except Exception:  # noqa: BLE001 - where the parse fails is the finding
        yield None


def _pixel_offset(body: bytes, implicit: bool, little: bool) -> int | None:
    """Where the pixel data element begins in the data set's bytes: its tag, then (explicit VR) its VR."""
    start = body.find(PIXEL_TAG[little])
    while start >= 0:
        if implicit or body[start + 4 : start + 6] in PIXEL_VRS:
            return start
        start = body.find(PIXEL_TAG[little], start + 1)
    return None


def _lost_step(element: tuple[int, str, int, int] | None, previous: tuple[int, str, int, int]) -> bool:
    """Whether an element cannot follow the previous one: unparsable, an unknown VR, or tags not ascending."""
    from pydicom.valuerep import VR

    return element is None or element[1] not in VR.__members__ or element[0] <= previous[0]


def _length_problem(body: bytes, implicit: bool, little: bool) -> str | None:
    """The element whose length keeps the parser from the pixel data element: it runs over that element,
    or what is read after it is no element (a length that misaligns the rest)."""
    from pydicom.datadict import keyword_for_tag

    pixels = _pixel_offset(body, implicit, little)
    if pixels is None:
        return None
    previous = None
    for element in _elements(body, implicit, little):
        if previous is not None and _lost_step(element, previous):
            if previous[2] + previous[3] == pixels:
                return None  # it ends where the pixel data begins: that element is the damaged one
            culprit, consequence = previous, "and what follows it is no valid element"
        elif element is not None and element[3] != 0xFFFFFFFF and element[2] + element[3] > pixels:
            culprit, consequence = element, "and runs over the pixel data element"
        elif element is None or element[2] >= pixels:
            return None
        else:
            previous = element
            continue
        tag, vr, _, length = culprit
        name = keyword_for_tag(tag) or "a private element"
        return (
            f"a bad element length: ({tag >> 16:04X},{tag & 0xFFFF:04X}) {name} ({vr}) claims {length} bytes "
            f"{consequence}, so the pixel data at byte {pixels} of the data set is never reached"
        )
    return None


def encoding_problem(path: str | Path, syntax) -> str | None:
    """Why pydicom could not reach the pixel data of a file that holds one, or None: the data set is
    written in another encoding than its transfer syntax says, or an element's length is bad.
    ``syntax``: the header's TransferSyntaxUID (None when missing)."""
    if syntax is None or not syntax.is_transfer_syntax:
        return None
    with warnings.catch_warnings():  # reading in the wrong encoding warns on every garbled element
        warnings.simplefilter("ignore")
        try:
            body = _body(Path(path))
        except Exception:  # noqa: BLE001 - a meta group that does not parse: the caller's message stands
            return None
        return None if body is None else _encoding_problem(body, syntax)


def _encoding_problem(body: bytes, syntax) -> str | None:
    declared = (syntax.is_implicit_VR, syntax.is_little_endian)
    deflated = syntax == DEFLATED
    if not deflated and _reads_as(body, *declared):
        return None  # the encoding is right (a truncated file, say): the caller's message stands
    for encoding, name in ENCODINGS.items():
        if (encoding != declared or deflated) and _reads_as(body, *encoding):
            written = f"{name}, not deflated" if deflated and encoding == declared else name
            return f"transfer syntax {syntax.name} but the data set and its pixel data are written {written}"
    return None if deflated else _length_problem(body, *declared)
