"""The ``sagemaker`` backend against botocore's Stubber and the real ``sagemaker-runtime`` service model."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from botocore.response import StreamingBody
from PIL import Image

from backend_stubs import ATTEMPTS, b64, decode_png, no_wait, png_of, stubbed
from darkroom import config
from darkroom.api.errors import ApiError, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.inference import EditJob, GenerateJob, InputImage, TextJob, aws_runtime, backend_for
from darkroom.inference.resilience import CircuitBreaker
from darkroom.inference.sagemaker import MAX_REFUSAL_BYTES, SageMakerBackend, container_refusal

ENDPOINT_NAME = "darkroom-private-endpoint-7f3a"
SECRET_DETAIL = "CONTAINER-INTERNAL-DETAIL-9c1e"
LOG_ARN = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/" + ENDPOINT_NAME


def png(width=64, height=48, colour=(200, 30, 30), mode="RGB") -> bytes:
    return png_of(width, height, colour, mode)


class JsonBody:
    """Matches a JSON request body (bytes) in Stubber's expected_params, keeping what it saw."""

    def __init__(self, expected: dict | None = None) -> None:
        self.expected = expected
        self.seen: dict | None = None

    def __eq__(self, other) -> bool:
        self.seen = json.loads(other)
        return self.expected is None or self.seen == self.expected

    __hash__ = None


def body(document) -> dict:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentType": "application/json"}


def entry(**endpoint) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "sm-image",
            "backend": "sagemaker",
            "endpoint": {"endpoint_name": ENDPOINT_NAME, "timeout_seconds": 20, **endpoint},
            "capabilities": ["generate", "edit", "analyze"],
            "sizes": ["64x48"],
            "default_size": "64x48",
            "max_n": 4,
            "qualities": ["low", "medium", "high"],
            "default_quality": "medium",
            "passthrough": ["negative_prompt", "steps", "seed"],
        }
    )


@pytest.fixture
def client():
    return boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


@pytest.fixture
def stubber(client):
    with stubbed(client) as stub:
        yield stub


@pytest.fixture
def model():
    return entry()


@pytest.fixture
def backend(client, model):
    return SageMakerBackend(model, client=client, breaker=CircuitBreaker(threshold=100), resilience=no_wait())


def expected(matcher: JsonBody, content_type="application/json", accept="application/json") -> dict:
    return {"EndpointName": ENDPOINT_NAME, "Body": matcher, "ContentType": content_type, "Accept": accept}


def gen_job(n=1, transparent=False, **options) -> GenerateJob:
    return GenerateJob(
        prompt="a lighthouse at dusk",
        width=64,
        height=48,
        n=n,
        quality="high",
        transparent=transparent,
        deadline_seconds=10,
        options=options,
    )


def edit_job(mask: Image.Image | None, images=None, n=1) -> EditJob:
    images = images or [Image.new("RGB", (64, 48), (10, 200, 10))]
    return EditJob(
        prompt="add a moon",
        images=images,
        mask=mask,
        width=64,
        height=48,
        n=n,
        quality="medium",
        transparent=False,
        input_fidelity="low",
        deadline_seconds=10,
    )


def text_job() -> TextJob:
    return TextJob(
        instructions="Be brief.",
        messages=[("user", "hello"), ("assistant", "hi"), ("user", "what?")],
        images=[InputImage(Image.new("RGB", (8, 8), (0, 0, 255)), "png")],
        deadline_seconds=10,
    )


def assert_neutral(exc: ApiError) -> None:
    text = " ".join([exc.message, json.dumps(exc.envelope()), json.dumps(exc.headers)])
    for leak in (ENDPOINT_NAME, SECRET_DETAIL, "arn:", "123456789012"):
        assert leak not in text


# -- success paths ---------------------------------------------------------------------------------


