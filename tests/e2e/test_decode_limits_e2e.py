"""The hostile corpus through the real openai SDK and the local stack (each function with its template
MemorySize): a 400 naming the image, on every route family."""

from __future__ import annotations

import base64

import openai
import pytest

import hostile_images as hostile

pytestmark = pytest.mark.e2e

HOSTILE_JPEG = hostile.progressive_jpeg(2000, 5000)  # 94 KB: about 12 s of CPU on Lambda if decoded


def _refused(call, error_body) -> dict:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    return error_body(caught.value.response)


def test_sixteen_40_mpx_pngs_in_one_edit(client, error_body):
    png = hostile.zero_rgba_png()
    error = _refused(lambda: client.images.edit(model="local-image", image=[png] * 16, prompt="x"), error_body)
    # EditFunction's 1024 MB give a 44.7 M pixel budget: the second 40 M pixel header is refused, before any decode
    assert (error["code"], error["param"]) == ("images_too_large", "image[1]"), error


def test_a_5000_scan_jpeg_in_an_edit(client, error_body):
    error = _refused(
        lambda: client.images.edit(model="local-image", image=("a.jpg", HOSTILE_JPEG, "image/jpeg"), prompt="x"),
        error_body,
    )
    assert (error["code"], error["param"]) == ("invalid_image", "image"), error


def test_a_5000_scan_jpeg_as_a_responses_input_image(client, error_body):
    url = "data:image/jpeg;base64," + base64.b64encode(HOSTILE_JPEG).decode()
    content = [{"type": "input_text", "text": "what is this?"}, {"type": "input_image", "image_url": url}]
    error = _refused(
        lambda: client.responses.create(model="local-vision", input=[{"role": "user", "content": content}]), error_body
    )
    assert (error["code"], error["param"]) == ("invalid_image", "input[0].content[1].image_url"), error


def test_a_5000_scan_jpeg_as_a_file(client, error_body):
    error = _refused(
        lambda: client.files.create(file=("a.jpg", HOSTILE_JPEG, "image/jpeg"), purpose="vision"), error_body
    )
    assert (error["code"], error["param"]) == ("invalid_image", "file"), error
