"""Lossless metadata stripping (darkroom.image_metadata): what goes, what stays byte for byte, the pixels
unchanged, and every structure the parsers do not expect refused (None: the caller encodes instead)."""

import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from darkroom.image_metadata import strip_metadata


def _picture(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> Image.Image:
    """The same pixels every call (effect_noise is random: fixed once per session)."""
    bands = [Image.linear_gradient("L").resize(size), Image.radial_gradient("L").resize(size), _NOISE.resize(size)]
    image = Image.merge("RGB", bands)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").rotate(90).resize(size))
    return image


_NOISE = Image.effect_noise((64, 48), 40).convert("L")


def _save(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _exif(**tags: object) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Upstream Camera Co."
    for key, value in tags.items():
        exif[{"orientation": 0x0112}[key]] = value
    exif.get_ifd(0x8825)[2] = (51.0, 28.0, 38.0)  # GPSLatitude
    exif.get_ifd(0x8825)[1] = "N"
    return exif.tobytes()


def _pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.mode, image.size, image.tobytes()


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk bytes) in order: the test's own reading of the container."""
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        chunks.append((data[offset + 4 : offset + 8], data[offset : offset + 12 + length]))
        offset += 12 + length
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _png_with(data: bytes, *extra: bytes, before: bytes = b"IDAT") -> bytes:
    """``data`` with chunks inserted before its first ``before`` chunk."""
    chunks = _png_chunks(data)
    index = next(i for i, (kind, _) in enumerate(chunks) if kind == before)
    return (
        b"\x89PNG\r\n\x1a\n"
        + b"".join(c for _, c in chunks[:index])
        + b"".join(extra)
        + b"".join(c for _, c in chunks[index:])
    )


# -- PNG ---------------------------------------------------------------------------------------------------------


def test_png_loses_text_exif_and_time_and_keeps_everything_else_byte_for_byte():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a prompt, seed 42, sampler euler")
    info.add_itxt("Description", "généré", zip=True)
    info.add_text("Comment", "x" * 5000, zip=True)
    plain = _save(_picture(), "PNG")
    original = _png_with(
        _save(_picture(), "PNG", pnginfo=info, exif=_exif()),
        _png_chunk(b"tIME", bytes(7)),
        _png_chunk(b"pHYs", bytes(9)),
        _png_chunk(b"caBX", b"a provenance manifest"),
    )
    stripped = strip_metadata(original, "png")
    assert stripped is not None
    assert (stripped.format, stripped.width, stripped.height, stripped.has_alpha) == ("png", 64, 48, False)
    assert stripped.data == plain  # only metadata chunks were in the way: the rest is the same bytes
    assert [k for k, _ in _png_chunks(stripped.data)] == [b"IHDR", b"IDAT", b"IEND"]
    assert _pixels(stripped.data) == _pixels(original)
    reopened = Image.open(io.BytesIO(stripped.data))
    reopened.load()
    assert not reopened.info.get("exif") and not reopened.text


def test_png_keeps_what_changes_how_it_renders():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    original = _save(_picture("RGBA"), "PNG", icc_profile=profile)
    original = _png_with(original, _png_chunk(b"gAMA", struct.pack(">I", 45455)), _png_chunk(b"tEXt", b"k\x00v"))
    stripped = strip_metadata(original, "png")
    assert stripped is not None and stripped.has_alpha
    assert [k for k, _ in _png_chunks(stripped.data)] == [b"IHDR", b"iCCP", b"gAMA", b"IDAT", b"IEND"]
    assert Image.open(io.BytesIO(stripped.data)).info["icc_profile"] == profile


def test_png_drops_bytes_after_iend_and_a_suggested_palette():
    plain = _save(_picture(), "PNG")
    with_palette = _png_with(plain, _png_chunk(b"PLTE", bytes(12)))
    assert strip_metadata(with_palette + b"trailing junk", "png").data == plain


@pytest.mark.parametrize(
    "image,options",
    [
        (_picture().convert("P"), {}),  # palette
        (_picture().convert("L"), {}),  # grey
        (_picture().convert("I;16"), {}),  # 16-bit
        (_picture(), {"transparency": (0, 0, 0)}),  # tRNS: a colour key is alpha by another name
    ],
)
def test_png_of_another_kind_is_refused(image, options):
    assert strip_metadata(_save(image, "PNG", **options), "png") is None


def test_interlaced_png_is_refused():
    data = bytearray(_save(_picture(), "PNG"))
    data[8 + 8 + 12] = 1  # IHDR's interlace byte
    crc = zlib.crc32(bytes(data[12:29]))
    data[29:33] = struct.pack(">I", crc)
    assert strip_metadata(bytes(data), "png") is None


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_png_whose_dropped_exif_turns_the_picture_is_refused(orientation):
    assert strip_metadata(_save(_picture(), "PNG", exif=_exif(orientation=orientation)), "png") is None
    assert strip_metadata(_save(_picture(), "PNG", exif=_exif(orientation=1)), "png") is not None


def test_png_whose_dropped_xmp_turns_the_picture_is_refused():
    def xmp(value: str) -> bytes:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", f'<x:xmpmeta><rdf:Description tiff:Orientation="{value}"/></x:xmpmeta>')
        return _save(_picture(), "PNG", pnginfo=info)

    assert strip_metadata(xmp("6"), "png") is None
    assert strip_metadata(xmp("1"), "png") is not None
    raw_profile = PngImagePlugin.PngInfo()
    raw_profile.add_text("Raw profile type exif", "\nexif\n   4\n00000000\n")
    assert strip_metadata(_save(_picture(), "PNG", pnginfo=raw_profile), "png") is None


def test_png_with_a_bad_crc_an_unknown_critical_chunk_or_split_idat_is_refused():
    plain = _save(_picture(), "PNG")
    corrupt = bytearray(plain)
    corrupt[40] ^= 0xFF  # inside IDAT
    assert strip_metadata(bytes(corrupt), "png") is None
    assert strip_metadata(_png_with(plain, _png_chunk(b"QUUX", b"?")), "png") is None
    chunks = _png_chunks(_save(_picture(), "PNG"))
    idat = next(c for k, c in chunks if k == b"IDAT")
    body = idat[8:-4]
    split = _png_chunk(b"IDAT", body[:10]) + _png_chunk(b"tEXt", b"a\x00b") + _png_chunk(b"IDAT", body[10:])
    rebuilt = b"\x89PNG\r\n\x1a\n" + chunks[0][1] + split + chunks[-1][1]
    assert strip_metadata(rebuilt, "png") is None


# -- JPEG --------------------------------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> list[int]:
    """The markers before the first scan."""
    markers, offset = [], 2
    while data[offset + 1] != 0xDA:
        markers.append(data[offset + 1])
        offset += 2 + struct.unpack_from(">H", data, offset + 2)[0]
    return markers


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_loses_exif_gps_xmp_and_comments_with_the_scans_untouched(progressive):
    plain = _save(_picture(), "JPEG", quality=90, progressive=progressive)
    original = _save(
        _picture(),
        "JPEG",
        quality=90,
        progressive=progressive,
        exif=_exif(),
        comment=b"made by a model",
        xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="1" dc:creator="someone"/></x:xmpmeta>',
    )
    stripped = strip_metadata(original, "jpeg")
    assert stripped is not None and (stripped.width, stripped.height, stripped.has_alpha) == (64, 48, False)
    assert stripped.data == plain  # JFIF, tables and scans: the same bytes as a file written without metadata
    assert _pixels(stripped.data) == _pixels(original)
    reopened = Image.open(io.BytesIO(stripped.data))
    assert not reopened.getexif() and "comment" not in reopened.info and "xmp" not in reopened.info
    assert 0xE1 in _jpeg_segments(original) and 0xE1 not in _jpeg_segments(stripped.data)


def test_jpeg_keeps_its_icc_profile_and_drops_bytes_after_eoi():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    original = _save(_picture(), "JPEG", icc_profile=profile, exif=_exif())
    stripped = strip_metadata(original + b"\xff\xd8 a second picture (MPF)", "jpeg")
    assert stripped is not None and stripped.data.endswith(b"\xff\xd9")
    assert Image.open(io.BytesIO(stripped.data)).info["icc_profile"] == profile


@pytest.mark.parametrize("orientation", [2, 3, 6])
def test_jpeg_whose_exif_turns_the_picture_is_refused(orientation):
    assert strip_metadata(_save(_picture(), "JPEG", exif=_exif(orientation=orientation)), "jpeg") is None


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpeg_are_refused(mode):
    assert strip_metadata(_save(_picture().convert(mode), "JPEG"), "jpeg") is None


def test_truncated_jpeg_is_refused():
    data = _save(_picture(), "JPEG")
    assert strip_metadata(data[: len(data) // 2], "jpeg") is None
    assert strip_metadata(data[:-2], "jpeg") is None  # no EOI


# -- WebP --------------------------------------------------------------------------------------------------------


def _riff_chunks(data: bytes) -> list[bytes]:
    kinds, offset = [], 12
    while offset < len(data):
        kind, length = struct.unpack_from("<4sI", data, offset)
        kinds.append(kind)
        offset += 8 + length + (length & 1)
    return kinds


@pytest.mark.parametrize(
    "mode,options", [("RGB", {"quality": 80}), ("RGBA", {"quality": 80}), ("RGBA", {"lossless": True})]
)
def test_webp_loses_exif_and_xmp_and_fixes_flags_and_size(mode, options):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    original = _save(_picture(mode), "WEBP", exif=_exif(), xmp=b"<x:xmpmeta/>", icc_profile=profile, **options)
    assert b"EXIF" in _riff_chunks(original) and b"XMP " in _riff_chunks(original)
    stripped = strip_metadata(original, "webp")
    assert stripped is not None and stripped.has_alpha == (mode == "RGBA")
    assert b"EXIF" not in _riff_chunks(stripped.data) and b"XMP " not in _riff_chunks(stripped.data)
    assert struct.unpack_from("<I", stripped.data, 4)[0] == len(stripped.data) - 8
    assert stripped.data[20] & 0x0C == 0 and stripped.data[20] & 0x20  # no EXIF/XMP flags; ICC kept
    assert _pixels(stripped.data) == _pixels(original)
    reopened = Image.open(io.BytesIO(stripped.data))
    assert not reopened.getexif() and reopened.info["icc_profile"] == profile


def test_simple_webp_passes_as_it_is():
    data = _save(_picture(), "WEBP", quality=80)
    stripped = strip_metadata(data, "webp")
    assert stripped is not None and stripped.data == data and (stripped.width, stripped.height) == (64, 48)


def test_webp_with_exif_orientation_or_animation_is_refused():
    assert strip_metadata(_save(_picture(), "WEBP", exif=_exif(orientation=6)), "webp") is None
    frames = [_picture(), _picture().rotate(90)]
    animated = _save(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    assert strip_metadata(animated, "webp") is None


# -- anything else -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
def test_damaged_files_never_raise(image_format):
    """Truncations and flipped bytes: a Stripped or None, never an exception."""
    original = _save(_picture(), image_format.upper(), exif=_exif())
    rng = random.Random(17)  # noqa: S311 -- reproducible damage, not secrets
    for _ in range(300):
        data = bytearray(original)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        for _ in range(rng.randrange(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        strip_metadata(bytes(data), image_format)


def test_another_format_or_none_at_all_is_refused():
    assert strip_metadata(_save(_picture(), "PNG"), "jpeg") is None
    assert strip_metadata(_save(_picture(), "GIF"), "gif") is None
    assert strip_metadata(b"", "png") is None
