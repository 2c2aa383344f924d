"""The generate use case on in-memory ports (tests/fakes.py), with sockets disabled: what it stores, meters,
admits and refunds, and the domain result it returns. The AWS side of each port has its own tests."""

import io

import pytest
from PIL import Image

from darkroom.api.errors import InvalidRequest, RateLimited, ServiceUnavailable, UnknownParameter, UpstreamError
from darkroom.api.images import ImageGenerateRequest
from darkroom.api.rendering import images_headers, images_response
from darkroom.config import Settings
from darkroom.generation import generate_images
from darkroom.image_job import resolve_request
from darkroom.ports import RequestContext
from darkroom.tenancy import Limits, Tenant
from fakes import MemoryAdmitter, MemoryMeter, MemoryStore, bundled_catalog, image_ports

TENANT = Tenant("tnt_0123456789abcdef", "acme", "active", Limits(images_per_minute=20))
CATALOG = bundled_catalog()


def _request(**fields) -> ImageGenerateRequest:
    return ImageGenerateRequest.model_validate({"prompt": "a lighthouse", **fields})


def _context(request_id: str = "req-1", tenant: Tenant = TENANT) -> RequestContext:
    return RequestContext(tenant, request_id)


def test_nulls_mean_defaults():
    job = resolve_request(
        _request(
            model=None, n=None, size=None, quality=None, output_format=None, background=None, response_format=None
        ),
        CATALOG,
    )
    assert (job.model.id, job.n, job.size, job.quality, job.output_format, job.background, job.response_format) == (
        "local-image",
        1,
        "1024x1024",
        "medium",
        "png",
        "opaque",
        "b64_json",
    )


@pytest.mark.parametrize(
    "fields,param,code",
    [
        ({"size": "1000x1000"}, "size", "invalid_value"),
        ({"quality": "hd"}, "quality", "invalid_value"),
        ({"background": "transparent", "output_format": "jpeg"}, "background", "invalid_value"),
        ({"stream": True, "n": 2}, "n", "unsupported_value"),
        ({"model": "local-text"}, "model", "model_not_supported"),
        ({"prompt": "x" * 40000}, "prompt", "string_above_max_length"),
    ],
)
def test_what_the_model_cannot_do_is_a_400_naming_the_parameter(fields, param, code):
    if fields.get("prompt"):
        request = ImageGenerateRequest.model_construct(prompt=fields["prompt"])  # past the wire's own cap
    else:
        request = _request(**fields)
    with pytest.raises(InvalidRequest) as error:
        resolve_request(request, CATALOG)
    assert (error.value.param, error.value.code) == (param, code)


def test_unknown_parameters_are_refused_by_name_and_catalog_pass_through_is_kept():
    with pytest.raises(UnknownParameter) as error:
        resolve_request(_request(guidance_scale=7), CATALOG)
    assert error.value.param == "guidance_scale" and error.value.code == "unknown_parameter"
    assert resolve_request(_request(seed=42), CATALOG).options == {"seed": 42}


def test_generate_stores_under_the_tenant_prefix_meters_once_and_returns_what_it_stored():
    ports = image_ports()
    result = generate_images(_context("req-1"), _request(size="256x256", n=2, output_format="jpeg"), ports)
    assert len(result.images) == 2 and (result.output_format, result.size) == ("jpeg", "256x256")
    assert set(ports.store.objects) == set(result.keys)
    assert all(key.startswith(f"tenants/{TENANT.tenant_id}/images/") for key in result.keys)
    data, output_format = ports.store.objects[result.keys[0]]
    assert output_format == "jpeg" and result.images[0].data == data  # b64_json: the bytes it stored
    assert Image.open(io.BytesIO(data)).size == (256, 256)
    assert result.images[0].url == ports.store.presign(result.keys[0], "jpeg")
    (event,) = ports.meter.events.values()
    assert (event.images, event.request_id, event.operation) == (2, "req-1", "generate") and event == result.usage
    assert ports.admission.used == 2


def test_the_edge_renders_the_result_as_the_images_api_answer():
    result = generate_images(_context(), _request(size="256x256"), image_ports())
    response = images_response(result)
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens == result.output_tokens + usage.input_tokens
    assert usage.input_tokens_details.text_tokens == usage.input_tokens == result.input_text_tokens
    assert response.data[0].b64_json and response.data[0].url == result.images[0].url
    assert "x-darkroom-b64-omitted" not in images_headers(result)


def test_url_response_format_carries_no_bytes():
    result = generate_images(_context(), _request(size="256x256", response_format="url"), image_ports())
    assert result.images[0].url and result.images[0].data is None and not result.inline_omitted
    assert images_response(result).data[0].b64_json is None


def test_b64_that_would_exceed_the_lambda_limit_is_left_out_with_urls_kept():
    ports = image_ports(Settings(max_response_bytes=40_000))
    result = generate_images(_context("big"), _request(size="1024x1024", n=2), ports)
    assert all(image.data is None and image.url for image in result.images) and result.inline_omitted
    assert images_headers(result)["x-darkroom-b64-omitted"] == "response-size-limit"
    assert len(ports.meter.events) == 1  # delivered (as URLs) and metered


