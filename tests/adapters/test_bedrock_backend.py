"""The ``bedrock`` backend against botocore's Stubber and the real ``bedrock-runtime`` service model."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.response import StreamingBody
from PIL import Image

from backend_stubs import ATTEMPTS, b64, decode_png, no_wait, png_of, stubbed
from darkroom import config
from darkroom.api.errors import ApiError, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import BEDROCK_FAMILY_CAPABILITIES
from darkroom.inference import EditJob, GenerateJob, InputImage, TextJob, backend_for
from darkroom.inference.bedrock import BedrockBackend
from darkroom.inference.resilience import CircuitBreaker

NOVA = "amazon.nova-canvas-v1:0"
TITAN = "amazon.titan-image-generator-v2:0"
FAMILY = {NOVA: "nova-canvas", TITAN: "titan-image"}  # what each test entry declares in its catalog entry
TEXT_MODEL = "amazon.nova-lite-v1:0"
SECRET_DETAIL = "BEDROCK-INTERNAL-DETAIL-4b2d"
MODEL_ARN = "arn:aws:bedrock:us-east-1::foundation-model/" + NOVA


def png(width=320, height=320, colour=(200, 30, 30), mode="RGB") -> bytes:
    return png_of(width, height, colour, mode)


class Capture:
    """Matches any value in Stubber's expected_params (or an exact JSON body), keeping what it saw."""

    def __init__(self, expected: dict | None = None, *, json_body: bool = False) -> None:
        self.expected = expected
        self.json_body = json_body or expected is not None
        self.seen = None

    def __eq__(self, other) -> bool:
        self.seen = json.loads(other) if self.json_body else other
        return self.expected is None or self.seen == self.expected

    __hash__ = None


def image_reply(document) -> dict:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    return {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"}


def converse_reply(content: list, stop="end_turn") -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7},
        "metrics": {"latencyMs": 12},
    }


def entry(model_id=NOVA, sizes=("320x320", "1024x1024", "640x384"), **endpoint) -> ModelEntry:
    family = endpoint.pop("family", FAMILY.get(model_id, "nova-canvas"))
    return ModelEntry.model_validate(
        {
            "id": "bedrock-image",
            "backend": "bedrock",
            "endpoint": {
                "model_id": model_id,
                "family": family,
                "timeout_seconds": 30,
                **endpoint,
            },
            "capabilities": sorted(BEDROCK_FAMILY_CAPABILITIES[family]),
            "sizes": list(sizes),
            "default_size": sizes[0],
            "max_n": 10,
            "qualities": ["low", "medium", "high"],
            "default_quality": "medium",
            "passthrough": ["negative_prompt", "seed", "cfg_scale", "steps"],
        }
    )


@pytest.fixture
def client():
    return boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


@pytest.fixture
def stubber(client):
    with stubbed(client) as stub:
        yield stub


@pytest.fixture
def model():
    return entry()


@pytest.fixture
def backend(client, model):
    return BedrockBackend(model, client=client, breaker=CircuitBreaker(threshold=100), resilience=no_wait())


def invoke_params(body: Capture, model_id=NOVA) -> dict:
    return {"modelId": model_id, "body": body, "contentType": "application/json", "accept": "application/json"}


def gen_job(width=320, height=320, n=1, quality="high", transparent=False, prompt="a lighthouse", **options):
    return GenerateJob(
        prompt=prompt,
        width=width,
        height=height,
        n=n,
        quality=quality,
        transparent=transparent,
        deadline_seconds=10,
        options=options,
    )


def edit_job(mask=None, images=None, n=1, width=320, height=320, **options) -> EditJob:
    images = images or [Image.new("RGB", (width, height), (10, 200, 10))]
    return EditJob(
        prompt="add a moon",
        images=images,
        mask=mask,
        width=width,
        height=height,
        n=n,
        quality="low",
        transparent=False,
        input_fidelity="low",
        deadline_seconds=10,
        options=options,
    )


def text_job(images=True) -> TextJob:
    return TextJob(
        instructions="Be brief.",
        messages=[
            ("developer", "Answer in English."),
            ("user", "hello"),
            ("assistant", "hi"),
            ("user", "what is this?"),
        ],
        images=[InputImage(Image.new("RGB", (8, 8), (0, 0, 255)), "png")] if images else [],
        deadline_seconds=10,
    )


