"""The edit use case on in-memory ports (tests/fakes.py), with no socket, from the request as the openai SDK
sends it (multipart, read once by HttpRequest) to the stored result."""

import base64
import io
import json
import os

import httpx
import pytest
from PIL import Image

from darkroom.api.errors import InvalidRequest
from darkroom.api.http import HttpRequest
from darkroom.catalog import BUNDLED_CATALOG, Catalog
from darkroom.config import Settings
from darkroom.editing import edit_images, read_edit_request
from darkroom.inference import GeneratedImage
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


def _edit(http: HttpRequest, ports, request_id="req-edit"):
    request = read_edit_request(http, TENANT.tenant_id, ports.settings, SOURCES)
    return edit_images(RequestContext(TENANT, request_id), request, ports)


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


class _RedrawsEverything:
    """An upstream like vLLM-Omni's /images/edits: it takes no mask and redraws the whole picture."""

    def __init__(self) -> None:
        self.jobs = []

    def edit(self, model, job):
        self.jobs.append(job)
        drawn = Image.new("RGB", (job.width, job.height), (250, 20, 20))
        return [GeneratedImage(drawn) for _ in range(job.n)]


def _catalog_with(**entry) -> Catalog:
    document = json.loads(BUNDLED_CATALOG.read_text())
    document["models"]["no-mask-upstream"] = {**document["models"]["local-image"], **entry}
    return Catalog.model_validate(document)


def _halves_mask(size=(512, 256)) -> bytes:
    """Transparent (edit here) on the left half, opaque (keep) on the right."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def _noise_png(size=(512, 256)) -> tuple[bytes, Image.Image]:
    picture = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), picture


@pytest.mark.parametrize("honours_mask", [False, True])
def test_outside_the_mask_the_input_is_kept_exactly_when_the_upstream_ignores_masks(honours_mask):
    upstream = _RedrawsEverything()
    ports = image_ports(catalog=_catalog_with(honours_mask=honours_mask), backends=lambda model: upstream)
    data, picture = _noise_png()
    files = [("image", ("in.png", data, "image/png")), ("mask", ("m.png", _halves_mask(), "image/png"))]
    result = _edit(_multipart(files, model="no-mask-upstream"), ports)
    out = Image.open(io.BytesIO(ports.store.get(result.keys[0]))).convert("RGB")
    (job,) = upstream.jobs
    if honours_mask:  # the upstream is trusted with the mask, and its answer is returned as it is
        assert job.mask is not None and out.getpixel((400, 100)) == (250, 20, 20)
        return
    assert job.mask is None  # it would be ignored anyway; the composite does the masking
    keep = (256, 0, 512, 256)
    assert out.crop(keep).tobytes() == picture.crop(keep).tobytes()
    assert out.crop((0, 0, 256, 256)).getcolors() == [(256 * 256, (250, 20, 20))]


def test_a_transparent_background_from_an_upstream_that_cannot_make_one_is_refused_up_front():
    upstream = _RedrawsEverything()
    catalog = _catalog_with(honours_mask=False, transparent_background=False)
    ports = image_ports(catalog=catalog, backends=lambda model: upstream)
    files = [("image", ("in.png", _png(), "image/png"))]
    with pytest.raises(InvalidRequest) as refused:
        _edit(_multipart(files, model="no-mask-upstream", background="transparent"), ports)
    assert refused.value.param == "background" and upstream.jobs == [] and ports.admission.used == 0


def test_a_per_image_price_bills_each_image_at_its_quality_and_size():
    price = {"per_image": {q: {"*": 0.04, "512x512": 0.018} for q in ("low", "medium")} | {"high": {"*": 0.08}}}
    ports = image_ports(catalog=_catalog_with(price=price))
    files = [("image", ("in.png", _png(size=(512, 512)), "image/png"))]
    _edit(_multipart(files, model="no-mask-upstream", n="2", quality="low"), ports, "req-1")
    _edit(_multipart(files, model="no-mask-upstream", n="3", quality="high", size="1024x1024"), ports, "req-2")
    costs = sorted(round(event.cost_usd, 6) for event in ports.meter.events.values())
    assert costs == [round(2 * 0.018, 6), round(3 * 0.08, 6)]
