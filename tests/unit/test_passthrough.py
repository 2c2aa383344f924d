"""No re-encode when nothing changes: a model's file that already is what the request asked for (format, size,
mode) is stored as it came, metadata stripped (darkroom.encoding.passed_through); anything else is encoded
exactly once. Driven through the generate use case with a backend that answers as a remote model does (base64
read by darkroom's own answer path, aws_runtime.decode_images), on in-memory ports."""

import base64
import io
import struct
import zlib

import pytest
from PIL import Image, ImageOps, PngImagePlugin

from darkroom.api.images import ImageGenerateRequest
from darkroom.editing import keep_outside_mask
from darkroom.encoding import encode
from darkroom.generation import generate_images
from darkroom.image_metadata import strip_metadata
from darkroom.inference import GeneratedImage
from darkroom.inference.aws_runtime import decode_images
from darkroom.ports import RequestContext
from darkroom.tenancy import Limits, Tenant
from fakes import MemoryStore, image_ports

TENANT = Tenant("tnt_0123456789abcdef", "acme", "active", Limits(images_per_minute=100))
SIZE = (256, 256)


class AnsweringBackend:
    """Answers every generate with one prepared file, read as a remote model's answer is."""

    def __init__(self, data: bytes) -> None:
        self.answer = base64.b64encode(data).decode()

    def generate(self, model, job):
        return decode_images([self.answer] * job.n, job.n, job.width, job.height, job.transparent)


def _picture(mode: str = "RGB", size: tuple[int, int] = SIZE) -> Image.Image:
    image = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
        ],
    )
    if mode == "RGBA":
        image.putalpha(Image.radial_gradient("L").resize(size))
    return image


def _save(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _gps_exif(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif.get_ifd(0x8825)[2] = (51.0, 28.0, 38.0)
    return exif.tobytes()


def _generate(answer: bytes, **fields) -> tuple[bytes, MemoryStore]:
    store = MemoryStore()
    ports = image_ports(store=store, backends=lambda model: AnsweringBackend(answer))
    request = ImageGenerateRequest.model_validate({"prompt": "a lighthouse", "size": "256x256", **fields})
    result = generate_images(RequestContext(TENANT, "req-1"), request, ports)
    return store.get(result.images[0].key), store


@pytest.fixture
def saves(monkeypatch):
    """Counts every encode darkroom makes (Pillow's Image.save), letting each through."""
    calls: list[str] = []
    original = Image.Image.save

    def counted(self, fp, format=None, **options):
        calls.append(format)
        return original(self, fp, format, **options)

    monkeypatch.setattr(Image.Image, "save", counted)
    return calls


def _pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.mode, image.size, image.tobytes()


def test_a_png_answer_as_asked_is_stored_as_it_came_without_its_text(saves):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "prompt: a lighthouse; seed: 1234; model: sdxl")
    plain = _save(_picture(), "PNG")
    answer = _save(_picture(), "PNG", pnginfo=info)
    saves.clear()
    stored, _ = _generate(answer, output_format="png")
    assert saves == []  # nothing encoded
    # Byte for byte, less the tEXt chunk, once darkroom's own marks (its XMP, its C2PA manifest) are taken out again.
    assert strip_metadata(stored, "png").data == plain
    assert b"lighthouse" not in stored
    assert _pixels(stored) == _pixels(answer)
    info = Image.open(io.BytesIO(stored)).info  # the digital source type (Pillow shows it twice), nothing else
    assert set(info) == {"XML:com.adobe.xmp", "xmp"} and b"trainedAlgorithmicMedia" in info["xmp"]


def test_a_jpeg_answer_loses_its_gps_and_keeps_its_pixels(saves):
    answer = _save(_picture(), "JPEG", quality=90, exif=_gps_exif())
    saves.clear()
    stored, _ = _generate(answer, output_format="jpeg")
    assert saves == []
    assert b"Exif" in answer and b"Exif" not in stored
    assert not Image.open(io.BytesIO(stored)).getexif().get_ifd(0x8825)
    assert _pixels(stored) == _pixels(answer)


def test_a_transparent_webp_answer_passes_when_transparency_was_asked_for(saves):
    answer = _save(_picture("RGBA"), "WEBP", lossless=True, exif=_gps_exif())
    saves.clear()
    stored, _ = _generate(answer, output_format="webp", background="transparent")
    assert saves == [] and b"EXIF" not in stored
    assert _pixels(stored) == _pixels(answer)


@pytest.mark.parametrize(
    "answer,fields,why",
    [
        (_save(_picture(size=(512, 512)), "PNG"), {"output_format": "png"}, "another size: covered, then encoded"),
        (_save(_picture(), "PNG"), {"output_format": "jpeg"}, "another format"),
        (_save(_picture(), "JPEG"), {"output_format": "jpeg", "output_compression": 40}, "a quality was asked for"),
        (_save(_picture(), "PNG"), {"output_format": "png", "background": "transparent"}, "RGB, RGBA asked for"),
        (_save(_picture("RGBA"), "PNG"), {"output_format": "png"}, "RGBA, opaque asked for: flattened"),
        (_save(_picture().convert("P"), "PNG"), {"output_format": "png"}, "a palette PNG"),
        (_save(_picture().convert("L"), "PNG"), {"output_format": "png"}, "a grey PNG"),
    ],
)
def test_anything_else_is_encoded_exactly_once(saves, answer, fields, why):
    saves.clear()
    stored, _ = _generate(answer, **fields)
    assert len(saves) == 1, why
    image = Image.open(io.BytesIO(stored))
    assert (
        image.size == SIZE and image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fields["output_format"]]
    )
    assert image.mode == ("RGBA" if fields.get("background") == "transparent" else "RGB")