def assert_neutral(exc: ApiError) -> None:
    text = " ".join([exc.message, json.dumps(exc.envelope()), json.dumps(exc.headers)])
    for leak in (SECRET_DETAIL, "arn:", NOVA, "foundation-model"):
        assert leak not in text


# -- success paths ---------------------------------------------------------------------------------


def test_generate_sends_a_text_image_request_and_returns_validated_images(stubber, backend, model):
    body = Capture(
        {
            "taskType": "TEXT_IMAGE",
            "textToImageParams": {"text": "a lighthouse", "negativeText": "fog"},
            "imageGenerationConfig": {
                "numberOfImages": 2,
                "width": 1024,
                "height": 1024,
                "quality": "premium",
                "seed": 42,
                "cfgScale": 6.5,
            },
        }
    )
    stubber.add_response(
        "invoke_model",
        image_reply({"images": [b64(png(1024, 1024)), b64(png(1024, 1024))], "error": None}),
        invoke_params(body),
    )
    images = backend.generate(model, gen_job(1024, 1024, n=2, negative_prompt="fog", seed=42, cfg_scale=6.5))
    assert [i.image.size for i in images] == [(1024, 1024)] * 2


@pytest.mark.parametrize(("quality", "expected"), [("low", "standard"), ("medium", "standard"), ("high", "premium")])
def test_qualities_map_to_standard_and_premium(stubber, backend, model, quality, expected):
    body = Capture(
        {
            "taskType": "TEXT_IMAGE",
            "textToImageParams": {"text": "a lighthouse"},
            "imageGenerationConfig": {"numberOfImages": 1, "width": 640, "height": 384, "quality": expected},
        }
    )
    stubber.add_response("invoke_model", image_reply({"images": [b64(png(640, 384))]}), invoke_params(body))
    (image,) = backend.generate(model, gen_job(640, 384, quality=quality))
    assert image.image.size == (640, 384)


def test_titan_takes_a_size_from_its_list(client, stubber):
    model = entry(TITAN, sizes=("1173x640",))
    body = Capture(json_body=True)
    stubber.add_response("invoke_model", image_reply({"images": [b64(png(1173, 640))]}), invoke_params(body, TITAN))
    (image,) = BedrockBackend(model, client=client).generate(model, gen_job(1173, 640))
    assert image.image.size == (1173, 640)
    assert body.seen["imageGenerationConfig"]["width"] == 1173


def test_edit_with_a_mask_is_inpainting_with_a_black_is_edit_mask(stubber, backend, model):
    mask = Image.new("L", (320, 320), 255)
    mask.paste(0, (0, 0, 160, 320))  # darkroom: alpha 0 = edit the left half
    body = Capture(json_body=True)
    stubber.add_response("invoke_model", image_reply({"images": [b64(png())] * 2}), invoke_params(body))
    images = backend.edit(model, edit_job(mask, n=2, seed=3))
    assert [i.image.size for i in images] == [(320, 320)] * 2
    sent = body.seen
    assert sent["taskType"] == "INPAINTING"
    assert sent["imageGenerationConfig"] == {"numberOfImages": 2, "quality": "standard", "seed": 3}
    params = sent["inPaintingParams"]
    assert set(params) == {"text", "image", "maskImage"} and params["text"] == "add a moon"
    assert decode_png(params["image"]).getpixel((5, 5)) == (10, 200, 10)
    bedrock_mask = decode_png(params["maskImage"])
    assert bedrock_mask.mode == "RGB" and bedrock_mask.size == (320, 320)
    assert bedrock_mask.getpixel((5, 5)) == (0, 0, 0)  # black = change
    assert bedrock_mask.getpixel((300, 5)) == (255, 255, 255)  # white = keep
    assert {colour for _, colour in bedrock_mask.getcolors()} == {(0, 0, 0), (255, 255, 255)}


def test_edit_without_a_mask_is_an_image_variation(stubber, backend, model):
    body = Capture(json_body=True)
    stubber.add_response("invoke_model", image_reply({"images": [b64(png())]}), invoke_params(body))
    second = Image.new("RGB", (400, 400), (1, 1, 1))
    backend.edit(model, edit_job(None, images=[Image.new("RGB", (320, 320), (10, 200, 10)), second]))
    sent = body.seen
    assert sent["taskType"] == "IMAGE_VARIATION"
    assert [decode_png(i).size for i in sent["imageVariationParams"]["images"]] == [(320, 320), (400, 400)]
    assert sent["imageGenerationConfig"] == {"numberOfImages": 1, "width": 320, "height": 320, "quality": "standard"}