def test_generate_sends_the_contract_and_returns_validated_images(stubber, backend, model):
    matcher = JsonBody(
        {
            "task": "generate",
            "prompt": "a lighthouse at dusk",
            "width": 64,
            "height": 48,
            "num_images": 2,
            "quality": "high",
            "negative_prompt": "fog",
            "steps": 30,
            "seed": 7,
        }
    )
    stubber.add_response(
        "invoke_endpoint", body({"images": [b64(png()), b64(png(colour=(1, 2, 3)))]}), expected(matcher)
    )
    images = backend.generate(model, gen_job(n=2, negative_prompt="fog", steps=30, seed=7))
    assert [i.image.size for i in images] == [(64, 48), (64, 48)]
    assert images[1].image.getpixel((0, 0)) == (1, 2, 3)


def test_generate_fits_other_sizes_and_honours_content_type_and_transparency(client, stubber):
    model = entry(content_type="application/json; charset=utf-8", accept="application/json; verbose=true")
    backend = SageMakerBackend(model, client=client)
    matcher = JsonBody()
    stubber.add_response(
        "invoke_endpoint",
        body({"images": [b64(png(128, 96))]}),
        expected(matcher, "application/json; charset=utf-8", "application/json; verbose=true"),
    )
    (image,) = backend.generate(model, gen_job(transparent=True))
    assert matcher.seen["background"] == "transparent"
    assert image.image.size == (64, 48) and image.image.mode == "RGBA"


def test_edit_sends_image_references_and_a_white_is_edit_mask(stubber, backend, model):
    mask = Image.new("L", (64, 48), 255)
    mask.paste(0, (0, 0, 32, 48))  # darkroom: alpha 0 = edit the left half
    first = Image.new("RGB", (64, 48), (10, 200, 10))
    matcher = JsonBody()
    stubber.add_response("invoke_endpoint", body({"images": [b64(png())]}), expected(matcher))
    (image,) = backend.edit(model, edit_job(mask, images=[first, Image.new("RGB", (16, 16), (9, 9, 9))]))
    assert image.image.size == (64, 48)
    sent = matcher.seen
    assert {k: sent[k] for k in ("task", "prompt", "width", "height", "num_images", "quality")} == {
        "task": "edit",
        "prompt": "add a moon",
        "width": 64,
        "height": 48,
        "num_images": 1,
        "quality": "medium",
    }
    assert decode_png(sent["image"]).getpixel((5, 5)) == (10, 200, 10)
    assert [decode_png(r).size for r in sent["reference_images"]] == [(16, 16)]
    contract_mask = decode_png(sent["mask"])
    assert contract_mask.mode == "L" and contract_mask.size == (64, 48)
    assert contract_mask.getpixel((5, 5)) == 255 and contract_mask.getpixel((60, 5)) == 0  # white = edit
    assert {value for _, value in contract_mask.getcolors()} == {0, 255}


def test_edit_without_a_mask_sends_no_mask(stubber, backend, model):
    matcher = JsonBody()
    stubber.add_response("invoke_endpoint", body({"images": [b64(png())] * 2}), expected(matcher))
    assert len(backend.edit(model, edit_job(None, n=2))) == 2
    assert "mask" not in matcher.seen and "reference_images" not in matcher.seen


def test_respond_sends_messages_instructions_and_images(stubber, backend, model):
    matcher = JsonBody()
    stubber.add_response("invoke_endpoint", body({"text": "A blue square."}), expected(matcher))
    assert backend.respond(model, text_job()) == "A blue square."
    sent = matcher.seen
    assert sent["task"] == "analyze" and sent["instructions"] == "Be brief."
    assert sent["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "what?"},
    ]
    assert [decode_png(i).getpixel((0, 0)) for i in sent["images"]] == [(0, 0, 255)]


# -- AWS errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("ServiceUnavailable", 503),
        ("ModelNotReadyException", 429),
        ("InternalFailure", 500),
    ],
)
def test_throttling_and_unavailability_are_503_with_retry_after(stubber, backend, model, code, status):
    for _ in range(ATTEMPTS):  # retried within the deadline; the last attempt's 503 is the client's
        stubber.add_client_error("invoke_endpoint", code, f"{SECRET_DETAIL} {ENDPOINT_NAME}", http_status_code=status)
    with pytest.raises(ServiceUnavailable) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 503 and int(caught.value.headers["retry-after"]) >= 1
    assert_neutral(caught.value)


