"""The ``sagemaker`` backend against an *asynchronous* endpoint: botocore's Stubber for
``InvokeEndpointAsync`` (the real service model checks every parameter), moto for S3, and the test
playing the endpoint by writing its output or failure object on a chosen poll."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.stub import Stubber
from PIL import Image
from pydantic import ValidationError

from backend_stubs import ATTEMPTS, b64, decode_png, no_wait, png_of, stubbed
from darkroom import config
from darkroom.api.errors import ApiError, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import SageMakerEndpoint
from darkroom.inference import EditJob, GenerateJob, InputImage, TextJob, aws_runtime, sagemaker_async
from darkroom.inference.resilience import CircuitBreaker
from darkroom.inference.sagemaker import SageMakerBackend
from darkroom.inference.sagemaker_contracts import generate_request

ENDPOINT_NAME = "darkroom-async-endpoint-7f3a"
SECRET_DETAIL = "CONTAINER-TRACEBACK-DETAIL-9c1e"
INPUT_PREFIX = "async-inference/input/"
OUTPUT_KEY = "async-inference/output/answer-1.out"
FAILURE_KEY = "async-inference/failure/answer-1-error.out"


def png(width=64, height=48, colour=(200, 30, 30)) -> bytes:
    return png_of(width, height, colour)


def entry(**endpoint) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "sm-async",
            "backend": "sagemaker",
            "endpoint": {"endpoint_name": ENDPOINT_NAME, "async_inference": True, "timeout_seconds": 20, **endpoint},
            "capabilities": ["generate", "edit", "analyze"],
            "sizes": ["64x48"],
            "default_size": "64x48",
            "max_n": 4,
            "qualities": ["low", "medium", "high"],
            "default_quality": "medium",
            "passthrough": ["negative_prompt", "steps", "seed"],
        }
    )


def gen_job(n=1, deadline=60.0, **options) -> GenerateJob:
    return GenerateJob(
        prompt="a lighthouse at dusk",
        width=64,
        height=48,
        n=n,
        quality="high",
        transparent=False,
        deadline_seconds=deadline,
        options=options,
    )


class Capture:
    """Matches any value in Stubber's expected_params and keeps it."""

    def __init__(self) -> None:
        self.value = None

    def __eq__(self, other) -> bool:
        self.value = other
        return True

    __hash__ = None


class FakeTime:
    """The injected clock and sleep: sleeping moves the clock; ``on_sleep(count)`` plays the endpoint."""

    def __init__(self, on_sleep=None) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


@pytest.fixture
def bucket(aws) -> str:
    return config.get_settings().images_bucket


@pytest.fixture
def s3(aws):
    return config.client("s3")


@pytest.fixture
def client():
    return boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


@pytest.fixture
def stubber(client):
    with stubbed(client) as stub:
        yield stub


@pytest.fixture
def clock():
    return FakeTime()


@pytest.fixture
def model():
    return entry()


@pytest.fixture
def backend(client, clock, model):
    return SageMakerBackend(
        model,
        client=client,
        breaker=CircuitBreaker(threshold=100),
        resilience=no_wait(),
        sleep=clock.sleep,
        clock=clock.time,
    )


class Invocation:
    """One expected ``InvokeEndpointAsync``: the parameters it must carry and what SageMaker answers. ``inline``:
    the request travels as ``Body`` (at most 128,000 bytes), else in S3, named by ``InputLocation``: exactly one of
    them (botocore's sagemaker-runtime service model, InvokeEndpointAsyncInput.Body)."""

    def __init__(
        self,
        stubber: Stubber,
        bucket: str,
        *,
        inline=True,
        ttl=60,
        timeout=900,
        output_key=OUTPUT_KEY,
        failure_key: str | None = FAILURE_KEY,
        output_bucket: str | None = None,
        headers=("application/json", "application/json"),
    ) -> None:
        self.input_location = Capture()
        self.body = Capture()
        self.inference_id = Capture()
        answer = {"InferenceId": "answer-1", "OutputLocation": f"s3://{output_bucket or bucket}/{output_key}"}
        if failure_key:
            answer["FailureLocation"] = f"s3://{bucket}/{failure_key}"
        source = {"Body": self.body} if inline else {"InputLocation": self.input_location}
        stubber.add_response(
            "invoke_endpoint_async",
            answer,
            {
                "EndpointName": ENDPOINT_NAME,
                **source,
                "ContentType": headers[0],
                "Accept": headers[1],
                "InferenceId": self.inference_id,
                "InvocationTimeoutSeconds": timeout,
                "RequestTTLSeconds": ttl,
            },
        )
        self.bucket = bucket

    @property
    def input_key(self) -> str:
        return self.input_location.value.removeprefix(f"s3://{self.bucket}/")

    @property
    def sent(self) -> dict:
        """The inline request body, as the endpoint reads it."""
        assert isinstance(self.body.value, bytes) and len(self.body.value) <= sagemaker_async.MAX_INLINE_BYTES
        return json.loads(self.body.value)