def test_respond_uses_converse_with_system_alternating_roles_and_png_images(stubber, backend, model):
    messages = Capture()
    stubber.add_response(
        "converse",
        converse_reply([{"text": "A blue "}, {"text": "square."}]),
        {
            "modelId": TEXT_MODEL,
            "messages": messages,
            "system": [{"text": "Be brief."}, {"text": "Answer in English."}],
        },
    )
    text_model = entry(TEXT_MODEL)
    assert backend.respond(text_model, text_job()) == "A blue square."
    first, second, third = messages.seen
    assert first == {"role": "user", "content": [{"text": "hello"}]}
    assert second == {"role": "assistant", "content": [{"text": "hi"}]}
    assert third["role"] == "user" and third["content"][0] == {"text": "what is this?"}
    image = third["content"][1]["image"]
    assert image["format"] == "png"
    assert Image.open(io.BytesIO(image["source"]["bytes"])).getpixel((0, 0)) == (0, 0, 255)


def test_respond_without_instructions_sends_no_system(stubber, backend):
    job = TextJob(instructions=None, messages=[("user", "hi")], images=[], deadline_seconds=5)
    stubber.add_response(
        "converse",
        converse_reply([{"text": "hello"}]),
        {"modelId": TEXT_MODEL, "messages": [{"role": "user", "content": [{"text": "hi"}]}]},
    )
    assert backend.respond(entry(TEXT_MODEL), job) == "hello"


# -- what a model cannot do: refused before AWS is called ------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "width", "height", "n", "param"),
    [
        (NOVA, 1000, 1000, 1, "size"),  # not multiples of 16
        (NOVA, 304, 304, 1, "size"),  # below 320
        (NOVA, 4112, 1024, 1, "size"),  # above 4096
        (NOVA, 4096, 4096, 1, "size"),  # more than 4,194,304 pixels
        (NOVA, 2048, 2048, 1, "size"),  # exactly 4,194,304: Nova wants "less than 4,194,304" (image-gen-access.html)
        (NOVA, 320, 1600, 1, "size"),  # aspect ratio beyond 1:4
        (NOVA, 320, 320, 6, "n"),
        (NOVA, 320, 320, 0, "n"),
        (TITAN, 1024, 768, 1, "size"),  # not in Titan's list
        (TITAN, 1024, 1024, 6, "n"),
    ],
)
def test_sizes_and_counts_a_model_cannot_do_are_400_before_any_call(client, stubber, model_id, width, height, n, param):
    model = entry(model_id)
    with pytest.raises(InvalidRequest) as caught:  # nothing queued: a call would fail with a 502, not a 400
        BedrockBackend(model, client=client).generate(model, gen_job(width, height, n=n))
    assert caught.value.status == 400 and caught.value.param == param
    assert (f"{width}x{height}" if param == "size" else "'n'") in caught.value.message


@pytest.mark.parametrize(
    ("job", "param"),
    [
        (gen_job(steps=30), "steps"),
        (gen_job(seed=-1), "seed"),
        (gen_job(seed=True), "seed"),
        (gen_job(cfg_scale=11), "cfg_scale"),
        (gen_job(negative_prompt=""), "negative_prompt"),
        (gen_job(prompt="x" * 1025), "prompt"),
        (gen_job(transparent=True), "background"),
    ],
)
def test_unsupported_options_are_400_before_any_call(stubber, backend, model, job, param):
    with pytest.raises(InvalidRequest) as caught:
        backend.generate(model, job)
    assert caught.value.param == param


def test_edit_inputs_are_checked_before_any_call(stubber, backend, model):
    mask = Image.new("L", (320, 320), 0)
    two = [Image.new("RGB", (320, 320)), Image.new("RGB", (320, 320))]
    with pytest.raises(InvalidRequest) as caught:
        backend.edit(model, edit_job(mask, images=two))
    assert caught.value.param == "image"
    with pytest.raises(InvalidRequest) as caught:
        backend.edit(model, edit_job(None, images=[Image.new("RGB", (320, 320))] * 6))
    assert caught.value.param == "image"
    with pytest.raises(InvalidRequest) as caught:
        backend.edit(model, edit_job(Image.new("L", (200, 200), 0), width=200, height=200))
    assert caught.value.param == "image"


