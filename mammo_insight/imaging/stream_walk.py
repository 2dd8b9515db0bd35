"""Is a compressed pixel stream built as its syntax says? The structure walk run before decoding.

Decoders report some damage (pylibjpeg-rle checks every segment length; openjpeg stops on a truncated
codestream) but decode much of it without a word, so ``stream_problem`` (called by imaging/decode.py
beside the pixel checks of imaging/integrity.py) walks the compressed stream's own structure first.
JPEG (baseline, extended, lossless; not JPEG-LS): the segments chain from SOI to an EOI that ends the
stream, no marker other than restart markers (in order) or stuffed 0xFF00 inside entropy-coded data.
JPEG 2000: SOC and SIZ first, every tile-part's length (Psot) lands on the next SOT or on the EOC that
ends the stream, every tile appears, and no 0xFF byte in packet data is followed by a byte above 0x8F
(the codestream's bit stuffing forbids it; SOP/EPH markers only when COD allows them), and no run of
64 or more zero bytes in packet data. RLE: the segment table is sound and every segment decodes to
exactly Rows x Columns bytes with nothing but padding left unread. Native pixel data: exactly the
length the header's size needs.

``lossless_scan`` reads what the coded-length recount (integrity.coded_length_problem) needs from a
lossless JPEG's headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mammo_insight.imaging.jpeg_lossless import canonical_codes

JPEG_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",  # baseline
    "1.2.840.10008.1.2.4.51",  # extended
    "1.2.840.10008.1.2.4.57",  # lossless
    "1.2.840.10008.1.2.4.70",  # lossless, first-order prediction (RSNA, CBIS-DDSM exports)
}
RLE_SYNTAX = "1.2.840.10008.1.2.5"
J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
# MQ-coded packet data is close to random and an empty packet is one byte: runs of zero bytes stay short
# (at most 12 in 12 real RSNA files and every synthetic one, headers included)
J2K_MAX_ZERO_RUN = 64
# JPEG markers that may follow a scan: tables, restart interval, comment, application data, next scan
JPEG_BETWEEN_SCANS = {0xC4, 0xCC, 0xDB, 0xDD, 0xDA, 0xDC, 0xFE, *range(0xE0, 0xF0)}
JPEG_LOSSLESS_SOF = 0xC3  # process 14, Huffman-coded: the only lossless frame the length check recounts
# a restart marker, with the fill bytes that may precede it (a data byte 0xFF is always followed by 0x00)
JPEG_RESTART = re.compile(rb"\xff+[\xd0-\xd7]")


# inside entropy-coded data a 0xFF is followed by 0x00 (stuffing) or 0xFF (fill); anything else is a marker
JPEG_MARKER_IN_DATA = re.compile(rb"\xff[^\x00\xff]")


def unpadded(frame: bytes) -> bytes:
    """A JPEG or JPEG 2000 frame without the padding after its end marker (EOI, EOC: both 0xFFD9): a
    fragment is padded to an even length with 0x00 (some writers pad more), or with one 0xFF (DCTOOL:
    pydicom-data's JPEG-LL.dcm, MR2_J2KR.dcm, RG3_J2KI.dcm, sound files)."""
    buf = bytes(frame).rstrip(b"\0")
    return buf[:-1] if buf.endswith(b"\xff\xd9\xff") else buf


def _jpeg_problem(buf: bytes) -> str | None:
    end = len(buf)
    if end < 4 or not buf.startswith(b"\xff\xd8"):
        return "the JPEG stream does not start with its start-of-image marker"
    if not buf.endswith(b"\xff\xd9"):
        return "the JPEG stream does not end with its end-of-image marker (truncated or damaged)"
    pos, scans = 2, 0
    while pos < end - 2:
        if buf[pos] != 0xFF:
            return f"no JPEG marker where one must be (byte {pos})"
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return f"the JPEG end-of-image marker comes early (byte {pos} of {end})"
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        pos += 2 + length
        if length < 2 or pos > end - 2:
            return f"a JPEG segment (marker 0x{marker:02X}) runs past the end of the stream"
        if marker != 0xDA:
            continue
        scans += 1
        expected_restart = 0
        for found in JPEG_MARKER_IN_DATA.finditer(buf, pos, end - 2):
            code = buf[found.start() + 1]
            if 0xD0 <= code <= 0xD7:
                if code - 0xD0 != expected_restart:
                    return "the JPEG restart markers are out of order (damaged entropy-coded data)"
                expected_restart = (expected_restart + 1) % 8
                continue
            if code not in JPEG_BETWEEN_SCANS:
                return f"a stray JPEG marker 0x{code:02X} inside entropy-coded data (byte {found.start()})"
            pos = found.start()  # the scan ends at a table or the next scan's header
            break
        else:
            pos = end - 2  # the scan runs to EOI
    return None if scans else "the JPEG stream holds no scan"


@dataclass(frozen=True)
class LosslessScan:
    """What recounting a lossless JPEG's bits needs: from SOF3, DRI, the DHT and the one SOS."""

    precision: int
    predictor: int
    point_transform: int
    restart_interval: int
    code_lengths: np.ndarray  # bits of each category's Huffman code, 0 where it has none
    entropy_bytes: list[int]  # entropy-coded bytes of each restart interval, stuffing and fill removed


def lossless_scan(buf: bytes) -> LosslessScan | None:
    """The one-component, one-scan lossless JPEG in ``buf`` (already walked by ``_jpeg_problem``), or None
    for anything else (DCT, several components or scans, tables too short to read: the decoder names
    those), which the length check leaves alone."""
    try:
        scan = _read_lossless_scan(buf)
    except IndexError:
        return None
    if scan is None or not 2 <= scan.precision <= 16 or scan.point_transform >= scan.precision:
        return None
    return scan


def _read_lossless_scan(buf: bytes) -> LosslessScan | None:
    pos, end = 2, len(buf)
    precision, restart, tables = None, 0, {}
    while pos + 4 <= end:
        marker, length = buf[pos + 1], _u16(buf, pos + 2)
        body = buf[pos + 4 : pos + 2 + length]
        if marker in range(0xC0, 0xD0) and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if marker != JPEG_LOSSLESS_SOF or body[5] != 1:
                return None
            precision = body[0]
        elif marker == 0xC4:
            at = 0
            while at + 17 <= len(body):
                bits = list(body[at + 1 : at + 17])
                tables[body[at]] = (bits, list(body[at + 17 : at + 17 + sum(bits)]))
                at += 17 + sum(bits)
        elif marker == 0xDD:
            restart = _u16(body, 0)
        elif marker == 0xDA:
            table = tables.get(body[2] >> 4)  # class 0 (DC/lossless) << 4 | the component's table
            if precision is None or table is None or body[0] != 1:
                return None
            data = buf[pos + 2 + length : end - 2].rstrip(b"\xff")  # fill bytes before EOI
            plain = data.count(b"\xff") == data.count(b"\xff\x00")  # no marker: one interval (fast path)
            intervals = [data] if plain else JPEG_RESTART.split(data)
            if not plain and any(JPEG_MARKER_IN_DATA.search(part) for part in intervals):
                return None  # a second scan or table: not a single-scan image
            if max(table[1], default=0) > 16:
                return None  # no lossless category above 16: the decoder names the bad table
            _, code_lengths = canonical_codes(*table)
            return LosslessScan(
                precision,
                predictor=body[3],
                point_transform=body[5] & 0x0F,
                restart_interval=restart,
                code_lengths=code_lengths,
                entropy_bytes=[len(part) - part.count(b"\xff\x00") for part in intervals],
            )
        pos += 2 + length
    return None


def _u16(buf: bytes, pos: int) -> int:
    return int.from_bytes(buf[pos : pos + 2], "big")


def _u32(buf: bytes, pos: int) -> int:
    return int.from_bytes(buf[pos : pos + 4], "big")


def _j2k_tile_count(buf: bytes, siz: int) -> int:
    xsiz, ysiz = (_u32(buf, siz + 6 + 4 * i) for i in range(2))
    xtsiz, ytsiz, xtosiz, ytosiz = (_u32(buf, siz + 22 + 4 * i) for i in range(4))
    if not xtsiz or not ytsiz:
        return 0
    return -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)