def input_keys(s3, bucket) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=INPUT_PREFIX).get("Contents", [])]


def endpoint_writes(s3, bucket, on_poll: int, key: str, data: bytes, seen: list | None = None):
    """An ``on_sleep`` that, on poll ``on_poll``, reads the input like the endpoint would and writes ``key``."""

    def on_sleep(count: int) -> None:
        if count == on_poll:
            if seen is not None:
                (input_key,) = input_keys(s3, bucket)
                seen.append(json.loads(s3.get_object(Bucket=bucket, Key=input_key)["Body"].read()))
            s3.put_object(Bucket=bucket, Key=key, Body=data)

    return on_sleep


def answer(document) -> bytes:
    return json.dumps(document).encode()


def assert_neutral(exc: ApiError, bucket: str) -> None:
    text = " ".join([exc.message, json.dumps(exc.envelope()), json.dumps(exc.headers)])
    for leak in (ENDPOINT_NAME, SECRET_DETAIL, bucket, "s3://", "async-inference", "arn:"):
        assert leak not in text


# -- answers ---------------------------------------------------------------------------------------


def test_a_small_generate_travels_inline_and_returns_the_endpoints_images(stubber, backend, model, clock, s3, bucket):
    invocation = Invocation(stubber, bucket)  # Body, no InputLocation: the Stubber checks both
    images = [b64(png(colour=(1, 2, 3))), b64(png(128, 96, colour=(9, 8, 7)))]  # the second is cover-fitted
    written: list[list[str]] = []

    def endpoint(count: int) -> None:
        written.append(input_keys(s3, bucket))
        endpoint_writes(s3, bucket, 3, OUTPUT_KEY, answer({"images": images}))(count)

    clock.on_sleep = endpoint

    result = backend.generate(model, gen_job(n=2, negative_prompt="fog", steps=30, seed=7))

    assert [invocation.sent] == [
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
    ]
    assert [image.image.size for image in result] == [(64, 48), (64, 48)]
    assert result[0].image.getpixel((5, 5)) == (1, 2, 3) and result[1].image.getpixel((30, 20)) == (9, 8, 7)
    assert clock.sleeps == [0.5, 1.0, 2.0]  # answered on the third poll, not a poll more
    assert written == [[], [], []] and input_keys(s3, bucket) == []  # nothing was put in S3, nor left there


def noise(width: int, height: int) -> Image.Image:
    """An image that does not compress: its PNG alone is past the 128,000 bytes an inline body may hold."""
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def large_edit(deadline=60.0) -> EditJob:
    mask = Image.new("L", (64, 48), 255)
    mask.paste(0, (0, 0, 32, 48))  # darkroom: alpha 0 = edit the left half
    return EditJob(
        prompt="add a moon",
        images=[Image.new("RGB", (64, 48), (10, 200, 10)), noise(256, 192)],
        mask=mask,
        width=64,
        height=48,
        n=1,
        quality="medium",
        transparent=False,
        input_fidelity="low",
        deadline_seconds=deadline,
    )


def test_a_large_edit_goes_through_s3_with_its_white_is_edit_mask(stubber, backend, model, clock, s3, bucket):
    invocation = Invocation(stubber, bucket, inline=False)
    seen: list[dict] = []
    clock.on_sleep = endpoint_writes(s3, bucket, 1, OUTPUT_KEY, answer({"images": [b64(png())]}), seen)

    (image,) = backend.edit(model, large_edit())

    assert image.image.size == (64, 48)
    assert invocation.input_key == f"{INPUT_PREFIX}{invocation.inference_id.value}.json"
    (sent,) = seen  # read from S3 while the job was pending
    assert len(json.dumps(sent, separators=(",", ":"))) > sagemaker_async.MAX_INLINE_BYTES
    assert sent["task"] == "edit" and sent["num_images"] == 1
    assert decode_png(sent["image"]).getpixel((5, 5)) == (10, 200, 10)
    assert [decode_png(r).size for r in sent["reference_images"]] == [(256, 192)]
    contract_mask = decode_png(sent["mask"])
    assert contract_mask.getpixel((5, 5)) == 255 and contract_mask.getpixel((60, 5)) == 0
    assert input_keys(s3, bucket) == []  # the input is deleted once the answer is in


