"""Bounds on the work an image's structure can ask of a decoder, checked by walking that structure before
Pillow parses a byte of it.

A file's pixel count bounds its memory, not its work. The formats darkroom accepts let a small file ask
for unbounded work in a few places; each is counted here, in C-speed scans over the bytes or in loops whose
length the bounds themselves cap, and a file past a bound is refused with its reason:

- JPEG, scans: a progressive decoder reprocesses the whole image once per scan, and an end-of-band run
  makes a scan of any size about 14 bytes, so an 86 KB file can hold 5,000 scans (libjpeg-turbo's
  "Two Issues with the JPEG Standard", LJT-01-003). libjpeg's progressive scripts write 6 scans (greyscale),
  10 (YCbCr), 14 (RGB) or 18 (CMYK); libjpeg-turbo's own fuzzers stop at 500 (``TJPARAM_SCANLIMIT``, whose
  default is no limit; djpeg's ``-maxscans`` has none either) and NVIDIA DALI at 256. darkroom allows 100:
  a 6000 x 6000 file with 100 scans decodes in 3.2x the time of a normal 10-scan photo of that size
  (3.0 s; docs/benchmarks.md, section 9).
- JPEG, segments before the first scan: Pillow's parser reads them in Python, and reads fill and junk bytes
  between them one at a time; Photoshop (APP13) segments are parsed resource block by block.
- PNG, chunks: Pillow reads every chunk (ancillary, IDAT, text) in Python, about 2 microseconds each, and
  decompresses every ``iCCP`` chunk it meets, up to 1 MiB each: 2,000 of them in a 2 MB file took 4 s.
  The PNG specification allows one ``iCCP``; text chunks are bounded by ``PngImagePlugin.MAX_TEXT_MEMORY``
  (set in :mod:`darkroom.intake`).
- GIF, sub-blocks: Pillow reads extensions and skips frame data one sub-block (1-255 bytes) at a time.

Already bounded, so not walked: WebP (libwebp parses its chunks in C; an animation is refused before any
frame is decoded; its canvas size is checked from the header in :func:`webp_canvas`), Adam7-interlaced PNG
(the same work as a plain one, measured), palettes (256 entries at most), ICC profiles and EXIF (read as
bytes within the file's size, and not applied; EXIF orientation parses one IFD).
"""

from __future__ import annotations

import re

MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 512  # every marker segment, scans included
MAX_JPEG_HEADER_SEGMENTS = 128  # before the first scan: Pillow's parser, in Python
MAX_JPEG_PADDING = 1024  # fill and junk bytes before the first scan, read one at a time by Pillow
MAX_JPEG_PHOTOSHOP_SEGMENTS = 8  # APP13 "Photoshop 3.0": parsed 12-byte resource block by block
PNG_CHUNKS_PER_FILE = 1024  # plus one per PNG_BYTES_PER_CHUNK bytes: encoders write 8-64 KB IDAT chunks
PNG_BYTES_PER_CHUNK = 1024
GIF_BLOCKS_PER_FILE = 1024  # plus one per GIF_BYTES_PER_BLOCK bytes: encoders write 255-byte sub-blocks
GIF_BYTES_PER_BLOCK = 128

# The next marker: a run of 0xFF followed by a byte that is neither 0x00 (a stuffed 0xFF in entropy-coded
# data) nor a restart marker RST0-RST7 (which sit inside entropy-coded data), nor another fill byte.
# A marker: a run of 0xFF, then a byte that is not 0x00 (stuffing), a restart marker (D0-D7) or 0xFF. Written
# "\xff\xff*" rather than "\xff+" so that the pattern starts with a literal, which lets the regex engine skip
# entropy-coded data with its fast literal-prefix search: 12 ms instead of 253 ms through a 16 MP JPEG (the
# intake cost twice Pillow's decode before; docs/benchmarks.md, section 3). Same matches; FF 00 pairs cost no more.
_JPEG_MARKER = re.compile(rb"\xff\xff*[^\x00\xd0-\xd7\xff]")
_JPEG_STANDALONE = frozenset({0x01, 0xD8})  # TEM, SOI: no length follows (RSTn and EOI are handled apart)


def too_complex(data: bytes, fmt: str) -> str | None:
    """Why decoding ``data`` (of format ``fmt``, decided by its bytes) would take unbounded work, or None.

    Only counts: a structure that is malformed or truncated is left to the decoder to refuse."""
    if fmt == "jpeg":
        return _jpeg(data)
    if fmt == "png":
        return _png(data)
    if fmt == "gif":
        return _gif(data)
    return None


