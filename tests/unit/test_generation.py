import base64
import dataclasses
import io

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from darkroom.api.errors import InvalidRequest, ServiceUnavailable, UnknownParameter, UpstreamError
from darkroom.api.images import ImageGenerateRequest
from darkroom.generation import generate_images, resolve_request


def _request(**fields) -> ImageGenerateRequest:
    return ImageGenerateRequest.model_validate({"prompt": "a lighthouse", **fields})


def test_nulls_mean_defaults(svc):
    job = resolve_request(
        _request(
            model=None, n=None, size=None, quality=None, output_format=None, background=None, response_format=None
        ),
        svc,
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
        ({"stream": True}, "stream", "unsupported_value"),
        ({"model": "local-text"}, "model", "model_not_supported"),
        ({"prompt": "x" * 40000}, "prompt", "string_above_max_length"),
    ],
)
def test_what_the_model_cannot_do_is_a_400_naming_the_parameter(svc, fields, param, code):
    if fields.get("prompt"):
        request = ImageGenerateRequest.model_construct(prompt=fields["prompt"])  # past the wire's own cap
    else:
        request = _request(**fields)
    with pytest.raises(InvalidRequest) as error:
        resolve_request(request, svc)
    assert (error.value.param, error.value.code) == (param, code)


def test_unknown_parameters_are_refused_by_name_and_catalog_pass_through_is_kept(svc):
    with pytest.raises(UnknownParameter) as error:
        resolve_request(_request(guidance_scale=7), svc)
    assert error.value.param == "guidance_scale" and error.value.code == "unknown_parameter"
    assert resolve_request(_request(seed=42), svc).options == {"seed": 42}


def test_generate_stores_under_the_tenant_prefix_and_meters_once(svc, tenant, aws):
    result = generate_images(tenant, _request(size="256x256", n=2, output_format="jpeg"), "req-1", svc)
    response = result.response
    assert len(response.data) == 2 and response.output_format == "jpeg" and response.size == "256x256"
    image = Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json)))
    assert (image.format, image.size) == ("JPEG", (256, 256))
    s3 = svc.store._s3
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=svc.settings.images_bucket)["Contents"]]
    assert len(keys) == 2 and all(k.startswith(f"tenants/{tenant.tenant_id}/images/") for k in keys)
    head = s3.head_object(Bucket=svc.settings.images_bucket, Key=keys[0])
    assert head["ContentType"] == "image/jpeg"
    assert "X-Amz-Signature=" in response.data[0].url and "X-Amz-Expires=3600" in response.data[0].url
    (record,) = svc.meter.records(tenant.tenant_id)
    assert record["images"] == 2 and record["request_id"] == "req-1"
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.text_tokens == usage.input_tokens
    assert result.headers["x-ratelimit-remaining-images"] == str(20 - 2)


def test_url_response_format_leaves_out_b64(svc, tenant):
    response = generate_images(tenant, _request(size="256x256", response_format="url"), "r", svc).response
    assert response.data[0].url and response.data[0].b64_json is None


def test_b64_that_would_exceed_the_lambda_limit_is_left_out_with_urls_kept(svc, tenant):
    svc.settings = svc.settings.model_copy(update={"max_response_bytes": 40_000})
    result = generate_images(tenant, _request(size="1024x1024", n=2), "big", svc)
    assert all(d.b64_json is None and d.url for d in result.response.data)
    assert result.headers["x-darkroom-b64-omitted"] == "response-size-limit"
    assert len(svc.meter.records(tenant.tenant_id)) == 1  # delivered (as URLs) and metered


def test_no_delivery_without_a_usage_record(svc, tenant, monkeypatch):
    def broken(event):
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "TransactWriteItems")

    monkeypatch.setattr(svc.meter, "record", broken)
    with pytest.raises(ServiceUnavailable) as error:
        generate_images(tenant, _request(size="256x256"), "r", svc)
    assert error.value.status == 503


def test_rate_limit_is_checked_before_any_inference(svc, tenant):
    calls = []

    class CountingBackend:
        def generate(self, model, job):
            calls.append(job.n)
            raise AssertionError("must not be called")

    limited = dataclasses.replace(tenant, limits=dataclasses.replace(tenant.limits, images_per_minute=1))
    generate_images(limited, _request(size="256x256"), "r1", svc)
    from darkroom.api.errors import RateLimited

    with pytest.raises(RateLimited):
        generate_images(limited, _request(size="256x256"), "r2", svc, backend=CountingBackend())
    assert calls == []


class _FailingBackend:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def generate(self, model, job):
        raise self.error


def _remaining_images(svc, tenant) -> int:
    probe = dataclasses.replace(tenant, limits=dataclasses.replace(tenant.limits, images_per_minute=100))
    headers = svc.limiter.admit(probe, 1).headers()
    return int(headers["x-ratelimit-remaining-images"]) + 1  # before this probe's own image


@pytest.mark.parametrize(
    "error,refunded",
    [
        (UpstreamError("the model failed"), True),  # our side: the admission is given back
        (RuntimeError("bug"), True),
        (InvalidRequest("refused by the model's content policy", code="content_policy_violation"), False),
    ],
)
def test_failures_on_our_side_refund_the_admission_and_bill_nothing(svc, tenant, error, refunded):
    before = _remaining_images(svc, tenant)
    with pytest.raises(type(error)):
        generate_images(tenant, _request(size="256x256", n=3), "r-fail", svc, backend=_FailingBackend(error))
    after = _remaining_images(svc, tenant)
    assert after == (before - 1 if refunded else before - 1 - 3)  # the probe itself used one image
    assert svc.meter.records(tenant.tenant_id) == []  # no usage for failed work


def test_complexity_reaches_only_backends_whose_catalog_entry_takes_it(svc, monkeypatch):
    assert resolve_request(_request(complexity="high"), svc).options == {}  # accepted, nothing to plan with
    entry = svc.catalog.models["local-image"]
    planner = entry.model_copy(update={"passthrough": entry.passthrough | {"complexity"}})
    monkeypatch.setattr(
        svc, "catalog", svc.catalog.model_copy(update={"models": {**svc.catalog.models, "local-image": planner}})
    )
    assert resolve_request(_request(complexity="high"), svc).options == {"complexity": "high"}
    assert resolve_request(_request(), svc).options == {}


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
def test_gif_and_svg_are_unsupported_value_naming_the_model(svc, fields, param):
    with pytest.raises(InvalidRequest) as error:
        resolve_request(_request(**fields), svc)
    assert (error.value.param, error.value.code) == (param, "unsupported_value")
    assert "local-image" in error.value.message