def test_a_large_edit_whose_invocation_fails_leaves_no_input(stubber, backend, model, s3, bucket):
    stubber.add_client_error("invoke_endpoint_async", "ValidationError", SECRET_DETAIL, http_status_code=400)
    with pytest.raises(UpstreamError):
        backend.edit(model, large_edit())
    assert input_keys(s3, bucket) == []


def test_respond_returns_the_endpoints_text(stubber, backend, model, clock, s3, bucket):
    invocation = Invocation(stubber, bucket)
    clock.on_sleep = endpoint_writes(s3, bucket, 2, OUTPUT_KEY, answer({"text": "A blue square."}))
    job = TextJob(
        instructions="Be brief.",
        messages=[("user", "what?")],
        images=[InputImage(Image.new("RGB", (8, 8), (0, 0, 255)), "png")],
        deadline_seconds=60,
    )

    assert backend.respond(model, job) == "A blue square."
    sent = invocation.sent
    assert sent["messages"] == [{"role": "user", "content": "what?"}] and sent["instructions"] == "Be brief."
    assert input_keys(s3, bucket) == []


def test_the_catalogs_invocation_timeout_is_sent(client, stubber, clock, s3, bucket):
    model = entry(async_timeout_seconds=3600)
    backend = SageMakerBackend(model, client=client, sleep=clock.sleep, clock=clock.time)
    Invocation(stubber, bucket, timeout=3600, ttl=300)
    clock.on_sleep = endpoint_writes(s3, bucket, 1, OUTPUT_KEY, answer({"images": [b64(png())]}))
    assert len(backend.generate(model, gen_job(deadline=299.5))) == 1


# -- failures ----------------------------------------------------------------------------------------


def test_a_failure_object_is_a_502_that_never_repeats_its_text_or_location(
    stubber, backend, model, clock, s3, bucket, caplog
):
    Invocation(stubber, bucket)
    failure = f"Traceback: {SECRET_DETAIL} in s3://{bucket}/{FAILURE_KEY}".encode()
    clock.on_sleep = endpoint_writes(s3, bucket, 2, FAILURE_KEY, failure)

    with caplog.at_level("INFO", logger="darkroom"), pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())

    assert caught.value.status == 502 and caught.value.code == "upstream_error"
    assert_neutral(caught.value, bucket)
    logged = " ".join(json.dumps(vars(record), default=str) for record in caplog.records)
    assert "async_failure" in logged and SECRET_DETAIL not in logged and FAILURE_KEY not in logged
    assert len(clock.sleeps) == 2 and input_keys(s3, bucket) == []


def refusal(**extra) -> bytes:
    """The model server's safety refusal, as the failure object holds it (its error answer)."""
    return answer(
        {
            "error": {"code": "content_policy_violation", "message": f"blocked: {SECRET_DETAIL}", "param": "prompt"},
            **extra,
        }
    )


def test_a_content_policy_refusal_in_the_failure_object_is_a_400_that_spares_the_breaker(
    stubber, model, client, clock, s3, bucket, caplog
):
    backend = SageMakerBackend(
        model, client=client, breaker=CircuitBreaker(threshold=1), sleep=clock.sleep, clock=clock.time
    )
    Invocation(stubber, bucket)
    clock.on_sleep = endpoint_writes(s3, bucket, 2, FAILURE_KEY, refusal())

    with caplog.at_level("DEBUG", logger="darkroom"), pytest.raises(InvalidRequest) as caught:
        backend.generate(model, gen_job())

    assert (caught.value.status, caught.value.code) == (400, "content_policy_violation")
    assert caught.value.message == "The request was rejected by the model's content filters."
    assert_neutral(caught.value, bucket)
    logged = " ".join(json.dumps(vars(record), default=str) for record in caplog.records)
    assert "content_policy_violation" in logged and "async_failure" not in logged
    for leak in (SECRET_DETAIL, "blocked:", FAILURE_KEY, ENDPOINT_NAME):
        assert leak not in logged
    assert backend.breaker.state == "closed"  # the client's prompt, not the endpoint's health
    assert input_keys(s3, bucket) == []


