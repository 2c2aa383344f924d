import io

import pytest
from PIL import Image

from darkroom.encoding import encode
from darkroom.inference import GenerateJob
from darkroom.inference.local import LocalBackend, render


def _job(prompt="a red fox", width=320, height=200, transparent=False, **options) -> GenerateJob:
    return GenerateJob(
        prompt=prompt,
        width=width,
        height=height,
        n=1,
        quality="medium",
        transparent=transparent,
        deadline_seconds=5,
        options=options,
    )


@pytest.mark.parametrize("output_format,pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_images_have_the_exact_size_and_format(output_format, pil_format):
    data = encode(render(_job(width=320, height=200), 0), output_format, None, transparent=False)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == pil_format and decoded.size == (320, 200)


def test_different_prompts_differ_and_the_same_prompt_is_deterministic():
    first = render(_job("a red fox"), 0).tobytes()
    assert render(_job("a red fox"), 0).tobytes() == first
    assert render(_job("a blue whale"), 0).tobytes() != first
    assert render(_job("a red fox", seed=7), 0).tobytes() != first
    assert render(_job("a red fox"), 1).tobytes() != first  # n > 1 gives distinct images


def test_transparent_background_keeps_alpha_in_png_and_webp_but_not_jpeg():
    image = render(_job(transparent=True), 0)
    for output_format in ("png", "webp"):
        decoded = Image.open(io.BytesIO(encode(image, output_format, None, transparent=True))).convert("RGBA")
        assert decoded.getextrema()[3][0] == 0  # some pixels fully transparent
    opaque = Image.open(io.BytesIO(encode(image, "png", None, transparent=False))).convert("RGBA")
    assert opaque.getextrema()[3] == (255, 255)


def test_output_compression_trades_quality_for_size():
    image = render(_job(width=512, height=512), 0)
    assert len(encode(image, "jpeg", 10, False)) < len(encode(image, "jpeg", 100, False))
    assert len(encode(image, "webp", 10, False)) < len(encode(image, "webp", 100, False))


def test_backend_returns_n_images():
    job = GenerateJob(prompt="x", width=64, height=64, n=3, quality="low", transparent=False, deadline_seconds=5)
    images = LocalBackend().generate(None, job)
    assert len(images) == 3 and all(i.image.size == (64, 64) for i in images)


def test_partials_are_the_drawing_as_it_goes_and_stop_when_the_client_goes():
    import dataclasses
    import time

    from darkroom.api.errors import ClientGone, InvalidRequest
    from darkroom.inference import PartialSink

    got: list[tuple[int, bytes]] = []
    sink = PartialSink(count=2, deliver=lambda index, image: got.append((index, image.tobytes())))
    job = dataclasses.replace(_job(step_seconds=0.02), partials=sink)
    started = time.monotonic()
    (final,) = LocalBackend().generate(None, job)
    assert time.monotonic() - started >= 9 * 0.02  # medium quality: nine shapes, one step each
    assert [index for index, _ in got] == [0, 1]
    assert got[0][1] != got[1][1] != final.image.tobytes()  # earlier stages, coarse to complete

    sink.stopped.set()
    with pytest.raises(ClientGone):
        LocalBackend().generate(None, job)
    for bad in (-1, 2, "soon", True):
        with pytest.raises(InvalidRequest):
            LocalBackend().generate(None, _job(step_seconds=bad))
