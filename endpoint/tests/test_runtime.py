"""The local SageMaker Runtime emulator (runtime.py), driven by botocore's real ``sagemaker-runtime`` client against
a real uvicorn on 127.0.0.1, with a moto server as S3 for the async operation."""

from __future__ import annotations

import json
import threading
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from darkroom_endpoint.contract import ContentPolicyViolation
from darkroom_endpoint.runtime import FAILURE_PATH_ENV, OUTPUT_PATH_ENV, RuntimeEmulator
from darkroom_endpoint.server import create_app
from server_fixtures import FakeModels, decode_png, make_settings, running_server, wait_until

GENERATE = {
    "task": "generate",
    "prompt": "a lighthouse at dusk",
    "width": 32,
    "height": 24,
    "num_images": 2,
    "quality": "medium",
}
ENDPOINT = "darkroom-local"


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(monkeypatch, moto_url):
    """A fresh bucket in the moto S3; the emulator's boto3 S3 client finds it through AWS_ENDPOINT_URL_S3."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_url,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    name = f"images-{uuid.uuid4().hex[:12]}"
    s3().create_bucket(Bucket=name)
    return name


def s3():
    """A test-side S3 client on the moto server (from the environment the ``bucket`` fixture sets)."""
    return boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def endpoint(tmp_path, bucket):
    """start(models, **settings changes) -> (sagemaker-runtime client, fake models, app, sent requests)."""
    servers = []

    def start(models: FakeModels | None = None, environ: dict | None = None, **changes):
        models = models or FakeModels()
        environ = (
            {
                OUTPUT_PATH_ENV: f"s3://{bucket}/async-inference/output/",
                FAILURE_PATH_ENV: f"s3://{bucket}/async-inference/failure/",
            }
            if environ is None
            else environ
        )
        app = create_app(
            make_settings(tmp_path, **changes), load=lambda settings: models, emulate_runtime=True, environ=environ
        )
        context = running_server(app)
        url = context.__enter__()
        servers.append(context)
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",  # noqa: S106 - fake, loopback
            config=Config(retries={"max_attempts": 1}),
        )
        sent = []  # what botocore put on the wire, per the service model
        client.meta.events.register("before-send.sagemaker-runtime.*", lambda request, **_: sent.append(request))
        wait_until(lambda: app.state.server.ready, what="models loaded")
        return client, models, app, sent

    yield start
    for context in servers:
        context.__exit__(None, None, None)


def headers_of(request) -> dict[str, str]:
    """A sent request's headers as text (botocore holds some as bytes once signed)."""
    return {name: value.decode() if isinstance(value, bytes) else value for name, value in request.headers.items()}


def model_error(exc_info) -> dict:
    response = exc_info.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["LogStreamArn"].startswith(
        f"arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/{ENDPOINT}"
    )
    return response


# -- InvokeEndpoint ------------------------------------------------------------------------------------------


def test_invoke_endpoint_returns_the_container_body(endpoint):
    client, models, _, sent = endpoint()
    response = client.invoke_endpoint(
        EndpointName=ENDPOINT,
        Body=json.dumps(GENERATE).encode(),
        ContentType="application/json",
        Accept="application/json",
    )
    assert response["ContentType"] == "application/json" and response["InvokedProductionVariant"] == "AllTraffic"
    images = json.loads(response["Body"].read())["images"]
    assert [decode_png(image).size for image in images] == [(32, 24), (32, 24)]
    request = sent[0]
    assert request.method == "POST" and request.url.endswith(f"/endpoints/{ENDPOINT}/invocations")
    headers = headers_of(request)
    assert headers["Content-Type"] == "application/json" and headers["Accept"] == "application/json"
    assert models.ran[0].prompt == GENERATE["prompt"]


def test_a_container_400_is_a_model_error_carrying_its_body(endpoint):
    client, models, _, _ = endpoint()
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(
            EndpointName=ENDPOINT,
            Body=json.dumps({**GENERATE, "width": "wide"}),
            ContentType="application/json",
            Accept="application/json",
        )
    response = model_error(caught)
    assert response["OriginalStatusCode"] == 400
    assert json.loads(response["OriginalMessage"])["error"] == {
        "code": "invalid_request",
        "message": "'width' must be an integer from 8 to 4096.",
        "param": "width",
    }
    assert response["Error"]["Message"].startswith("Received client error (400) from primary with message")
    assert models.ran == []