@pytest.mark.parametrize(
    "failure",
    [
        answer({"error": {"code": "model_error", "message": SECRET_DETAIL}}),
        b"Traceback " + SECRET_DETAIL.encode(),
        b"",
        "oversized",
    ],
    ids=["other-code", "text", "empty", "oversized"],
)
def test_any_other_failure_object_stays_a_502(stubber, backend, model, clock, s3, bucket, failure):
    if failure == "oversized":  # a refusal padded past the cap: only the prefix is fetched, and it is not parsed
        failure = refusal(pad="x" * sagemaker_async.MAX_FAILURE_BYTES)
    Invocation(stubber, bucket)
    clock.on_sleep = endpoint_writes(s3, bucket, 1, FAILURE_KEY, failure)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert_neutral(caught.value, bucket)


def test_only_a_capped_prefix_of_the_failure_object_is_fetched(stubber, backend, model, clock, s3, bucket, monkeypatch):
    Invocation(stubber, bucket)
    clock.on_sleep = endpoint_writes(s3, bucket, 1, FAILURE_KEY, refusal())
    ranges = []
    get_object = s3.get_object

    def spy(**kwargs):
        ranges.append(kwargs.get("Range"))
        return get_object(**kwargs)

    monkeypatch.setattr(s3, "get_object", spy)
    with pytest.raises(InvalidRequest):
        backend.generate(model, gen_job())
    assert ranges == [f"bytes=0-{sagemaker_async.MAX_FAILURE_BYTES}"]


def test_an_unreadable_failure_object_is_still_the_endpoints_502(
    stubber, model, client, clock, s3, bucket, monkeypatch
):
    backend = SageMakerBackend(
        model, client=client, breaker=CircuitBreaker(threshold=1), sleep=clock.sleep, clock=clock.time
    )
    Invocation(stubber, bucket)
    clock.on_sleep = endpoint_writes(s3, bucket, 1, FAILURE_KEY, refusal())

    def denied(**kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": f"denied on {bucket}"}}, "GetObject")

    monkeypatch.setattr(s3, "get_object", denied)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert backend.breaker.state == "open"  # it failed, and nothing says the client caused it


def test_no_answer_by_the_deadline_is_the_real_time_paths_504(stubber, model, client, clock, s3, bucket):
    backend = SageMakerBackend(
        model, client=client, breaker=CircuitBreaker(threshold=1), sleep=clock.sleep, clock=clock.time
    )
    Invocation(stubber, bucket)
    started = clock.now

    with pytest.raises(UpstreamTimeout) as caught:
        backend.generate(model, gen_job(deadline=30))

    real_time = aws_runtime.transport_outcome(ReadTimeoutError(endpoint_url="https://x")).error
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        real_time.status,
        real_time.code,
        real_time.message,
    )
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 2.5]  # grows, caps, and stops at the deadline
    assert clock.now - started == 30
    assert input_keys(s3, bucket) == []
    assert backend.breaker.state == "open"  # a timeout counts against the endpoint, as in real time


@pytest.mark.parametrize(
    "reply",
    [
        b"<html>" + SECRET_DETAIL.encode(),
        b"[1, 2]",
        answer({"images": []}),
        answer({"images": ["not base64!"]}),
        answer({"images": [b64(png()), b64(png())]}),
        answer({"text": "words where an image was asked for"}),
    ],
    ids=["html", "list", "none", "junk-b64", "too-many", "text"],
)
def test_a_malformed_output_is_a_502_invalid_response(stubber, backend, model, clock, s3, bucket, reply):
    Invocation(stubber, bucket)
    clock.on_sleep = endpoint_writes(s3, bucket, 1, OUTPUT_KEY, reply)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.code == "upstream_invalid_response"
    assert_neutral(caught.value, bucket)
    assert input_keys(s3, bucket) == []


