"""Lossless metadata stripping, for passing an upstream's own image bytes through (:mod:`darkroom.encoding`).

Each parser walks the file's container (PNG chunks, JPEG segments, WebP RIFF chunks) and copies what draws
the picture, byte for byte, dropping what only describes it: EXIF (GPS, camera, dates), XMP, IPTC, text,
comments, thumbnails, timestamps, provenance manifests. The compressed pixel data is never touched, so the
stripped file decodes to exactly the pixels of the original. What changes how those pixels render is kept:
colour profiles and colour-space chunks (PNG iCCP, sRGB, gAMA, cHRM, cICP, mDCV, cLLI; JPEG ICC APP2 and
Adobe APP14; WebP ICCP), and JPEG's JFIF APP0.

The parsers are strict: any structure they do not expect (another colour type or bit depth, interlacing,
transparency keys, arithmetic or lossless JPEG, grey or CMYK JPEG, animation, an unknown critical chunk, a
bad CRC, a length past the end, dropped metadata that turns the picture (EXIF or XMP orientation other than
1)) makes :func:`strip_metadata` answer None, and the caller encodes from pixels instead. No library on PyPI
fits a Lambda layer for this (piexif: JPEG/WebP EXIF only, unmaintained; mat2: GObject, re-renders images;
exif-stripper: re-saves through Pillow), hence this module.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Stripped:
    """The stripped bytes and the facts read from their header."""

    data: bytes
    format: str  # png, jpeg or webp
    width: int
    height: int
    has_alpha: bool


class _Refused(Exception):
    """A structure the parser does not expect: pass-through is off, the caller encodes from pixels."""


def strip_metadata(data: bytes, image_format: str) -> Stripped | None:
    """``data`` (a ``png``, ``jpeg`` or ``webp`` file) without its metadata, pixel data untouched; None when
    its structure is anything but the plain RGB/RGBA 8-bit still image this module expects."""
    parser = _PARSERS.get(image_format)
    if parser is None:
        return None
    try:
        return parser(data)
    except (_Refused, struct.error, IndexError, ValueError, zlib.error):
        return None


# -- orientation: dropped metadata must not be what turned the decoded picture (ImageOps.exif_transpose) ---------

_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')


def _check_exif(payload: bytes) -> None:
    """Refused unless IFD0 (where Pillow reads it) has no Orientation, or Orientation 1 as one SHORT."""
    tiff = payload[6:] if payload.startswith(b"Exif\x00\x00") else payload
    _need(tiff[:2] in (b"II", b"MM"))
    order = "<" if tiff[:2] == b"II" else ">"
    magic, first = struct.unpack_from(order + "HI", tiff, 2)
    _need(magic == 42)
    (count,) = struct.unpack_from(order + "H", tiff, first)
    for index in range(count):
        tag, kind, values, value = struct.unpack_from(order + "HHI2s", tiff, first + 2 + 12 * index)
        if tag == 0x0112:
            _need(kind == 3 and values == 1 and struct.unpack(order + "H", value)[0] == 1)


def _check_xmp(payload: bytes) -> None:
    match = _XMP_ORIENTATION.search(payload)
    if match and match[2] != b"1":
        raise _Refused


def _need(condition: bool) -> None:
    if not condition:
        raise _Refused


# -- PNG -------------------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary chunks that change how the pixels render: kept. Every other ancillary chunk is dropped.
_PNG_COLOUR = frozenset({b"sRGB", b"gAMA", b"cHRM", b"iCCP", b"cICP", b"mDCV", b"cLLI"})
# Chunks that change the image's mode or make it another kind of image: refused.
_PNG_REFUSED = frozenset({b"tRNS", b"acTL", b"fcTL", b"fdAT"})


def _png(data: bytes) -> Stripped:
    _need(data.startswith(_PNG_SIGNATURE))
    view = memoryview(data)
    kept: list[memoryview] = [view[:8]]
    offset, seen_idat, ended, width, height, has_alpha, previous = 8, False, False, 0, 0, False, b""
    while not ended:
        _need(offset + 12 <= len(data))
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + 12 + length
        _need(length < 2**31 and end <= len(data) and kind.isalpha() and kind.isascii())
        body = view[offset + 8 : offset + 8 + length]
        _need(zlib.crc32(body, zlib.crc32(kind)) == struct.unpack_from(">I", data, offset + 8 + length)[0])
        _need(not seen_idat or previous == b"IDAT" or kind != b"IDAT")  # IDAT chunks are consecutive
        previous = kind
        if offset == 8:
            _need(kind == b"IHDR" and length == 13)
            width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
            _need(depth == 8 and colour in (2, 6) and (compression, filtering, interlace) == (0, 0, 0))
            has_alpha = colour == 6
        elif kind == b"IDAT":
            seen_idat = True
        elif kind == b"IEND":
            _need(seen_idat and length == 0)
            ended = True
        elif kind in _PNG_REFUSED or kind[0] < 0x61:  # an unknown critical (upper-case first letter) chunk
            _need(kind == b"PLTE" and not seen_idat)  # colour types 2 and 6: only a suggested palette, dropped
            offset = end
            continue
        elif kind not in _PNG_COLOUR:
            _png_check_dropped(kind, bytes(body))
            offset = end
            continue
        kept.append(view[offset:end])
        offset = end
    # Anything after IEND is not part of the image: dropped.
    return Stripped(b"".join(kept), "png", width, height, has_alpha)


def _png_check_dropped(kind: bytes, body: bytes) -> None:
    """What Pillow would read an orientation from (``Image.getexif``): eXIf, a raw EXIF profile, XMP text."""
    if kind == b"eXIf":
        _check_exif(body)
    elif kind in (b"tEXt", b"zTXt", b"iTXt"):
        keyword, _, rest = body.partition(b"\x00")
        if keyword == b"Raw profile type exif":
            raise _Refused
        if keyword == b"XML:com.adobe.xmp":
            _need(kind == b"tEXt" or (kind == b"iTXt" and rest[:1] == b"\x00"))  # compressed XMP: refused
            _check_xmp(rest)


# -- JPEG ------------------------------------------------------------------------------------------------------

_SOF = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended and progressive Huffman; every other SOF refused
_TABLES = frozenset({0xC4, 0xDB, 0xDD})  # DHT, DQT, DRI


def _jpeg(data: bytes) -> Stripped:
    _need(data.startswith(b"\xff\xd8"))
    view = memoryview(data)
    kept: list[memoryview] = [view[:2]]
    offset, size, scans = 2, (0, 0), 0
    while True:
        _need(offset + 2 <= len(data) and data[offset] == 0xFF)
        marker = data[offset + 1]
        if marker == 0xD9:  # EOI; trailing bytes (say, MPF's second picture) are dropped
            _need(scans > 0)
            kept.append(view[offset : offset + 2])
            break
        _need(offset + 4 <= len(data))
        length = struct.unpack_from(">H", data, offset + 2)[0]
        end = offset + 2 + length
        _need(length >= 2 and end <= len(data))
        payload = view[offset + 4 : end]
        if marker in _SOF:
            _need(size == (0, 0) and len(payload) == 6 + 3 * 3)
            precision, height, width, components = struct.unpack_from(">BHHB", payload)
            _need(precision == 8 and components == 3 and width > 0 and height > 0)
            size = (width, height)
            kept.append(view[offset:end])
        elif marker in _TABLES:
            kept.append(view[offset:end])
        elif marker == 0xDA:  # SOS: the header, then entropy-coded data up to the next marker
            _need(size != (0, 0))
            scans += 1
            end = _entropy_end(data, end)
            kept.append(view[offset:end])
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:
            if _jpeg_keeps(marker, bytes(payload)):
                kept.append(view[offset:end])
        else:  # DNL, DAC, DHP, EXP, JPG, RST outside a scan, TEM, reserved, fill bytes
            raise _Refused
        offset = end
    return Stripped(b"".join(kept), "jpeg", size[0], size[1], False)


def _jpeg_keeps(marker: int, payload: bytes) -> bool:
    """JFIF APP0, ICC APP2 and Adobe APP14 change how the pixels render; every other APPn and COM is dropped
    (after checking that it is not what turned the decoded picture)."""
    if marker == 0xE0:
        return payload.startswith(b"JFIF\x00")
    if marker == 0xE2:
        return payload.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return payload.startswith(b"Adobe")
    if marker == 0xE1:
        if payload.startswith(b"Exif\x00\x00"):
            _check_exif(payload)
        else:
            _check_xmp(payload)
    return False


def _entropy_end(data: bytes, offset: int) -> int:
    """The offset of the first marker after a scan's entropy-coded data (stuffed 0xFF00 and RSTn are data)."""
    while True:
        found = data.find(b"\xff", offset)
        _need(0 <= found < len(data) - 1)
        following = data[found + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            offset = found + 2
        elif following == 0xFF:  # fill bytes before a marker
            offset = found + 1
        else:
            return found


# -- WebP ------------------------------------------------------------------------------------------------------

_VP8X_ICC, VP8X_ALPHA, _VP8X_EXIF, VP8X_XMP = 0x20, 0x10, 0x08, 0x04
_VP8X_OTHER = 0xFF & ~(_VP8X_ICC | VP8X_ALPHA | _VP8X_EXIF | VP8X_XMP)  # animation and reserved bits: refused
# The chunks a still VP8X file may hold besides EXIF and XMP, in order; anything else (ANIM, unknown) is refused.
_WEBP_LAYOUTS = frozenset(
    (*icc, *alpha, bitstream)
    for icc in ((), (b"ICCP",))
    for alpha, bitstream in (((), b"VP8 "), ((b"ALPH",), b"VP8 "), ((), b"VP8L"))
)


def _webp(data: bytes) -> Stripped:
    _need(data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    _need(struct.unpack_from("<I", data, 4)[0] == len(data) - 8)
    chunks = []
    offset = 12
    while offset < len(data):
        _need(offset + 8 <= len(data))
        kind, length = struct.unpack_from("<4sI", data, offset)
        end = offset + 8 + length + (length & 1)
        _need(end <= len(data))
        chunks.append((kind, offset, end, data[offset + 8 : offset + 8 + min(length, 30)]))
        offset = end
    _need(bool(chunks))
    if chunks[0][0] != b"VP8X":  # a simple file: one bitstream, no room for metadata
        _need(len(chunks) == 1)
        width, height, has_alpha = bitstream_facts(chunks[0][0], chunks[0][3])
        return Stripped(data, "webp", width, height, has_alpha)
    header = chunks[0][3]
    _need(len(header) == 10 and not header[0] & _VP8X_OTHER)
    flags = header[0]
    width = 1 + int.from_bytes(header[4:7], "little")
    height = 1 + int.from_bytes(header[7:10], "little")
    kinds = tuple(kind for kind, *_ in chunks[1:] if kind not in (b"EXIF", b"XMP "))
    _need(kinds in _WEBP_LAYOUTS and bool(flags & _VP8X_ICC) == (b"ICCP" in kinds))
    view = memoryview(data)
    kept: list[bytes | memoryview] = [b"", bytes(view[12:16]) + struct.pack("<I", 10)]
    kept.append(bytes([flags & ~(_VP8X_EXIF | VP8X_XMP)]) + header[1:10])
    for kind, start, end, head in chunks[1:]:
        if kind == b"EXIF":
            _check_exif(data[start + 8 : end])
        elif kind == b"XMP ":
            _check_xmp(data[start + 8 : end])
        else:
            kept.append(view[start:end])
            if kind in (b"VP8 ", b"VP8L"):
                # One answer to "has it alpha?": the flag, the ALPH chunk and VP8L's own bit agree.
                got_width, got_height, alpha = bitstream_facts(kind, head)
                alpha = alpha or b"ALPH" in kinds
                _need((got_width, got_height) == (width, height) and alpha == bool(flags & VP8X_ALPHA))
    kept[0] = b"RIFF" + struct.pack("<I", sum(len(part) for part in kept) + 4) + b"WEBP"
    return Stripped(b"".join(kept), "webp", width, height, bool(flags & VP8X_ALPHA))


def bitstream_facts(kind: bytes, head: bytes) -> tuple[int, int, bool]:
    """(width, height, alpha) from a VP8 or VP8L bitstream's first bytes."""
    if kind == b"VP8 ":
        _need(head[3:6] == b"\x9d\x01\x2a")
        width, height = struct.unpack_from("<HH", head, 6)
        return width & 0x3FFF, height & 0x3FFF, False
    _need(kind == b"VP8L" and head[0] == 0x2F)
    bits = int.from_bytes(head[1:5], "little")
    _need(bits >> 29 == 0)  # version 0
    return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool((bits >> 28) & 1)


_PARSERS = {"png": _png, "jpeg": _jpeg, "webp": _webp}