def test_a_content_policy_refusal_reaches_darkroom_as_a_model_error(endpoint):
    client, _, _, _ = endpoint(FakeModels(check_error=ContentPolicyViolation()))
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps(GENERATE), ContentType="application/json")
    response = model_error(caught)
    assert response["OriginalStatusCode"] == 400
    assert json.loads(response["OriginalMessage"])["error"]["code"] == "content_policy_violation"


def test_a_container_500_is_a_server_model_error(endpoint):
    client, _, _, _ = endpoint(FakeModels(run_error=RuntimeError("CUDA out of memory")))
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps(GENERATE), ContentType="application/json")
    response = model_error(caught)
    assert response["OriginalStatusCode"] == 500 and "CUDA" not in response["OriginalMessage"]
    assert response["Error"]["Message"].startswith("Received server error (500)")


def test_a_full_queue_is_a_model_error_429(endpoint):
    gate = threading.Event()
    client, models, _, _ = endpoint(FakeModels(gate=gate), queue_size=0)
    results = []
    first = threading.Thread(
        target=lambda: results.append(
            client.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps(GENERATE), ContentType="application/json")[
                "Body"
            ].read()
        )
    )
    first.start()
    try:
        assert models.started.wait(5)
        with pytest.raises(ClientError) as caught:
            client.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps(GENERATE), ContentType="application/json")
        assert model_error(caught)["OriginalStatusCode"] == 429
    finally:
        gate.set()
        first.join(10)
    assert len(json.loads(results[0])["images"]) == 2


def test_a_wrong_content_type_is_the_container_415(endpoint):
    client, _, _, _ = endpoint()
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps(GENERATE), ContentType="text/csv")
    assert model_error(caught)["OriginalStatusCode"] == 415


def test_a_payload_over_6_mb_is_a_validation_error(endpoint):
    client, models, _, _ = endpoint()
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName=ENDPOINT, Body=b" " * (6_291_456 + 1), ContentType="application/json")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert models.checked == []


# -- InvokeEndpointAsync -------------------------------------------------------------------------------------


def wait_for_object(bucket: str, key: str) -> bytes:
    """The object once the emulator has written it."""

    def exists() -> bool:
        listing = s3().list_objects_v2(Bucket=bucket, Prefix=key)
        return any(item["Key"] == key for item in listing.get("Contents", []))

    wait_until(exists, timeout=10, what=f"s3://{bucket}/{key}")
    return s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(bucket: str) -> list[str]:
    return sorted(item["Key"] for item in s3().list_objects_v2(Bucket=bucket).get("Contents", []))


def test_invoke_endpoint_async_writes_the_answer_to_the_output_path(endpoint, bucket):
    client, models, app, sent = endpoint()
    s3().put_object(Bucket=bucket, Key="async-inference/input/job-1.json", Body=json.dumps(GENERATE).encode())
    response = client.invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InputLocation=f"s3://{bucket}/async-inference/input/job-1.json",
        ContentType="application/json",
        Accept="application/json",
        InferenceId="job-1",
        InvocationTimeoutSeconds=600,
        RequestTTLSeconds=60,
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202 and response["InferenceId"] == "job-1"
    assert response["OutputLocation"] == f"s3://{bucket}/async-inference/output/job-1.out"
    assert response["FailureLocation"] == f"s3://{bucket}/async-inference/failure/job-1-error.out"
    headers = headers_of(sent[0])
    assert sent[0].url.endswith(f"/endpoints/{ENDPOINT}/async-invocations")
    assert headers["X-Amzn-SageMaker-InputLocation"] == f"s3://{bucket}/async-inference/input/job-1.json"
    assert (headers["X-Amzn-SageMaker-Content-Type"], headers["X-Amzn-SageMaker-Accept"]) == (
        "application/json",
        "application/json",
    )
    assert (
        headers["X-Amzn-SageMaker-Inference-Id"],
        headers["X-Amzn-SageMaker-RequestTTLSeconds"],
        headers["X-Amzn-SageMaker-InvocationTimeoutSeconds"],
    ) == ("job-1", "60", "600")
    answer = json.loads(wait_for_object(bucket, "async-inference/output/job-1.out"))
    assert [decode_png(image).size for image in answer["images"]] == [(32, 24), (32, 24)]
    assert not any(key.startswith("async-inference/failure/") for key in keys(bucket))
    wait_until(lambda: not app.state.emulator._jobs, what="the job to finish")