@pytest.mark.parametrize("original", [400, 422, 500, 503])
def test_model_errors_are_502_without_the_containers_words(stubber, backend, model, original):
    stubber.add_client_error(
        "invoke_endpoint",
        "ModelError",
        f"Received server error from {ENDPOINT_NAME}",
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": original, "OriginalMessage": SECRET_DETAIL, "LogStreamArn": LOG_ARN},
    )
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 502 and caught.value.code == "upstream_error"
    assert_neutral(caught.value)


def test_a_container_that_never_answered_is_a_504_tried_once(stubber, backend, model):
    # SageMaker's own 60 s timeout: ModelError with OriginalStatusCode 0 ("Received server error (0) from primary
    # with message \"Your invocation timed out while waiting for a response from container primary...\"").
    stubber.add_client_error(
        "invoke_endpoint",
        "ModelError",
        'Received server error (0) from primary with message "Your invocation timed out while waiting for a '
        'response from container primary."',
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": 0, "OriginalMessage": SECRET_DETAIL, "LogStreamArn": LOG_ARN},
    )
    with pytest.raises(UpstreamTimeout) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 504 and caught.value.code == "upstream_timeout"
    assert_neutral(caught.value)
    stubber.assert_no_pending_responses()  # one attempt: a retry would wait another 60 s


def test_a_container_429_is_503(stubber, backend, model):
    for _ in range(ATTEMPTS):
        stubber.add_client_error(
            "invoke_endpoint", "ModelError", "busy", http_status_code=424, modeled_fields={"OriginalStatusCode": 429}
        )
    with pytest.raises(ServiceUnavailable):
        backend.generate(model, gen_job())


def refusal_body(code="content_policy_violation", **extra) -> str:
    """The container's error object as the model server answers it (darkroom_endpoint.contract)."""
    return json.dumps({"error": {"code": code, "message": f"blocked: {SECRET_DETAIL}", "param": "prompt"}, **extra})


def container_error(stubber, original_status: int, original_message: str) -> None:
    stubber.add_client_error(
        "invoke_endpoint",
        "ModelError",
        f"Received client error ({original_status}) from primary with message "
        f'"{original_message}". See {LOG_ARN} for more information.',
        http_status_code=424,
        modeled_fields={
            "OriginalStatusCode": original_status,
            "OriginalMessage": original_message,
            "LogStreamArn": LOG_ARN,
        },
    )


@pytest.mark.parametrize("operation", ["generate", "edit", "respond"])
def test_a_content_policy_refusal_is_a_400_with_neutral_words_that_spares_the_breaker(
    client, stubber, model, caplog, operation
):
    backend = SageMakerBackend(model, client=client, breaker=CircuitBreaker(threshold=1))
    container_error(stubber, 400, refusal_body())
    call = {
        "generate": lambda: backend.generate(model, gen_job()),
        "edit": lambda: backend.edit(model, edit_job(None)),
        "respond": lambda: backend.respond(model, text_job()),
    }[operation]

    with caplog.at_level("DEBUG", logger="darkroom"), pytest.raises(InvalidRequest) as caught:
        call()

    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "content_policy_violation", None)
    assert caught.value.message == "The request was rejected by the model's content filters."
    assert_neutral(caught.value)
    assert "blocked" not in caught.value.message
    logged = " ".join(json.dumps(vars(record), default=str) for record in caplog.records)
    assert "content_policy_violation" in logged  # guarded() logs the code, never the container's words
    for leak in (SECRET_DETAIL, ENDPOINT_NAME, "blocked:", "arn:"):
        assert leak not in logged
    assert backend.breaker.state == "closed"


