"""The XMP digital source type (darkroom.image_xmp) goes into each format's own place for XMP, and the pixels,
mode and size stay exactly what they were: checked by decoding with Pillow, for every kind of file darkroom writes."""

import io

import pytest
from PIL import Image

from darkroom.image_xmp import EDITED, GENERATED, packet, with_xmp


def _file(fmt: str, mode: str, **save) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((37, 21), 60).convert(mode).save(buffer, format=fmt, **save)
    return buffer.getvalue()


CASES = [
    ("png", "RGB", {}),
    ("png", "RGBA", {}),
    ("jpeg", "RGB", {}),
    ("webp", "RGB", {"quality": 90}),  # a simple file (VP8): gets a VP8X header
    ("webp", "RGB", {"lossless": True}),  # VP8L
    ("webp", "RGBA", {"quality": 90}),  # extended already (VP8X, ALPH)
    ("webp", "RGBA", {"lossless": True}),  # a simple VP8L with alpha: the VP8X alpha flag must say so
]


@pytest.mark.parametrize(("fmt", "mode", "save"), CASES)
def test_the_packet_is_where_readers_look_and_the_picture_is_unchanged(fmt, mode, save):
    plain = _file(fmt.upper(), mode, **save)
    marked = with_xmp(plain, fmt, packet(GENERATED))
    before, after = Image.open(io.BytesIO(plain)), Image.open(io.BytesIO(marked))
    assert (after.format, after.mode, after.size) == (before.format, before.mode, before.size)
    assert after.tobytes() == before.tobytes()
    xmp = after.info.get("xmp")
    assert isinstance(xmp, bytes) and b'Iptc4xmpExt:DigitalSourceType="' + GENERATED.encode() + b'"' in xmp


def test_the_packet_says_only_the_source_type():
    text = packet(EDITED).decode("utf-8")
    assert "compositeWithTrainedAlgorithmicMedia" in text
    assert text.startswith("<?xpacket begin=") and text.endswith('<?xpacket end="r"?>')
    assert text.count("=") == text.count('="')  # attributes only, each quoted
