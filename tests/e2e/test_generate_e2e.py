"""Image generation and models through the real openai SDK against `darkroom serve`."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

MODEL = "local-image"


def _decode(b64: str) -> tuple[bytes, Image.Image]:
    raw = base64.b64decode(b64, validate=True)
    image = Image.open(io.BytesIO(raw))
    image.load()
    return raw, image


def test_generate_webp_two_images(client):
    result = client.images.generate(
        model=MODEL, prompt="a lighthouse at dusk", size="512x512", n=2, output_format="webp"
    )

    assert len(result.data) == 2
    decoded = []
    for item in result.data:
        assert item.b64_json, "b64_json is the default response format"
        raw, image = _decode(item.b64_json)
        assert image.format == "WEBP"
        assert image.size == (512, 512)
        decoded.append((raw, image))
        # The presigned URL serves exactly the bytes that were inlined.
        assert item.url and item.url.startswith("http")
        fetched = httpx.get(item.url, timeout=30)
        assert fetched.status_code == 200, fetched.text[:500]
        assert fetched.content == raw
        assert fetched.headers["content-type"] == "image/webp"
    assert decoded[0][0] != decoded[1][0], "the two images of one request should differ"

    assert result.size == "512x512"
    assert result.output_format == "webp"
    assert result.quality == "medium"  # local-image's default
    assert result.background == "opaque"  # "auto" without transparency resolves to opaque
    usage = result.usage
    assert usage is not None
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.text_tokens == usage.input_tokens


def test_different_prompts_give_different_pixels(client):
    images = []
    for prompt in ("a red fox in snow", "a submarine in a teacup"):
        result = client.images.generate(model=MODEL, prompt=prompt, size="256x256", output_format="png")
        assert len(result.data) == 1
        _, image = _decode(result.data[0].b64_json)
        assert image.size == (256, 256)
        images.append(image.convert("RGBA").tobytes())
    assert images[0] != images[1]


def test_png_transparent_background_has_alpha(client):
    result = client.images.generate(
        model=MODEL, prompt="a floating balloon", size="256x256", output_format="png", background="transparent"
    )
    assert result.background == "transparent"
    assert result.output_format == "png"
    _, image = _decode(result.data[0].b64_json)
    assert image.format == "PNG"
    assert image.size == (256, 256)
    assert "A" in image.getbands(), image.mode
    low, _high = image.getchannel("A").getextrema()
    assert low == 0, "a transparent background must leave fully transparent pixels"


def test_jpeg(client):
    result = client.images.generate(
        model=MODEL, prompt="a bowl of lemons", size="256x256", output_format="jpeg", quality="low"
    )
    assert result.output_format == "jpeg"
    assert result.quality == "low"
    raw, image = _decode(result.data[0].b64_json)
    assert raw[:3] == b"\xff\xd8\xff"
    assert image.format == "JPEG"
    assert image.size == (256, 256)


def test_response_format_url(client):
    result = client.images.generate(model=MODEL, prompt="a paper boat", size="256x256", response_format="url")
    assert len(result.data) == 1
    item = result.data[0]
    assert item.b64_json is None
    assert item.url
    fetched = httpx.get(item.url, timeout=30)
    assert fetched.status_code == 200
    image = Image.open(io.BytesIO(fetched.content))
    assert image.format == "PNG"  # the default output format
    assert image.size == (256, 256)


def test_models_list_and_retrieve(client):
    ids = {model.id for model in client.models.list()}
    assert {"local-image", "local-vision", "local-text"} <= ids
    assert client.models.retrieve("local-image").id == "local-image"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


def test_raw_response_headers(client):
    raw = client.images.with_raw_response.generate(model=MODEL, prompt="a kite", size="256x256")
    assert raw.status_code == 200
    headers = raw.headers
    assert headers.get("x-request-id")
    for kind in ("requests", "images"):
        limit = headers.get(f"x-ratelimit-limit-{kind}")
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        assert limit is not None and remaining is not None and reset is not None, dict(headers)
        assert int(limit) > 0
        assert 0 <= int(remaining) < int(limit), "this request counted against the window"
        assert reset.endswith("s") and int(reset[:-1]) >= 0
    # Default limits: 60 requests/min, 20 images/min, 500 images/day; one request of one image so far.
    assert headers["x-ratelimit-remaining-requests"] == str(int(headers["x-ratelimit-limit-requests"]) - 1)
    assert headers["x-ratelimit-remaining-images"] == str(int(headers["x-ratelimit-limit-images"]) - 1)
    parsed = raw.parse()
    assert len(parsed.data) == 1