@pytest.mark.parametrize(
    ("original", "message", "error"),
    [
        (400, refusal_body(code="invalid_request"), UpstreamError),  # another deliberate refusal: still a 502
        (400, "content_policy_violation", UpstreamError),  # the words, not the contract's object
        (400, json.dumps({"code": "content_policy_violation"}), UpstreamError),  # not under "error"
        (400, json.dumps(["content_policy_violation"]), UpstreamError),
        (500, refusal_body(), UpstreamError),  # a crash is a crash whatever its body says
        (429, refusal_body(), ServiceUnavailable),
    ],
    ids=["other-code", "plain-text", "top-level-code", "list", "5xx", "429"],
)
def test_only_the_contracts_refusal_in_a_4xx_is_a_content_policy_violation(
    stubber, backend, model, original, message, error
):
    for _ in range(ATTEMPTS if original == 429 else 1):  # a busy container is tried again
        container_error(stubber, original, message)
    with pytest.raises(error) as caught:
        backend.generate(model, gen_job())
    assert caught.value.code != "content_policy_violation"
    assert_neutral(caught.value)


def test_a_refusal_body_is_read_only_up_to_its_cap(model):
    padded = json.loads(refusal_body())
    padded["pad"] = ""
    small = json.dumps(padded)
    padded["pad"] = "x" * (MAX_REFUSAL_BYTES - len(small))
    assert container_refusal(model, json.dumps(padded)) is not None  # exactly the cap
    padded["pad"] += "x"
    assert container_refusal(model, json.dumps(padded)) is None  # one byte more: never parsed
    assert container_refusal(model, refusal_body().encode()) is not None
    for junk in (None, 7, b"\xff\xfe", "{", "null", '{"error": "content_policy_violation"}'):
        assert container_refusal(model, junk) is None


@pytest.mark.parametrize("param", ["seed", "steps"])
def test_a_refused_passthrough_value_is_the_clients_400_for_that_parameter(client, stubber, model, param):
    backend = SageMakerBackend(model, client=client, breaker=CircuitBreaker(threshold=1))
    container_error(
        stubber,
        400,
        json.dumps(
            {
                "error": {
                    "code": "invalid_request",
                    "param": param,
                    "message": f"'{param}' must be an integer: {SECRET_DETAIL}",
                }
            }
        ),
    )
    with pytest.raises(InvalidRequest) as caught:
        backend.generate(model, gen_job())
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "invalid_value", param)
    assert_neutral(caught.value)
    assert backend.breaker.state == "closed"


@pytest.mark.parametrize("param", ["prompt", "width", "image", "x" * 5000, None, 7])
def test_a_refusal_naming_anything_but_a_passthrough_parameter_stays_a_502(stubber, backend, model, param):
    container_error(stubber, 400, json.dumps({"error": {"code": "invalid_request", "param": param}}))
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 502 and caught.value.param is None


def test_validation_error_is_502(stubber, backend, model):
    stubber.add_client_error(
        "invoke_endpoint",
        "ValidationError",
        f"Endpoint {ENDPOINT_NAME} of account 123456789012 not found.",
        http_status_code=400,
    )
    with pytest.raises(UpstreamError) as caught:
        backend.respond(model, text_job())
    assert caught.value.status == 502 and caught.value.code == "upstream_error"
    assert_neutral(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        ReadTimeoutError(endpoint_url="https://runtime.sagemaker/" + ENDPOINT_NAME),
        ConnectTimeoutError(endpoint_url="https://runtime.sagemaker/" + ENDPOINT_NAME),
    ],
)
def test_timeouts_are_504(client, backend, model, monkeypatch, error):
    def invoke_endpoint(**kwargs):
        raise error

    monkeypatch.setattr(client, "invoke_endpoint", invoke_endpoint)
    with pytest.raises(UpstreamTimeout) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 504
    assert_neutral(caught.value)


def huge_side_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (13_000, 1)).save(buffer, format="PNG")  # a small file whose side exceeds the output limit
    return buffer.getvalue()


