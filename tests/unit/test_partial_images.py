"""darkroom.partial_images: the asked number of partials, coarse to fine, at the final size and format."""

import base64
import io

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from darkroom.content_credentials import Provenance
from darkroom.partial_images import partial_images

MODEL = Provenance("tiny-model")  # what each partial's Content Credentials name


def final_image(output_format: str, mode: str = "RGB") -> str:
    image = Image.merge("RGB", [Image.linear_gradient("L").resize((96, 64)).rotate(angle) for angle in (0, 90, 45)])
    image = image.convert(mode)
    draw = ImageDraw.Draw(image)
    for left, size in ((8, 30), (44, 12), (62, 5), (75, 2)):  # shapes of several scales: coarse partials lose them
        draw.ellipse([left, 20, left + size, 20 + size], fill=(250, 240, 20, 255) if mode == "RGBA" else (250, 240, 20))
    if mode == "RGBA":
        draw.rectangle([0, 0, 20, 20], fill=(0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format={"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format])
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_exactly_the_count_asked(count):
    assert len(partial_images(final_image("png"), count, "png", MODEL)) == count


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_each_partial_is_the_final_size_and_format(output_format):
    for partial in partial_images(final_image(output_format), 3, output_format, MODEL):
        image = decoded(partial)
        assert image.size == (96, 64) and image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format]


def test_partials_sharpen_towards_the_final_image():
    final_b64 = final_image("png")
    final = decoded(final_b64).convert("RGB")
    distances = [
        sum(ImageStat.Stat(ImageChops.difference(decoded(p).convert("RGB"), final)).mean)
        for p in partial_images(final_b64, 3, "png", MODEL)
    ]
    assert distances[0] > distances[1] > distances[2] > 0  # coarse to fine, and none is the final image itself


def test_transparency_is_kept_in_png_partials():
    (partial,) = partial_images(final_image("png", "RGBA"), 1, "png", MODEL)
    image = decoded(partial)
    assert image.mode == "RGBA" and image.getpixel((2, 2))[3] == 0