def jpeg_scans(data: bytes) -> int:
    """The number of scans (SOS segments) in a JPEG, walked as :func:`too_complex` walks it: at most
    ``MAX_JPEG_SCANS + 1``, where the walk stops."""
    return _walk_jpeg(data)[0]


def _jpeg(data: bytes) -> str | None:
    scans, segments, header_segments, padding, photoshop = _walk_jpeg(data)
    if scans > MAX_JPEG_SCANS:
        return f"more than {MAX_JPEG_SCANS} scans"
    if segments > MAX_JPEG_SEGMENTS:
        return f"more than {MAX_JPEG_SEGMENTS} marker segments"
    if header_segments > MAX_JPEG_HEADER_SEGMENTS:
        return f"more than {MAX_JPEG_HEADER_SEGMENTS} marker segments before its first scan"
    if padding > MAX_JPEG_PADDING:
        return f"more than {MAX_JPEG_PADDING} padding bytes before its first scan"
    if photoshop > MAX_JPEG_PHOTOSHOP_SEGMENTS:
        return f"more than {MAX_JPEG_PHOTOSHOP_SEGMENTS} Photoshop (APP13) segments"
    return None


def _walk_jpeg(data: bytes) -> tuple[int, int, int, int, int]:
    """(scans, segments, segments before the first scan, padding bytes before it, APP13 segments).

    Marker segments are skipped by their length; entropy-coded data after an SOS header is skipped to the
    next marker, past stuffed bytes (FF 00) and restart markers (FF D0-D7). The walk stops one past each
    bound, so its own work is bounded too."""
    scans = segments = header_segments = padding = photoshop = 0
    position, end = 2, len(data)  # after SOI
    while position < end:
        found = _JPEG_MARKER.search(data, position)
        if found is None:  # truncated, or bytes after the last marker: the decoder decides
            break
        if scans == 0:
            padding += found.end() - 2 - position  # everything between segments but the marker's own 0xFF
        marker, position = data[found.end() - 1], found.end()
        if marker == 0xD9:  # EOI
            break
        segments += 1
        header_segments += scans == 0
        if (
            scans > MAX_JPEG_SCANS
            or segments > MAX_JPEG_SEGMENTS
            or padding > MAX_JPEG_PADDING
            or header_segments > MAX_JPEG_HEADER_SEGMENTS
        ):
            break
        if marker in _JPEG_STANDALONE:
            continue
        if position + 2 > end:
            break
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2:  # malformed: the decoder refuses it
            break
        if marker == 0xDA:  # SOS: its header, then entropy-coded data up to the next marker
            scans += 1
        elif marker == 0xED and data.startswith(b"Photoshop 3.0\x00", position + 2):
            photoshop += 1
        position += length
    return scans, segments, header_segments, padding, photoshop


def _png(data: bytes) -> str | None:
    most = PNG_CHUNKS_PER_FILE + len(data) // PNG_BYTES_PER_CHUNK
    chunks = iccp = 0
    position, end = 8, len(data)  # after the signature
    while position + 8 <= end:
        kind = data[position + 4 : position + 8]
        chunks += 1
        iccp += kind == b"iCCP"
        if chunks > most:
            return f"more than {most} chunks"
        if iccp > 1:
            return "more than one iCCP chunk"
        if kind == b"IEND":
            break
        position += 12 + int.from_bytes(data[position : position + 4], "big")  # length, type, data, CRC
    return None


def _gif(data: bytes) -> str | None:
    most = GIF_BLOCKS_PER_FILE + len(data) // GIF_BYTES_PER_BLOCK
    blocks = images = 0
    end = len(data)
    position = 13 + (3 << ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0)  # header, screen, palette
    while position < end:
        introducer = data[position]
        if introducer == 0x21:  # extension: introducer, label, sub-blocks
            position += 2
        elif introducer == 0x2C:  # image: descriptor, local palette, LZW code size, sub-blocks
            images += 1
            if images > 1:  # animated: refused before the second frame is read
                break
            flags = data[position + 9] if position + 9 < end else 0
            position += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        else:  # the trailer, or something the decoder will refuse
            break
        while position < end:
            size = data[position]
            position += 1 + size
            blocks += 1
            if blocks > most:
                return f"more than {most} blocks"
            if size == 0:
                break
    return None


def webp_canvas(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its first chunk's header (VP8, VP8L or VP8X), or None when unreadable.

    libwebp allocates the canvas when Pillow opens the file, so the size is checked before that."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None