def test_an_oversized_output_is_refused(stubber, backend, model, clock, s3, bucket, monkeypatch):
    monkeypatch.setattr(aws_runtime, "MAX_RESPONSE_BYTES", 100)
    Invocation(stubber, bucket)
    clock.on_sleep = endpoint_writes(s3, bucket, 1, OUTPUT_KEY, answer({"text": "x" * 200}))
    with pytest.raises(UpstreamError) as caught:
        backend.respond(model, TextJob(instructions=None, messages=[("user", "hi")], images=[], deadline_seconds=9))
    assert caught.value.code == "upstream_invalid_response"


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("ThrottlingException", 400, ServiceUnavailable),
        ("ServiceUnavailable", 503, ServiceUnavailable),
        ("InternalFailure", 500, ServiceUnavailable),
        ("ValidationError", 400, UpstreamError),
    ],
)
def test_invoke_errors_map_as_in_real_time_and_drop_the_input(stubber, backend, model, s3, bucket, code, status, error):
    for _ in range(ATTEMPTS if error is ServiceUnavailable else 1):  # a submission is retried like a real-time call
        stubber.add_client_error(
            "invoke_endpoint_async", code, f"{SECRET_DETAIL} {ENDPOINT_NAME}", http_status_code=status
        )
    with pytest.raises(error) as caught:
        backend.generate(model, gen_job())
    assert caught.value.status == (503 if error is ServiceUnavailable else 502)
    if error is ServiceUnavailable:
        assert int(caught.value.headers["retry-after"]) >= 1
    assert_neutral(caught.value, bucket)
    assert input_keys(s3, bucket) == []


@pytest.mark.parametrize(
    "where",
    [{"output_bucket": "someone-elses-bucket"}, {"output_key": "elsewhere/a.out"}, {"failure_key": None}],
    ids=["other-bucket", "other-prefix", "no-failure-path"],
)
def test_an_endpoint_writing_outside_async_inference_is_refused_at_submit(
    stubber, backend, model, clock, s3, bucket, where
):
    Invocation(stubber, bucket, **where)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job())
    assert caught.value.code == "upstream_error" and "not configured correctly" in caught.value.message
    assert clock.sleeps == [] and input_keys(s3, bucket) == []


def test_only_the_exact_output_key_is_an_answer(stubber, backend, model, clock, s3, bucket):
    Invocation(stubber, bucket)
    s3.put_object(Bucket=bucket, Key=OUTPUT_KEY + ".partial", Body=answer({"images": [b64(png())]}))
    with pytest.raises(UpstreamTimeout):
        backend.generate(model, gen_job(deadline=3))


