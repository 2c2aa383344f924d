"""The hostile-corpus images, built in code (tests and benchmarks/bench_decode_limits.py): small files that
ask a decoder for unbounded work or memory, and normal images of the same size to compare with."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

SOS, EOI = b"\xff\xda", b"\xff\xd9"


def progressive_jpeg(side: int, scans: int = 10) -> bytes:
    """A valid progressive JPEG, ``side`` x ``side``, whose last scan is repeated until it has ``scans``.

    A flat colour makes every AC scan a single end-of-band run (tens of bytes), so each repeat costs the
    decoder a pass over the whole image for almost no file size (86 KB and 5,000 scans at 2000 px)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(buffer, format="JPEG", progressive=True, quality=80)
    data = buffer.getvalue()
    assert data.endswith(EOI)
    # Entropy-coded data never holds FF DA (an FF there is followed by 00 or a restart marker).
    last = data.rfind(SOS)
    written = data.count(SOS)
    return data[:-2] + data[last:-2] * max(0, scans - written) + EOI


def photo_jpeg(side: int, progressive: bool = True) -> bytes:
    """A photo-like JPEG (noise over smooth colour) of ``side`` x ``side``: a normal image to compare with."""
    coarse = Image.effect_noise((max(1, side // 32),) * 2, 64).resize((side, side), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((side, side), 24)
    image = Image.merge("RGB", (coarse, grain, coarse.rotate(90)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", progressive=progressive, quality=90)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(side: int, *, colour_type: int = 6, before_idat: bytes = b"", row: bytes | None = None) -> bytes:
    """An 8-bit PNG, ``side`` x ``side``, every row the same (all zero unless ``row`` is given), compressed
    row by row so that building a 40 Mpx image needs no 160 MB buffer; ``before_idat``: extra chunks."""
    channels = {0: 1, 2: 3, 6: 4}[colour_type]
    line = b"\x00" + (row or bytes(side * channels))  # filter type 0, then the pixels
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(line) for _ in range(side)]
    compressed = b"".join(parts) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + before_idat
        + _chunk(b"IDAT", compressed)
        + _chunk(b"IEND", b"")
    )


def zero_rgba_png(side: int = 6324) -> bytes:
    """An all-zero RGBA PNG: 6324 x 6324 is just under 40 M pixels in about 155 KB."""
    return png(side)


def iccp_bomb(count: int) -> bytes:
    """An 8 x 8 PNG with ``count`` iCCP chunks, each 1 KB that Pillow inflates to 1 MiB."""
    profile = _chunk(b"iCCP", b"x\x00\x00" + zlib.compress(bytes(1024 * 1024 - 1), 9))
    return png(8, colour_type=2, before_idat=profile * count)


def png_with_chunks(count: int) -> bytes:
    """An 8 x 8 PNG with ``count`` empty ancillary chunks before its data."""
    return png(8, colour_type=2, before_idat=_chunk(b"tiNy", b"") * count)


def jpeg_with_segments(count: int, marker: int = 0xFE, payload: bytes = b"") -> bytes:
    """A small baseline JPEG with ``count`` extra segments (COM by default) right after SOI."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    segment = b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + segment * count + data[2:]


def gif_with_sub_blocks(count: int) -> bytes:
    """A 64 x 64 still GIF with a comment extension of ``count`` one-byte sub-blocks before its image."""
    buffer = io.BytesIO()
    Image.new("P", (64, 64)).save(buffer, format="GIF")
    data = buffer.getvalue()
    palette = 3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0
    start = 13 + palette
    return data[:start] + b"!\xfe" + b"\x01a" * count + b"\x00" + data[start:]
