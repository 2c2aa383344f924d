"""The IPTC digital source type in XMP, written into darkroom's own encoded images before they are signed.

Readers that do not parse C2PA still find the marking here: the IPTC Photo Metadata Standard's
``Iptc4xmpExt:DigitalSourceType`` (https://www.iptc.org/std/photometadata/specification/IPTC-photo-metadata#digital-source-type),
whose values are the IPTC digital source type vocabulary (https://cv.iptc.org/newscodes/digitalsourcetype/). The
packet goes where each format keeps XMP (XMP Specification Part 3, "Embedding XMP metadata in application files"):

* PNG: an uncompressed ``iTXt`` chunk with the keyword ``XML:com.adobe.xmp``, right after ``IHDR``;
* JPEG: an ``APP1`` segment that starts with ``http://ns.adobe.com/xap/1.0/\\0``, after ``SOI`` (and JFIF's ``APP0``);
* WebP: an ``XMP `` chunk at the end, with the ``VP8X`` header's XMP flag set; a simple file (one ``VP8 `` or
  ``VP8L`` chunk) gets the ``VP8X`` header the extended format needs
  (https://developers.google.com/speed/webp/docs/riff_container#extended_file_format).

The input is always darkroom's own clean output (:mod:`darkroom.encoding`: Pillow's or an upstream's stripped of
its metadata), so no other metadata is there to merge with. The compressed pixels are not touched. It is written
before the C2PA manifest, whose hash binding then covers it (:mod:`darkroom.content_credentials`).
"""

from __future__ import annotations

import struct
import zlib
from xml.sax.saxutils import quoteattr

from darkroom.image_metadata import VP8X_ALPHA, VP8X_XMP, bitstream_facts

IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# Made by a model from a prompt; a picture a model changed (IPTC's term for inpainting and AI edits).
GENERATED = IPTC_SOURCE_TYPES + "trainedAlgorithmicMedia"
EDITED = IPTC_SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"

_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


def packet(source_type: str) -> bytes:
    """An XMP packet (UTF-8, read-only wrapper) that says only the digital source type."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f" Iptc4xmpExt:DigitalSourceType={quoteattr(source_type)}/>"
        '</rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    ).encode()


def with_xmp(data: bytes, image_format: str, xmp: bytes) -> bytes:
    """``data`` (PNG, JPEG or WebP, written by darkroom) with ``xmp`` in it."""
    if image_format == "png":
        body = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp  # keyword, no compression, no language, no title
        chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(b"iTXt")))
        return data[:33] + chunk + data[33:]  # signature (8) and IHDR (25)
    if image_format == "jpeg":
        at = 2
        if data[2:4] == b"\xff\xe0":  # JFIF's APP0 comes first
            at = 4 + struct.unpack_from(">H", data, 4)[0]
        payload = _JPEG_XMP + xmp
        if len(payload) + 2 > 0xFFFF:
            raise ValueError("an XMP packet larger than one APP1 segment")
        return data[:at] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[at:]
    if image_format == "webp":
        return _webp(data, xmp)
    raise ValueError(f"unsupported image format {image_format!r}")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _webp(data: bytes, xmp: bytes) -> bytes:
    kind = data[12:16]
    if kind == b"VP8X":
        header = bytes([data[20] | VP8X_XMP]) + data[21:30]
        chunks = data[12:20] + header + data[30:]
    else:  # a simple file: one bitstream chunk, which the extended header's canvas and alpha flag describe
        width, height, alpha = bitstream_facts(kind, data[20:50])
        flags = VP8X_XMP | (VP8X_ALPHA if alpha else 0)
        header = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunks = _chunk(b"VP8X", header) + data[12:]
    chunks += _chunk(b"XMP ", xmp)
    return b"RIFF" + struct.pack("<I", len(chunks) + 4) + b"WEBP" + chunks