def _jp2_codestream(buf: bytes) -> bytes | None:
    """The codestream inside a JP2 file's 'jp2c' box (RSNA's DICOMs wrap it so), or None without one."""
    pos = 0
    while pos + 8 <= len(buf):
        length, kind = _u32(buf, pos), buf[pos + 4 : pos + 8]
        header = 8
        if length == 1:  # 64-bit length follows
            length, header = int.from_bytes(buf[pos + 8 : pos + 16], "big"), 16
        stop = len(buf) if length == 0 else pos + length
        if kind == b"jp2c":
            return buf[pos + header : stop]
        if length < header:
            return None
        pos = stop
    return None


def _j2k_problem(buf: bytes) -> str | None:
    if buf[4:8] == b"jP  ":
        buf = _jp2_codestream(buf)
        if buf is None:
            return "the JP2 file holds no codestream box"
        buf = unpadded(buf)
    if not buf.startswith(b"\xff\x4f\xff\x51"):
        return "the JPEG 2000 stream does not start with SOC and SIZ"
    end = len(buf)
    if end < 4 or not buf.endswith(b"\xff\xd9"):
        return "the JPEG 2000 stream does not end with its EOC marker (truncated or damaged)"
    tiles_expected = _j2k_tile_count(buf, 2) if end > 40 else 0
    pos, allowed = 2, b""
    while pos < end - 2 and _u16(buf, pos) != 0xFF90:  # main header, up to the first tile-part
        marker = _u16(buf, pos)
        if marker >> 8 != 0xFF:
            return f"no JPEG 2000 marker where one must be (byte {pos})"
        if marker == 0xFF52:  # COD: Scod bit 1 allows SOP, bit 2 EPH markers in packet data
            scod = buf[pos + 4]
            allowed = (b"\x91" if scod & 2 else b"") + (b"\x92" if scod & 4 else b"")
        pos += 2 + _u16(buf, pos + 2)
    # bit stuffing: after 0xFF packet data holds a byte of at most 0x8F
    marker_like = re.compile(b"\\xff[" + re.escape(bytes(range(0x90, 0x100)).translate(None, allowed)) + b"]")
    zero_run = bytes(J2K_MAX_ZERO_RUN)
    tiles_seen = set()
    while pos < end - 2:
        if _u16(buf, pos) != 0xFF90:
            return f"a JPEG 2000 tile-part does not start where the previous one's length ends (byte {pos})"
        tiles_seen.add(_u16(buf, pos + 4))
        psot = _u32(buf, pos + 6)
        part_end = end - 2 if psot == 0 else pos + psot
        if part_end > end - 2:
            return "a JPEG 2000 tile-part runs past the end of the stream (truncated)"
        sod = buf.find(b"\xff\x93", pos, part_end)  # start of data: packet data follows
        if sod < 0:
            return f"a JPEG 2000 tile-part has no start-of-data marker (byte {pos})"
        found = marker_like.search(buf, sod + 2, part_end)
        if found:
            return (
                f"a marker-like byte pair 0x{buf[found.start() : found.end()].hex().upper()} inside JPEG 2000 "
                f"packet data (byte {found.start()}): damaged data"
            )
        zeros = buf.find(zero_run, sod + 2, part_end)
        if zeros >= 0:
            return (
                f"{J2K_MAX_ZERO_RUN} or more zero bytes in a row inside JPEG 2000 packet data (byte {zeros})"
            )
        pos = part_end
    if tiles_expected and len(tiles_seen) != tiles_expected:
        return f"the JPEG 2000 stream holds {len(tiles_seen)} of its {tiles_expected} tiles"
    return None


