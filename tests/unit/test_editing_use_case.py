"""The edit use case on in-memory ports (tests/fakes.py), with no socket, from the request as the openai SDK
sends it (multipart, read once by HttpRequest) to the stored result."""

import base64
import io

import httpx
import pytest
from PIL import Image

from darkroom.api.errors import InvalidRequest
from darkroom.api.http import HttpRequest
from darkroom.config import Settings
from darkroom.editing import edit_images, read_edit_request
from darkroom.ports import ImageSources, RequestContext
from darkroom.tenancy import Limits, Tenant
from fakes import NoFiles, image_ports, no_fetching

TENANT = Tenant("tnt_0123456789abcdef", "acme", "active", Limits(images_per_minute=20))
SOURCES = ImageSources(NoFiles(), no_fetching)


def _png(size=(512, 256), mode="RGB", color="navy") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(files, **fields) -> HttpRequest:
    sent = httpx.Request("POST", "http://x/v1/images/edits", files=files, data={"prompt": "make it red", **fields})
    body = sent.read()
    return HttpRequest.from_event(
        {
            "headers": {"Content-Type": sent.headers["content-type"]},
            "isBase64Encoded": True,
            "body": base64.b64encode(body).decode(),
        }
    )


def _edit(http: HttpRequest, ports):
    request = read_edit_request(http, TENANT.tenant_id, ports.settings, SOURCES)
    return edit_images(RequestContext(TENANT, "req-edit"), request, ports)


def test_an_edit_with_size_auto_runs_at_the_inputs_size_and_is_stored_and_metered():
    ports = image_ports()
    mask = _png(mode="RGBA", color=(0, 0, 0, 0))
    files = [("image", ("in.png", _png(), "image/png")), ("mask", ("m.png", mask, "image/png"))]
    result = _edit(_multipart(files), ports)
    assert (result.size, len(result.images)) == ("512x256", 1)
    assert Image.open(io.BytesIO(ports.store.get(result.keys[0]))).size == (512, 256)
    (usage,) = ports.meter.events.values()
    assert (usage.operation, usage.request_id, usage.size) == ("edit", "req-edit", "512x256")
    assert usage.input_image_tokens > 0 and ports.admission.used == 1


def test_a_mask_of_another_size_is_a_400_that_keeps_counting():
    ports = image_ports()
    mask = _png(size=(64, 64), mode="RGBA", color=(0, 0, 0, 0))
    files = [("image", ("in.png", _png(), "image/png")), ("mask", ("m.png", mask, "image/png"))]
    with pytest.raises(InvalidRequest) as refused:
        _edit(_multipart(files), ports)
    assert (refused.value.param, refused.value.code) == ("mask", "invalid_mask")
    assert ports.meter.events == {} and ports.store.objects == {}
    assert ports.admission.used == 1  # the client's own error counts, as at OpenAI


def test_too_many_images_are_refused_before_admission():
    ports = image_ports(Settings(max_input_images=2))
    files = [("image[]", (f"{i}.png", _png(), "image/png")) for i in range(3)]
    with pytest.raises(InvalidRequest) as refused:
        _edit(_multipart(files), ports)
    assert refused.value.code == "too_many_images" and ports.admission.used == 0


def test_bytes_that_are_not_an_image_are_a_400_naming_the_part():
    ports = image_ports()
    with pytest.raises(InvalidRequest) as refused:
        _edit(_multipart([("image", ("in.png", b"not an image at all", "image/png"))]), ports)
    assert refused.value.param == "image" and refused.value.status == 400 and ports.store.objects == {}
