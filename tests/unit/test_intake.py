"""The intake against a corpus of hostile inputs the tests build themselves."""

import base64
import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image

from darkroom import intake
from darkroom.intake import ImageRejected, IntakeLimits, open_image
from memory_probe import peak_growth

LIMITS = IntakeLimits(
    max_images=4, max_image_bytes=2 * 1024 * 1024, max_total_bytes=3 * 1024 * 1024, max_pixels=4_000_000, max_side=4096
)


def _encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _rejected(data: bytes, code: str, limits: IntakeLimits = LIMITS, **kwargs) -> ImageRejected:
    with pytest.raises(ImageRejected) as error:
        open_image(data, param="image", limits=limits, **kwargs)
    assert error.value.status == 400 and error.value.code == code and error.value.param == "image"
    assert "iVBOR" not in error.value.message and "\\x" not in error.value.message
    return error.value


@pytest.mark.parametrize("fmt,pil", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_allowed_formats_decode_to_pixels(fmt, pil):
    decoded = open_image(_encoded(Image.new("RGB", (64, 48), (200, 10, 10)), pil), param="image", limits=LIMITS)
    assert (decoded.format, decoded.size, decoded.image.mode) == (fmt, (64, 48), "RGB")


def test_alpha_is_kept_and_reported():
    decoded = open_image(_encoded(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), param="image", limits=LIMITS)
    assert decoded.has_alpha and decoded.image.mode == "RGBA"


@pytest.mark.parametrize("claimed", [(20_000, 20_000), (9_500, 9_500), (2_100, 2_100), (5_000, 10)])
def test_decompression_bombs_are_refused_from_the_header(claimed):
    """Pillow errors only past 2x its limit and warns in between; darkroom refuses both, and its own
    lower limit, before decoding a single row."""
    _rejected(_png_header_claiming(*claimed), "image_too_large")


def test_a_real_high_ratio_bomb_is_refused_without_decoding():
    solid = _encoded(Image.new("L", (8000, 8000), 0), "PNG")  # 64 Mpx: a 64 MB raster in ~60 KB
    assert len(solid) < 100_000
    limits = IntakeLimits(max_pixels=40_000_000, max_side=12_000)
    assert peak_growth(lambda: open_image(solid, param="image", limits=limits)) < 16 * 1024 * 1024
    _rejected(solid, "image_too_large", limits=limits)
    # The probe sees a real decode of the same size, so the bound above means something.
    assert peak_growth(lambda: Image.open(io.BytesIO(solid)).load()) > 48 * 1024 * 1024


def test_truncated_and_corrupt_files_are_invalid():
    png = _encoded(Image.effect_noise((256, 256), 50).convert("RGB"), "PNG")
    _rejected(png[: len(png) // 2], "invalid_image")
    jpeg = _encoded(Image.effect_noise((256, 256), 50).convert("RGB"), "JPEG")
    _rejected(jpeg[:200], "invalid_image")
    _rejected(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "invalid_image")


@pytest.mark.parametrize(
    "data",
    [
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><svg/>",
        b"GIF89a" + b"\x00" * 32,  # GIF is not an edit format
        b"BM" + b"\x00" * 64,  # BMP
        b"II*\x00" + b"\x00" * 64,  # TIFF
        b"8BPS" + b"\x00" * 64,  # PSD
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF that is not WebP
        b"%PDF-1.7\n",
        b"",
    ],
)
def test_anything_not_an_allowed_format_by_its_bytes_is_refused(data):
    _rejected(data, "unsupported_image_format")


def test_the_bytes_decide_not_the_declared_type():
    jpeg = _encoded(Image.new("RGB", (8, 8)), "JPEG")
    _rejected(jpeg, "invalid_image", declared_type="image/png")  # a data URL that lies
    assert open_image(jpeg, param="image", limits=LIMITS, declared_type="image/jpeg").format == "jpeg"
    assert open_image(jpeg, param="image", limits=LIMITS, declared_type="application/octet-stream").format == "jpeg"


def test_animated_images_are_refused_even_where_gif_is_allowed():
    frames = [Image.new("RGB", (16, 16), (80 * i, 0, 0)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    _rejected(buffer.getvalue(), "invalid_image", limits=IntakeLimits(formats=frozenset({"gif"})))
    still = _encoded(Image.new("P", (16, 16), 1), "GIF")
    assert open_image(still, param="image", limits=IntakeLimits(formats=frozenset({"gif"}))).format == "gif"


def test_oversize_bytes_are_refused_before_any_parsing():
    _rejected(b"\x89PNG\r\n\x1a\n" + b"\x00" * (LIMITS.max_image_bytes + 1), "image_too_large")


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = open_image(_encoded(image, "JPEG", exif=exif), param="image", limits=LIMITS)
    assert decoded.size == (20, 40)


@pytest.mark.parametrize(
    "text", ["aGVs!!bG8=", "aGVs\nbG8=", "aGVsbG8=aGVsbG8=", "-_-_", "aGVsbG8", "", "AAAA=", "AAAA====", "aGVsbG8=="]
)
def test_base64_is_strict(text):
    with pytest.raises(ImageRejected) as error:
        intake.decode_base64(text, param="images[0].image_url", max_bytes=1024)
    assert (error.value.code, error.value.param) == ("invalid_base64", "images[0].image_url")


def test_base64_length_is_checked_before_decoding():
    huge = "A" * (4 * 1024 * 1024)
    tracemalloc.start()
    with pytest.raises(ImageRejected) as error:
        intake.decode_base64(huge, param="image", max_bytes=1024 * 1024)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert error.value.code == "image_too_large" and peak < 512 * 1024


def test_data_urls():
    png = _encoded(Image.new("RGB", (4, 4)), "PNG")
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert intake.parse_data_url(url, param="p", max_bytes=1024) == ("image/png", png)
    for bad in ("data:image/png,rawbytes", "image/png;base64,AAAA", "data:;base64" + "A" * 300):
        with pytest.raises(ImageRejected) as error:
            intake.parse_data_url(bad, param="p", max_bytes=1024)
        assert error.value.code == "invalid_image_url"


def test_references():
    png = _encoded(Image.new("RGB", (4, 4)), "PNG")
    ok = intake.read_reference(
        {"image_url": "data:image/png;base64," + base64.b64encode(png).decode()},
        param="images[0]",
        tenant_id="t",
        files=None,
        limits=LIMITS,
    )
    assert ok.size == (4, 4)
    cases = [
        ({"image_url": "https://169.254.169.254/latest/meta-data"}, "images[0].image_url", "unsupported_image_url"),
        ({"image_url": 5}, "images[0].image_url", "invalid_value"),
        ({"image_url": "x", "file_id": "y"}, "images[0]", "invalid_value"),
        ("data:image/png;base64,AAAA", "images[0]", "invalid_value"),
        ({"file_id": "file-abc"}, "images[0].file_id", "invalid_value"),  # no file store configured
    ]
    for ref, param, code in cases:
        with pytest.raises(ImageRejected) as error:
            intake.read_reference(ref, param="images[0]", tenant_id="t", files=None, limits=LIMITS)
        assert (error.value.param, error.value.code) == (param, code), ref


def test_totals_bound_count_and_bytes():
    one = open_image(_encoded(Image.new("RGB", (8, 8)), "PNG"), param="image", limits=LIMITS)
    with pytest.raises(ImageRejected) as error:
        intake.check_totals([one] * 5, param="image", limits=LIMITS)
    assert error.value.code == "too_many_images"
    heavy = intake.IntakeImage(one.image, "png", 2 * 1024 * 1024, False)
    with pytest.raises(ImageRejected) as error:
        intake.check_totals([heavy, heavy], param="image", limits=LIMITS)
    assert error.value.code == "image_too_large"


def test_mask_rules_name_the_mask_and_say_why():
    first = open_image(_encoded(Image.new("RGB", (32, 32)), "PNG"), param="image", limits=LIMITS)
    good = open_image(_encoded(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), "PNG"), param="mask", limits=LIMITS)
    assert intake.edit_mask(good, first).getextrema() == (0, 0)
    bad = {
        "PNG": _encoded(Image.new("RGBA", (16, 16)), "PNG"),  # wrong size
        "alpha": _encoded(Image.new("RGB", (32, 32)), "PNG"),  # no alpha channel
        "format": _encoded(Image.new("RGB", (32, 32)), "JPEG"),  # not a PNG
    }
    messages = {}
    for name, data in bad.items():
        mask = open_image(data, param="mask", limits=LIMITS)
        with pytest.raises(ImageRejected) as error:
            intake.edit_mask(mask, first)
        assert (error.value.param, error.value.code) == ("mask", "invalid_mask")
        messages[name] = error.value.message
    assert "same size" in messages["PNG"] and "alpha" in messages["alpha"] and "PNG" in messages["format"]