@pytest.mark.parametrize(
    "reply",
    [
        b"<html>" + SECRET_DETAIL.encode(),
        b"[1, 2]",
        {},
        {"images": "abc"},
        {"images": []},
        {"images": [b64(png()), b64(png())]},
        {"images": ["not base64!"]},
        {"images": [b64(b"GIF89a not an image")]},
        {"images": [b64(b"\x89PNG\r\n\x1a\ntruncated")]},
        {"images": [42]},
        {"images": [b64(huge_side_png())]},
        {"text": "an answer where images were asked for"},
    ],
    ids=[
        "html",
        "list",
        "empty",
        "string",
        "none",
        "too-many",
        "junk-b64",
        "gif",
        "truncated",
        "number",
        "huge",
        "text",
    ],
)
def test_malformed_image_answers_are_502_invalid_response(stubber, backend, model, reply):
    stubber.add_response("invoke_endpoint", body(reply), expected(JsonBody()))
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.code == "upstream_invalid_response"
    assert_neutral(caught.value)


@pytest.mark.parametrize("reply", [{"text": 5}, {"images": [b64(png())]}, b"{"])
def test_malformed_text_answers_are_502(stubber, backend, model, reply):
    stubber.add_response("invoke_endpoint", body(reply), expected(JsonBody()))
    with pytest.raises(UpstreamError) as caught:
        backend.respond(model, text_job())
    assert caught.value.code == "upstream_invalid_response"


def test_an_oversized_body_is_refused_without_reading_it_all(stubber, backend, model, monkeypatch):
    monkeypatch.setattr(aws_runtime, "MAX_RESPONSE_BYTES", 100)
    stubber.add_response("invoke_endpoint", body({"text": "x" * 200}), expected(JsonBody()))
    with pytest.raises(UpstreamError) as caught:
        backend.respond(model, text_job())
    assert caught.value.code == "upstream_invalid_response"


def test_the_breaker_opens_and_then_fails_fast_without_calling(client, stubber, model):
    backend = SageMakerBackend(model, client=client, breaker=CircuitBreaker(threshold=2, cooldown_seconds=30))
    for _ in range(2):
        stubber.add_client_error(
            "invoke_endpoint", "ModelError", "x", http_status_code=424, modeled_fields={"OriginalStatusCode": 500}
        )
        with pytest.raises(UpstreamError):
            backend.generate(model, gen_job())
    with pytest.raises(ServiceUnavailable) as caught:  # nothing queued: a call would be a StubResponseError
        backend.generate(model, gen_job())
    assert "retry-after" in caught.value.headers


def test_a_deliberate_4xx_does_not_open_the_breaker(client, stubber, model):
    backend = SageMakerBackend(model, client=client, breaker=CircuitBreaker(threshold=1))
    stubber.add_client_error(
        "invoke_endpoint", "ModelError", "x", http_status_code=424, modeled_fields={"OriginalStatusCode": 400}
    )
    with pytest.raises(UpstreamError):
        backend.generate(model, gen_job())
    assert backend.breaker.state == "closed"


# -- construction ----------------------------------------------------------------------------------


def test_the_client_is_built_lazily_once_per_region_without_botocore_retries(monkeypatch, model):
    built = []

    class Spy:  # the session config.client builds every client with
        def client(self, service, config=None):
            built.append((service, config))
            return boto3.session.Session().client(service, config=config)

    monkeypatch.setattr(config, "_session", Spy)
    config.reset_clients()
    try:
        backend = SageMakerBackend(entry(region="eu-west-1"))
        assert built == []
        assert backend.client is backend.client
        assert SageMakerBackend(entry(region="eu-west-1")).client is backend.client  # one per container
        ((service, settings),) = built
        assert service == "sagemaker-runtime"
        assert SageMakerBackend(entry(region="eu-west-1", timeout_seconds=5)).client is backend.client
        assert settings.region_name == "eu-west-1" and settings.connect_timeout == config.RUNTIME_CONNECT_SECONDS
        assert settings.retries == {"mode": "standard", "total_max_attempts": 1}  # darkroom retries, in the deadline
    finally:
        config.reset_clients()


def test_adapter_for_reuses_the_adapter_until_the_entry_changes():
    first = backend_for(entry())
    assert backend_for(entry()) is first
    assert backend_for(entry(timeout_seconds=5)) is not first
