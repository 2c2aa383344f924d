"""InvokeEndpointWithResponseStream in the local SageMaker Runtime emulator (runtime_stream.py): the event-stream
encoding checked with botocore's own decoder, and botocore's real ``sagemaker-runtime`` client iterating the events
of a real uvicorn, with the tiny SDXL-class model and the fake ModelSet."""

from __future__ import annotations

import json
from contextlib import ExitStack

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from conftest import tiny_settings
from darkroom_endpoint.runtime_stream import encode_message, model_stream_error, payload_part
from darkroom_endpoint.server import create_app
from darkroom_endpoint.streaming import Stream
from server_fixtures import FakeModels, decode_png, make_settings, running_server, wait_ready

ENDPOINT = "darkroom-local"
GENERATE = {"task": "generate", "prompt": "a quiet street", "width": 128, "height": 128, "num_images": 1}
STREAM = {**GENERATE, "quality": "low", "steps": 6, "seed": 5, "stream": True, "partial_images": 2}


def decode(data: bytes) -> list:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


@pytest.mark.parametrize("payload", [b"", b'{"type":"progress"}\n', bytes(range(256)) * 300])
def test_payload_parts_decode_with_botocore(payload):
    [message] = decode(payload_part(payload))  # EventStreamBuffer checks both CRCs
    assert message.payload == payload
    assert message.headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }


def test_messages_concatenate_and_split_anywhere():
    data = payload_part(b"one\n") + model_stream_error("broken") + encode_message({"a": "é"}, b"x")
    buffer = EventStreamBuffer()
    for index in range(len(data)):  # a byte at a time, as a slow network would deliver them
        buffer.add_data(data[index : index + 1])
    messages = list(buffer)
    assert [message.payload for message in messages[:1]] == [b"one\n"]
    assert messages[1].headers[":exception-type"] == "ModelStreamError"
    assert json.loads(messages[1].payload) == {"Message": "broken", "ErrorCode": "StreamBroken"}
    assert messages[2].headers == {"a": "é"}


@pytest.fixture
def runtime(tmp_path, tiny_models, sdxl_models, monkeypatch):
    """start(models=None) -> (a sagemaker-runtime client on the emulator, an httpx client on the same server)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    stack = ExitStack()

    def start(models=None):
        if models is None:
            app = create_app(
                tiny_settings(tiny_models["sdxl"], DARKROOM_WARM_UP="false"),
                load=lambda _: sdxl_models,
                emulate_runtime=True,
                environ={},
            )
        else:
            app = create_app(make_settings(tmp_path), load=lambda _: models, emulate_runtime=True, environ={})
        url = stack.enter_context(running_server(app))
        http = stack.enter_context(httpx.Client(base_url=url, timeout=60))
        wait_ready(http, timeout=30)
        config = Config(retries={"total_max_attempts": 1}, read_timeout=60)
        client = boto3.session.Session().client("sagemaker-runtime", endpoint_url=url, config=config)
        return client, http

    with stack:
        yield start


def test_boto3_iterates_payload_parts_that_make_the_ndjson_stream(runtime):
    client, http = runtime()
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=json.dumps(STREAM), ContentType="application/json"
    )
    assert response["ContentType"] == "application/x-ndjson" and response["InvokedProductionVariant"] == "AllTraffic"
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    assert all(part.endswith(b"\n") and part.count(b"\n") == 1 for part in parts)  # one NDJSON line an event
    events = [json.loads(line) for line in b"".join(parts).splitlines()]
    assert [event["type"] for event in events if event["type"] != "progress"] == ["partial", "partial", "result"]
    assert all(decode_png(event["image"]).size == (128, 128) for event in events if event["type"] == "partial")
    plain = {key: value for key, value in STREAM.items() if key not in ("stream", "partial_images")}
    assert events[-1]["body"] == http.post("/invocations", json=plain).json()  # the same seed, the same image


def test_a_refusal_before_the_stream_is_invoke_endpoints_model_error(runtime):
    client, _ = runtime(FakeModels())
    with pytest.raises(ClientError) as raised:
        client.invoke_endpoint_with_response_stream(
            EndpointName=ENDPOINT, Body=json.dumps({**GENERATE, "partial_images": 1}), ContentType="application/json"
        )
    error = raised.value.response
    assert error["Error"]["Code"] == "ModelError" and error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 400
    assert json.loads(error["OriginalMessage"])["error"]["param"] == "partial_images"


def test_a_failure_during_the_run_is_the_error_line_in_a_payload_part(runtime):
    client, _ = runtime(FakeModels(run_error=RuntimeError("boom")))
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=json.dumps({**GENERATE, "stream": True}), ContentType="application/json"
    )
    events = [json.loads(event["PayloadPart"]["Bytes"]) for event in response["Body"]]
    assert events[-1]["type"] == "error" and events[-1]["status"] == 500
    assert events[-1]["error"]["code"] == "internal_error"


def test_a_broken_stream_ends_with_model_stream_error(runtime, monkeypatch):
    async def broken(self):
        yield b'{"type":"progress","step":0,"steps":0}\n'
        raise ConnectionResetError("the container went away")

    monkeypatch.setattr(Stream, "lines", broken)
    client, _ = runtime(FakeModels())
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=json.dumps({**GENERATE, "stream": True}), ContentType="application/json"
    )
    received = []
    with pytest.raises(EventStreamError) as raised:
        for event in response["Body"]:
            received.append(event)
    assert [list(event) for event in received] == [["PayloadPart"]]
    assert raised.value.response["Error"]["Code"] == "ModelStreamError"


def test_an_unstreamed_request_comes_back_whole_in_one_payload_part(runtime):
    client, _ = runtime(FakeModels())
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=json.dumps(GENERATE), ContentType="application/json"
    )
    assert response["ContentType"] == "application/json"
    [event] = list(response["Body"])
    assert len(json.loads(event["PayloadPart"]["Bytes"])["images"]) == 1


def test_invoke_endpoint_buffers_a_streamed_answer(runtime):
    client, _ = runtime(FakeModels())
    response = client.invoke_endpoint(
        EndpointName=ENDPOINT,
        Body=json.dumps({**GENERATE, "stream": True, "partial_images": 1}),
        ContentType="application/json",
    )
    assert response["ContentType"] == "application/x-ndjson"
    events = [json.loads(line) for line in response["Body"].read().splitlines()]
    assert [event["type"] for event in events] == ["progress", "partial", "result"]


def test_an_invalid_endpoint_name_is_a_validation_error(runtime):
    client, _ = runtime(FakeModels())
    with pytest.raises(ClientError) as raised:
        client.invoke_endpoint_with_response_stream(
            EndpointName="-bad-", Body=json.dumps(GENERATE), ContentType="application/json"
        )
    assert raised.value.response["Error"]["Code"] == "ValidationError"