# -- AWS errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 429),
        ("ServiceUnavailableException", 503),
        ("ModelNotReadyException", 429),
        ("InternalServerException", 500),
    ],
)
def test_throttling_and_unavailability_are_503_with_retry_after(stubber, backend, model, code, status):
    for operation in ("invoke_model", "converse"):  # retried within the deadline; the last 503 is the client's
        for _ in range(ATTEMPTS):
            stubber.add_client_error(operation, code, SECRET_DETAIL, http_status_code=status)
    for call in (lambda: backend.generate(model, gen_job()), lambda: backend.respond(model, text_job())):
        with pytest.raises(ServiceUnavailable) as caught:
            call()
        assert caught.value.status == 503 and int(caught.value.headers["retry-after"]) >= 1
        assert_neutral(caught.value)


@pytest.mark.parametrize(
    "message",
    [
        "This request has been blocked by our content filters. " + SECRET_DETAIL,
        "The generated image has been blocked by our content filters. Please adjust your prompt and try again.",
        "Our filters flagged the input image as violating the Responsible AI policy.",
    ],
)
def test_content_filter_validation_errors_are_400_content_policy(stubber, backend, model, message):
    stubber.add_client_error("invoke_model", "ValidationException", message, http_status_code=400)
    with pytest.raises(InvalidRequest) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 400 and caught.value.code == "content_policy_violation"
    assert_neutral(caught.value)
    assert backend.breaker.state == "closed"


def test_an_error_field_in_the_image_answer_is_400_content_policy(stubber, backend, model):
    stubber.add_response(
        "invoke_model", image_reply({"images": [], "error": SECRET_DETAIL}), invoke_params(Capture(json_body=True))
    )
    with pytest.raises(InvalidRequest) as caught:
        backend.generate(model, gen_job())
    assert caught.value.code == "content_policy_violation"
    assert_neutral(caught.value)


@pytest.mark.parametrize("stop", ["content_filtered", "guardrail_intervened"])
def test_a_filtered_converse_answer_is_400_content_policy(stubber, backend, model, stop):
    stubber.add_response("converse", converse_reply([{"text": ""}], stop=stop))
    with pytest.raises(InvalidRequest) as caught:
        backend.respond(model, text_job())
    assert caught.value.code == "content_policy_violation"


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        (
            "ValidationException",
            400,
            "Malformed input request: #/imageGenerationConfig: extraneous key " + SECRET_DETAIL,
        ),
        ("AccessDeniedException", 403, f"You don't have access to the model {MODEL_ARN}"),
        ("ResourceNotFoundException", 404, f"Model {MODEL_ARN} not found"),
        ("ModelErrorException", 424, SECRET_DETAIL),
    ],
)
def test_other_client_errors_are_502(stubber, backend, model, code, status, message):
    stubber.add_client_error("invoke_model", code, message, http_status_code=status)
    stubber.add_client_error("converse", code, message, http_status_code=status)
    for call in (lambda: backend.generate(model, gen_job()), lambda: backend.respond(model, text_job())):
        with pytest.raises(UpstreamError) as caught:
            call()
        assert caught.value.status == 502 and caught.value.code == "upstream_error"
        assert_neutral(caught.value)


def test_model_timeout_is_504(stubber, backend, model):
    stubber.add_client_error("invoke_model", "ModelTimeoutException", SECRET_DETAIL, http_status_code=408)
    with pytest.raises(UpstreamTimeout) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == 504
    assert_neutral(caught.value)


@pytest.mark.parametrize("method", ["invoke_model", "converse"])
def test_read_timeouts_are_504(client, backend, model, monkeypatch, method):
    def timed_out(**kwargs):
        raise ReadTimeoutError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com/model/" + NOVA)

    monkeypatch.setattr(client, method, timed_out)
    call = backend.generate if method == "invoke_model" else backend.respond
    with pytest.raises(UpstreamTimeout) as caught:
        call(model, gen_job() if method == "invoke_model" else text_job())
    assert_neutral(caught.value)


