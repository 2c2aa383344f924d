"""The intake over generated hostile bytes: random data and mutated valid PNG/JPEG/WebP/GIF.

Whatever the bytes, ``open_image`` either returns a decoded image or raises ``ImageRejected`` (a 400
naming the parameter); never any other exception, and never more than ~2 s per input. Strict base64
never accepts a string with a character outside the alphabet.
"""

from __future__ import annotations

import base64
import io
import string
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from darkroom.intake import ImageRejected, IntakeLimits, decode_base64, open_image, parse_data_url

pytestmark = pytest.mark.reliability

MAX_SECONDS = 2.0
LIMITS = IntakeLimits(formats=frozenset({"png", "jpeg", "webp", "gif"}))
SETTINGS = settings(
    max_examples=150, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
B64_ALPHABET = set(string.ascii_letters + string.digits + "+/=")


def _seed(fmt: str, mode: str, size=(24, 16), **save) -> bytes:
    image = Image.new(mode, size)
    image.putdata(
        [
            ((x * 37) % 256, (x * 11) % 256, (x * 5) % 256, 200)[: len(mode)] if len(mode) > 1 else x % 256
            for x in range(size[0] * size[1])
        ]
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _jpeg_with_orientation() -> bytes:
    image = Image.new("RGB", (20, 12), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display: exif_transpose must run
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=80)
    return buffer.getvalue()


SEEDS = {
    "png-rgba": _seed("PNG", "RGBA"),
    "png-palette": _seed("PNG", "P"),
    "jpeg": _seed("JPEG", "RGB", quality=70),
    "jpeg-progressive": _seed("JPEG", "RGB", progressive=True),
    "jpeg-exif": _jpeg_with_orientation(),
    "webp-lossy": _seed("WEBP", "RGB", quality=60),
    "webp-lossless-alpha": _seed("WEBP", "RGBA", lossless=True),
    "gif": _seed("GIF", "P"),
}


def _check(data: bytes) -> None:
    started = time.monotonic()
    try:
        result = open_image(data, param="image", limits=LIMITS)
    except ImageRejected as rejected:
        assert rejected.status == 400 and rejected.param == "image" and rejected.code, rejected
    else:
        assert result.image.mode in ("RGB", "RGBA") and result.format in LIMITS.formats
        assert result.image.size[0] * result.image.size[1] <= LIMITS.max_pixels
    elapsed = time.monotonic() - started
    assert elapsed < MAX_SECONDS, f"{elapsed:.2f}s for {len(data)} bytes"


@st.composite
def mutated(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "append", "splice", "dup"]))
        if kind == "flip" and data:
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            # Header-heavy: half the overwrites land in the first 64 bytes (sizes, chunk lengths).
            end = min(len(data), 64) if draw(st.booleans()) else len(data)
            data[draw(st.integers(0, end - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=256))
        elif kind == "splice" and data:
            position = draw(st.integers(0, len(data)))
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "dup" and len(data) > 8:
            start = draw(st.integers(0, len(data) - 8))
            data += data[start : start + draw(st.integers(1, 64))]
    return bytes(data)


def test_the_seeds_are_accepted():
    for name, data in SEEDS.items():
        assert open_image(data, param="image", limits=LIMITS).format == name.split("-")[0], name


@given(st.binary(max_size=4096))
@SETTINGS
def test_random_bytes_are_rejected_cleanly(data):
    _check(data)


@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 "]),
    st.binary(max_size=2048),
)
@SETTINGS
def test_random_bytes_behind_a_valid_magic_number_are_rejected_cleanly(magic, tail):
    _check(magic + tail)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@given(mutated())
@settings(SETTINGS, max_examples=1500)
def test_mutated_images_decode_or_are_rejected_cleanly(data):
    _check(data)


def _png_declaring(width: int, height: int) -> bytes:
    """The PNG seed with its IHDR rewritten to another size, CRC recomputed: bytes a bomb would send."""
    data = bytearray(SEEDS["png-rgba"])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(SEEDS["jpeg"])
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@given(st.sampled_from([_png_declaring, _jpeg_declaring]), st.integers(1, 65535), st.integers(1, 65535))
@example(_png_declaring, 6000, 6000).via("just under the pixel limit")
@example(_jpeg_declaring, 6000, 6000).via("just under the pixel limit")
@example(_png_declaring, 12000, 3333).via("the longest side allowed")
@example(_jpeg_declaring, 12000, 3333).via("the longest side allowed")
@settings(SETTINGS, max_examples=60)
def test_declared_sizes_are_bounded_before_decoding_and_never_slow(build, width, height):
    data = build(width, height)
    started = time.monotonic()
    try:
        result = open_image(data, param="image", limits=LIMITS)
    except ImageRejected as rejected:
        if width * height > LIMITS.max_pixels or max(width, height) > LIMITS.max_side:
            assert rejected.code == "image_too_large", rejected.code
    else:
        assert result.size[0] * result.size[1] <= LIMITS.max_pixels
    assert time.monotonic() - started < MAX_SECONDS, (width, height)


@given(st.text(min_size=1, max_size=200).filter(lambda t: not set(t) <= B64_ALPHABET))
@SETTINGS
def test_strict_base64_refuses_any_character_outside_the_alphabet(text):
    with pytest.raises(ImageRejected) as refused:
        decode_base64(text, param="image", max_bytes=10_000)
    assert refused.value.status == 400 and refused.value.code in ("invalid_base64", "image_too_large")


@given(
    st.binary(min_size=1, max_size=300),
    st.integers(0, 400),
    st.sampled_from([" ", "\n", "\r\n", "\t", "*", "-", "_", "\x00", "\u00e9", "="]),
)
@SETTINGS
def test_strict_base64_round_trips_and_refuses_an_injected_character(data, where, junk):
    encoded = base64.b64encode(data).decode()
    assert decode_base64(encoded, param="image", max_bytes=10_000) == data
    spoiled = encoded[: where % (len(encoded) + 1)] + junk + encoded[where % (len(encoded) + 1) :]
    with pytest.raises(ImageRejected):
        decode_base64(spoiled, param="image", max_bytes=10_000)
    # A data URL goes through the same strict decoder.
    with pytest.raises(ImageRejected):
        parse_data_url("data:image/png;base64," + spoiled, param="image", max_bytes=10_000)