def test_a_refused_async_request_lands_in_the_failure_path(endpoint, bucket):
    client, models, _, _ = endpoint()
    s3().put_object(
        Bucket=bucket, Key="async-inference/input/bad.json", Body=json.dumps({**GENERATE, "task": "paint"}).encode()
    )
    response = client.invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InferenceId="bad",
        ContentType="application/json",
        InputLocation=f"s3://{bucket}/async-inference/input/bad.json",
    )
    failure = json.loads(wait_for_object(bucket, "async-inference/failure/bad-error.out"))
    assert response["FailureLocation"].endswith("/async-inference/failure/bad-error.out")
    assert failure["error"]["code"] == "invalid_request" and failure["error"]["param"] == "task"
    assert "async-inference/output/bad.out" not in keys(bucket) and models.ran == []


def test_a_missing_input_object_lands_in_the_failure_path(endpoint, bucket):
    client, _, _, _ = endpoint()
    client.invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InferenceId="gone",
        ContentType="application/json",
        InputLocation=f"s3://{bucket}/async-inference/input/gone.json",
    )
    failure = json.loads(wait_for_object(bucket, "async-inference/failure/gone-error.out"))
    assert failure["error"]["code"] == "input_not_found"


def test_an_inline_body_and_a_generated_inference_id(endpoint, bucket):
    client, _, _, _ = endpoint()
    response = client.invoke_endpoint_async(
        EndpointName=ENDPOINT, Body=json.dumps(GENERATE).encode(), ContentType="application/json"
    )
    inference_id = response["InferenceId"]
    assert str(uuid.UUID(inference_id)) == inference_id
    answer = json.loads(wait_for_object(bucket, f"async-inference/output/{inference_id}.out"))
    assert len(answer["images"]) == 2


def test_async_requests_wait_for_a_busy_container_instead_of_failing(endpoint, bucket):
    gate = threading.Event()
    client, models, _, _ = endpoint(FakeModels(gate=gate), queue_size=0)
    for name in ("a", "b"):
        client.invoke_endpoint_async(
            EndpointName=ENDPOINT, InferenceId=name, ContentType="application/json", Body=json.dumps(GENERATE).encode()
        )
    assert models.started.wait(5)
    with pytest.raises(ClientError) as caught:  # the container is full: a real-time call is refused at once
        client.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps(GENERATE), ContentType="application/json")
    assert caught.value.response["OriginalStatusCode"] == 429
    gate.set()
    for name in ("a", "b"):
        wait_for_object(bucket, f"async-inference/output/{name}.out")
    assert not any(key.startswith("async-inference/failure/") for key in keys(bucket))


def test_an_async_invocation_over_its_timeout_lands_in_the_failure_path(endpoint, bucket):
    gate = threading.Event()
    client, models, _, _ = endpoint(FakeModels(gate=gate))
    try:
        client.invoke_endpoint_async(
            EndpointName=ENDPOINT,
            InferenceId="slow",
            ContentType="application/json",
            Body=json.dumps(GENERATE).encode(),
            InvocationTimeoutSeconds=1,
        )
        failure = json.loads(wait_for_object(bucket, "async-inference/failure/slow-error.out"))
        assert failure["error"]["code"] == "invocation_timeout"
    finally:
        gate.set()


@pytest.mark.parametrize(
    "call",
    [
        {"InputLocation": "https://example.com/input.json"},
        {"InputLocation": "s3://bucket-only"},
        {},
    ],
    ids=["https-location", "no-key", "no-input"],
)
def test_invalid_async_requests_are_validation_errors(endpoint, call):
    client, _, _, _ = endpoint()
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint_async(EndpointName=ENDPOINT, ContentType="application/json", **call)
    assert caught.value.response["Error"]["Code"] == "ValidationError"


def test_an_endpoint_without_async_config_refuses_async_calls(endpoint, bucket):
    client, _, _, _ = endpoint(environ={})
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint_async(EndpointName=ENDPOINT, InputLocation=f"s3://{bucket}/async-inference/x.json")
    assert caught.value.response["Error"]["Code"] == "ValidationError"


def test_a_malformed_output_path_is_refused_at_start():
    with pytest.raises(ValueError, match=OUTPUT_PATH_ENV):
        RuntimeEmulator(server=None, environ={OUTPUT_PATH_ENV: "bucket/prefix"})