def test_an_answer_turned_by_its_exif_is_encoded_from_the_turned_pixels(saves):
    """Orientation 3 (180 degrees): the intake turns the pixels; the file's own bytes would show them upside
    down once its EXIF is gone, so they are not passed through."""
    answer = _save(_picture(), "PNG", exif=_gps_exif(orientation=3))
    saves.clear()
    stored, _ = _generate(answer, output_format="png")
    assert len(saves) == 1
    turned = ImageOps.exif_transpose(Image.open(io.BytesIO(answer))).convert("RGB")
    assert _pixels(stored) == ("RGB", SIZE, turned.tobytes())
    assert not Image.open(io.BytesIO(stored)).getexif()


def test_a_damaged_container_that_still_decodes_is_encoded():
    """A critical chunk Pillow skips but the parser does not know: refused, so encoded."""
    plain = _save(_picture(), "PNG")
    body = b"?"
    odd = struct.pack(">I", len(body)) + b"QUUX" + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(b"QUUX")))
    answer = plain[:33] + odd + plain[33:]  # after IHDR
    image = Image.open(io.BytesIO(answer))
    image.load()  # Pillow reads it...
    assert encode(image.convert("RGB"), "png", None, False, answer) != answer  # ...but it is encoded, not passed


def test_only_the_models_own_unresized_pixels_carry_their_file():
    data = _save(_picture(), "PNG")
    encoded = base64.b64encode(data).decode()
    assert decode_images([encoded], 1, 256, 256, False)[0].upstream == data
    assert decode_images([encoded], 1, 128, 128, False)[0].upstream is None  # resized: the file is not the pixels
    edited = GeneratedImage(_picture(), upstream=data)
    kept = keep_outside_mask(_picture(), Image.new("L", SIZE, 128), edited)
    assert kept.upstream is None  # an edit composited outside the mask changed pixels


def test_without_a_file_the_pixels_are_encoded_once(saves):
    saves.clear()
    assert Image.open(io.BytesIO(encode(_picture(), "webp", None, False))).size == SIZE
    assert saves == ["WEBP"]