@pytest.mark.parametrize(
    "reply",
    [
        b"not json " + SECRET_DETAIL.encode(),
        b"[]",
        {},
        {"images": None},
        {"images": []},
        {"images": [b64(png()), b64(png())]},
        {"images": ["%%%"]},
        {"images": [b64(b"RIFF....WAVEfmt ")]},
        {"images": [b64(png()[:40])]},
    ],
    ids=["text", "list", "empty", "null", "none", "too-many", "junk-b64", "wav", "truncated"],
)
def test_malformed_image_answers_are_502_invalid_response(stubber, backend, model, reply):
    stubber.add_response("invoke_model", image_reply(reply), invoke_params(Capture(json_body=True)))
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.code == "upstream_invalid_response"
    assert_neutral(caught.value)


@pytest.mark.parametrize("content", [[], [{"image": {"format": "png", "source": {"bytes": png(8, 8)}}}]])
def test_converse_answers_without_text_are_502(stubber, backend, model, content):
    stubber.add_response("converse", converse_reply(content))
    with pytest.raises(UpstreamError) as caught:
        backend.respond(model, text_job())
    assert caught.value.code == "upstream_invalid_response"


# -- construction ----------------------------------------------------------------------------------


def test_the_client_is_built_lazily_with_the_endpoint_region_without_botocore_retries(monkeypatch):
    built = []

    class Spy:  # the session config.client builds every client with
        def client(self, service, config=None):
            built.append((service, config))
            return boto3.session.Session().client(service, config=config)

    monkeypatch.setattr(config, "_session", Spy)
    config.reset_clients()
    try:
        backend = BedrockBackend(entry(region="us-west-2"))
        assert built == []
        assert backend.client is backend.client
        ((service, settings),) = built
        assert service == "bedrock-runtime"
        assert settings.region_name == "us-west-2" and settings.connect_timeout == config.RUNTIME_CONNECT_SECONDS
        assert settings.retries == {"mode": "standard", "total_max_attempts": 1}  # darkroom retries, in the deadline
    finally:
        config.reset_clients()


def test_adapter_for_reuses_the_adapter_until_the_entry_changes():
    first = backend_for(entry())
    assert backend_for(entry()) is first
    assert backend_for(entry(region="eu-west-1")) is not first


# -- the family comes from the catalog, never from the model id ------------------------------------


@pytest.mark.parametrize(
    ("model_id", "family", "width", "height"),
    [
        (NOVA, "titan-image", 1173, 640),  # looks like Nova Canvas, declared Titan: Titan's size list applies
        ("us.amazon.titan-image-generator-v2:0-profile", "nova-canvas", 1024, 1024),  # looks like Titan, is Nova
    ],
)
def test_the_declared_family_decides_the_rules_whatever_the_id_looks_like(
    client, stubber, model_id, family, width, height
):
    model = entry(model_id, sizes=(f"{width}x{height}",), family=family)
    stubber.add_response(
        "invoke_model",
        image_reply({"images": [b64(png(width, height))]}),
        invoke_params(Capture(json_body=True), model_id),
    )
    (image,) = BedrockBackend(model, client=client).generate(model, gen_job(width, height))
    assert image.image.size == (width, height)


def test_a_size_only_the_id_lookalike_family_takes_is_refused_by_the_declared_one(client, stubber):
    model = entry(NOVA, sizes=("1024x1024",), family="titan-image")  # 1024x768 is a Nova size, not a Titan one
    with pytest.raises(InvalidRequest) as caught:
        BedrockBackend(model, client=client).generate(model, gen_job(1024, 768))
    assert caught.value.param == "size" and "Titan Image Generator" in caught.value.message


def test_the_largest_nova_size_below_the_pixel_bound_is_sent(client, stubber):
    # 2048x2032 has 4,161,536 pixels, under Nova Canvas's "less than 4,194,304"; 2048x2048 is refused above.
    model = entry(NOVA, sizes=("2048x2032",))
    stubber.add_response("invoke_model", image_reply({"images": [b64(png(2048, 2032))]}), invoke_params(Capture()))
    images = BedrockBackend(model, client=client).generate(model, gen_job(2048, 2032))
    assert [i.image.size for i in images] == [(2048, 2032)]