def test_no_delivery_without_a_usage_record():
    from botocore.exceptions import ClientError

    class BrokenMeter(MemoryMeter):
        def record(self, event):
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "TransactWriteItems")

    admitter = MemoryAdmitter()
    with pytest.raises(ServiceUnavailable) as error:
        generate_images(_context(), _request(size="256x256"), image_ports(meter=BrokenMeter(), admission=admitter))
    assert error.value.status == 503 and admitter.used == 0  # and the admission was given back


def test_rate_limit_is_checked_before_any_inference():
    calls = []

    class CountingBackend:
        def generate(self, model, job):
            calls.append(job.n)
            raise AssertionError("must not be called")

    limited = Tenant(TENANT.tenant_id, "acme", "active", Limits(images_per_minute=1))
    admitter = MemoryAdmitter()
    generate_images(_context("r1", limited), _request(size="256x256"), image_ports(admission=admitter))
    with pytest.raises(RateLimited):
        ports = image_ports(admission=admitter, backends=lambda model: CountingBackend())
        generate_images(_context("r2", limited), _request(size="256x256"), ports)
    assert calls == []


class _FailingBackend:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def generate(self, model, job):
        raise self.error


@pytest.mark.parametrize(
    "error,refunded",
    [
        (UpstreamError("the model failed"), True),  # our side: the admission is given back
        (RuntimeError("bug"), True),
        (InvalidRequest("refused by the model's content policy", code="content_policy_violation"), False),
    ],
)
def test_failures_on_our_side_refund_the_admission_and_bill_nothing(error, refunded):
    admitter, meter, store = MemoryAdmitter(), MemoryMeter(), MemoryStore()
    ports = image_ports(admission=admitter, meter=meter, store=store, backends=lambda model: _FailingBackend(error))
    with pytest.raises(type(error)):
        generate_images(_context("r-fail"), _request(size="256x256", n=3), ports)
    assert admitter.used == (0 if refunded else 3)
    assert meter.events == {} and store.objects == {}  # no usage and no images for failed work


def test_a_background_jobs_admission_is_used_and_its_usage_returned_not_billed():
    admitter, meter = MemoryAdmitter(), MemoryMeter()
    taken = admitter.admit(TENANT, 1)
    result = generate_images(
        _context("job"), _request(size="256x256"), image_ports(admission=admitter, meter=meter), admission=taken
    )
    assert meter.events == {} and result.usage.request_id == "job" and admitter.used == 1


def test_complexity_reaches_only_backends_whose_catalog_entry_takes_it():
    assert resolve_request(_request(complexity="high"), CATALOG).options == {}  # accepted, nothing to plan with
    entry = CATALOG.models["local-image"]
    planner = entry.model_copy(update={"passthrough": entry.passthrough | {"complexity"}})
    catalog = CATALOG.model_copy(update={"models": {**CATALOG.models, "local-image": planner}})
    assert resolve_request(_request(complexity="high"), catalog).options == {"complexity": "high"}
    assert resolve_request(_request(), catalog).options == {}


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"output_format": "gif"}, "output_format"),
        ({"output_format": "svg"}, "output_format"),
        ({"frame_count": 4}, "frame_count"),
        ({"frame_duration_ms": 100}, "frame_duration_ms"),
        ({"svg": {"model": "author"}}, "svg"),
    ],
)
def test_gif_and_svg_are_unsupported_value_naming_the_model(fields, param):
    with pytest.raises(InvalidRequest) as error:
        resolve_request(_request(**fields), CATALOG)
    assert (error.value.param, error.value.code) == (param, "unsupported_value")
    assert "local-image" in error.value.message


def test_no_socket_is_opened_here():
    import socket

    from pytest_socket import SocketBlockedError

    with pytest.raises(SocketBlockedError):
        socket.socket()


def test_the_budget_reserves_the_estimate_and_settles_the_bill_with_one_formula():
    priced = next(m for m in CATALOG.models.values() if m.price.input_text_per_million > 0).price
    entry = CATALOG.models["local-image"].model_copy(update={"price": priced})
    catalog = CATALOG.model_copy(update={"models": {**CATALOG.models, "local-image": entry}})
    admitter, meter = MemoryAdmitter(), MemoryMeter()
    ports = image_ports(admission=admitter, meter=meter, catalog=catalog)
    result = generate_images(_context("priced"), _request(size="256x256", n=2), ports)
    assert result.usage.cost_usd > 0
    assert admitter.reserved_usd == admitter.settled_usd == [result.usage.cost_usd]
    generate_images(_context("priced"), _request(size="256x256", n=2), ports)  # a retried invocation: billed once
    assert admitter.settled_usd == [result.usage.cost_usd, 0.0]  # its reservation given back