def test_a_storage_failure_is_a_502_that_leaves_the_breaker_alone(
    stubber, model, client, clock, s3, bucket, monkeypatch
):
    backend = SageMakerBackend(
        model, client=client, breaker=CircuitBreaker(threshold=1), sleep=clock.sleep, clock=clock.time
    )
    Invocation(stubber, bucket)

    def denied(**kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": f"denied on {bucket}"}}, "ListObjectsV2")

    with monkeypatch.context() as patch, pytest.raises(UpstreamError) as caught:
        patch.setattr(s3, "list_objects_v2", denied)
        backend.generate(model, gen_job())
    assert caught.value.status == 502 and caught.value.code == "upstream_error"
    assert_neutral(caught.value, bucket)
    assert backend.breaker.state == "closed"  # darkroom's storage, not the endpoint's health
    assert input_keys(s3, bucket) == []


# -- submit and collect across invocations -----------------------------------------------------------


def test_submit_then_collect_in_a_later_invocation(stubber, backend, model, s3, bucket):
    invocation = Invocation(stubber, bucket, ttl=21_600)
    body = generate_request(gen_job(n=1))
    handle = json.loads(json.dumps(backend.submit_async(model, "generate", body)))  # stored as JSON between them

    later = SageMakerBackend(model, client=object(), clock=FakeTime().time)  # no SageMaker call is left to make
    assert later.collect_async(model, handle) is None
    assert later.collect_async(model, handle) is None
    assert invocation.sent == body and input_keys(s3, bucket) == []  # inline: nothing in S3 to keep or delete

    s3.put_object(Bucket=bucket, Key=OUTPUT_KEY, Body=answer({"images": [b64(png(colour=(4, 5, 6)))]}))
    (image,) = later.collect_async(model, handle)
    assert image.image.size == (64, 48) and image.image.getpixel((0, 0)) == (4, 5, 6)
    assert input_keys(s3, bucket) == []


def test_a_handle_without_a_deadline_lasts_as_long_as_sagemaker_may_keep_the_request(
    stubber, backend, model, clock, bucket
):
    Invocation(stubber, bucket, ttl=21_600)
    handle = backend.submit_async(model, "generate", generate_request(gen_job()))
    clock.now += 21_600 + 900 - 1
    assert backend.collect_async(model, handle) is None
    clock.now += 1
    with pytest.raises(UpstreamTimeout):
        backend.collect_async(model, handle)


def test_collect_reports_a_failure_and_answers_even_while_the_breaker_is_open(
    stubber, model, client, clock, s3, bucket
):
    backend = SageMakerBackend(
        model,
        client=client,
        breaker=CircuitBreaker(threshold=1, cooldown_seconds=60),
        sleep=clock.sleep,
        clock=clock.time,
    )
    Invocation(stubber, bucket, ttl=21_600)
    Invocation(
        stubber,
        bucket,
        ttl=21_600,
        output_key="async-inference/output/answer-2.out",
        failure_key="async-inference/failure/answer-2-error.out",
    )
    first = backend.submit_async(model, "generate", generate_request(gen_job()))
    second = backend.submit_async(model, "generate", generate_request(gen_job()))

    s3.put_object(Bucket=bucket, Key="async-inference/failure/answer-2-error.out", Body=SECRET_DETAIL.encode())
    with pytest.raises(UpstreamError):
        backend.collect_async(model, second)
    assert backend.breaker.state == "open"  # a failed job counts against the endpoint

    s3.put_object(Bucket=bucket, Key=OUTPUT_KEY, Body=answer({"images": [b64(png())]}))
    assert len(backend.collect_async(model, first)) == 1  # a job already running is still collected
    assert backend.breaker.state == "closed"


# -- the catalog -----------------------------------------------------------------------------------


def test_the_catalog_allows_async_inference_only_on_a_sagemaker_endpoint():
    assert SageMakerEndpoint(endpoint_name="e").async_timeout_seconds == 900
    assert SageMakerEndpoint(endpoint_name="e").async_inference is False
    for bad in (
        {"async_inference": True},
        {"async_inference": True, "base_url": "https://x/v1"},
        {"async_inference": True, "model_id": "amazon.nova-canvas-v1:0"},
        {"async_inference": True, "endpoint_name": "e", "model_id": "amazon.nova-canvas-v1:0"},
        {"endpoint_name": "e", "async_timeout_seconds": 0},
        {"endpoint_name": "e", "async_timeout_seconds": 3601},
    ):
        with pytest.raises(ValidationError):
            SageMakerEndpoint.model_validate(bad)
    for backend, endpoint in (
        ("openai", {"base_url": "https://x/v1", "async_inference": True}),
        ("bedrock", {"model_id": "amazon.nova-lite-v1:0", "family": "converse", "async_inference": True}),
    ):
        with pytest.raises(ValidationError, match="async_inference is for the sagemaker backend only"):
            ModelEntry.model_validate({"id": "m", "backend": backend, "capabilities": ["text"], "endpoint": endpoint})
    endpoint = SageMakerEndpoint(endpoint_name="e", async_inference=True, async_timeout_seconds=3600)
    assert endpoint.async_timeout_seconds == 3600


def test_in_a_background_job_a_pending_answer_pauses_and_the_next_invocation_collects_it(
    stubber, backend, model, clock, s3, bucket
):
    from darkroom.inference import checkpoint

    Invocation(stubber, bucket, ttl=21_600)  # made for the endpoint's own limit, not this invocation's deadline
    with checkpoint.resumable(None), pytest.raises(checkpoint.StillRunning) as paused:
        backend.generate(model, gen_job(deadline=20.0))
    assert 20.0 <= sum(clock.sleeps) < 21 and input_keys(s3, bucket) == []  # still queued, inline
    handle = json.loads(json.dumps(paused.value.handle))  # as the job stores it

    s3.put_object(Bucket=bucket, Key=OUTPUT_KEY, Body=answer({"images": [b64(png(colour=(7, 7, 7)))]}))
    with checkpoint.resumable(handle):  # no second InvokeEndpointAsync is stubbed: it would fail the test
        (image,) = backend.generate(model, gen_job(deadline=20.0))
    assert image.image.getpixel((0, 0)) == (7, 7, 7) and input_keys(s3, bucket) == []