def _rle_problem(buf: bytes, ds) -> str | None:
    """PS3.5 Annex G: a 64-byte header of segment offsets, each segment (PackBits) decoding to exactly
    Rows x Columns bytes and consumed to its end (at most a few zero pad bytes left). pylibjpeg-rle stops
    once a segment's output is full, so junk that leaves the bytes unread is caught only here."""
    if len(buf) < 64:
        return "the RLE frame is shorter than its 64-byte header"
    n_segments = int.from_bytes(buf[:4], "little")
    offsets = [int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "little") for i in range(min(n_segments, 15))]
    expected = int(ds.BitsAllocated) // 8 * int(ds.get("SamplesPerPixel", 1))
    if n_segments != expected or offsets[:1] != [64] or offsets != sorted(offsets) or offsets[-1] > len(buf):
        return f"the RLE header's segment table is damaged ({n_segments} segments at {offsets})"
    target = int(ds.Rows) * int(ds.Columns)
    for i, (start, end) in enumerate(zip(offsets, [*offsets[1:], len(buf)], strict=True)):
        pos, out = start, 0
        while out < target and pos < end:
            control = buf[pos]
            if control < 128:  # literal run of control + 1 bytes
                out += control + 1
                pos += control + 2
            elif control > 128:  # one byte repeated 257 - control times
                out += 257 - control
                pos += 2
            else:
                pos += 1
        if out != target or pos > end:
            return f"RLE segment {i + 1} decodes to {out} bytes where Rows x Columns is {target}"
        rest = buf[pos:end]
        if len(rest) > 3 or rest.strip(b"\0"):
            return f"RLE segment {i + 1} leaves {len(rest)} bytes unread after its last pixel (damaged data)"
    return None


def _native_length_problem(ds) -> str | None:
    """Uncompressed pixel data must hold exactly Rows x Columns x frames values (plus one pad byte)."""
    try:
        expected = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("NumberOfFrames", 1) or 1)
            * int(ds.BitsAllocated)
            // 8
        )
    except (AttributeError, TypeError, ValueError):
        return None  # the decoder names a missing size tag itself
    found = len(ds.PixelData or b"")  # an empty element reads as None
    if found == 0:
        return "the pixel data element is empty (no image stored)"
    if found not in (expected, expected + 1):
        return f"the pixel data holds {found} bytes where Rows x Columns x BitsAllocated needs {expected}"
    return None


def stream_problem(ds) -> str | None:
    """What is wrong with the compressed pixel stream's structure, or None (also for syntaxes not walked)."""
    from pydicom.encaps import generate_frames

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not syntax.is_transfer_syntax:
        return None  # a UID no decoder knows: the decoders' own message names it
    if syntax is not None and not syntax.is_encapsulated and "PixelData" in ds:
        return _native_length_problem(ds)
    if syntax not in JPEG_SYNTAXES and syntax not in J2K_SYNTAXES and syntax != RLE_SYNTAX:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception as exc:  # noqa: BLE001 - any damage to the encapsulation is the finding
        return f"the encapsulated pixel data is damaged ({type(exc).__name__}: {exc})"
    if syntax == RLE_SYNTAX:
        return _rle_problem(bytes(frame), ds)
    if syntax in JPEG_SYNTAXES:
        return _jpeg_problem(unpadded(frame))
    return _j2k_problem(unpadded(frame))
