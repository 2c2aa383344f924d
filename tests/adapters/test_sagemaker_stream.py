"""Streamed SageMaker calls (issue 18), what the stream carries: a real boto3 client against a loopback
``sagemaker-runtime`` that answers ``InvokeEndpointWithResponseStream`` in AWS's event-stream framing
(``sagemaker_stream_stubs``)."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.response import StreamingBody
from PIL import Image
from sagemaker_stream_stubs import (
    COLOURS,
    ENDPOINT_NAME,
    PROGRESS,
    STREAM_PATH,
    Sink,
    backend_for,
    entry,
    exception_event,
    gen_job,
    ndjson,
    partial,
    payload_part,
    result,
    split_parts,
    stream_endpoint,
)

from backend_stubs import b64, png_of, stubbed
from darkroom.api.errors import InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.inference import EditJob
from darkroom.inference import sagemaker_stream as stream
from darkroom.inference.sagemaker import SageMakerBackend


@pytest.fixture
def endpoint():
    with stream_endpoint() as fake:
        yield fake


# -- the framing these tests send --------------------------------------------------------------------


def test_the_fakes_framing_is_awss_event_stream():
    buffer = EventStreamBuffer()
    buffer.add_data(
        payload_part(b'{"type":"progress"}\n') + exception_event("ModelStreamError", "boom", "StreamBroken")
    )
    first, second = list(buffer)
    assert first.headers[":event-type"] == "PayloadPart" and first.payload == b'{"type":"progress"}\n'
    assert second.headers[":message-type"] == "exception" and second.headers[":exception-type"] == "ModelStreamError"


# -- success -----------------------------------------------------------------------------------------


def test_partials_arrive_in_order_and_the_final_images_are_returned(endpoint):
    lines = ndjson(PROGRESS, partial(0), PROGRESS, partial(1), partial(2), PROGRESS, result(n=2))
    endpoint.script = split_parts(lines, 97)  # lines cut anywhere across PayloadParts
    endpoint.chunk = 61  # and event frames cut across HTTP chunks
    sink = Sink(count=3)
    model, backend = backend_for(endpoint)
    images = backend.generate(model, gen_job(sink, n=2))
    assert sink.got == [(0, (64, 48), COLOURS[0]), (1, (64, 48), COLOURS[1]), (2, (64, 48), COLOURS[2])]
    assert [i.image.size for i in images] == [(64, 48), (64, 48)]
    assert images[0].image.getpixel((0, 0)) == (0, 0, 200)
    ((path, body),) = endpoint.requests
    assert path == f"/endpoints/{ENDPOINT_NAME}{STREAM_PATH}"
    assert body["stream"] is True and body["partial_images"] == 3
    assert body["task"] == "generate" and body["num_images"] == 2 and body["prompt"] == "a lighthouse"
    assert backend.breaker.state == "closed"


def test_an_edit_streams_too_and_blank_and_crlf_lines_are_fine(endpoint):
    endpoint.script = [
        payload_part(b"\r\n" + ndjson(partial(0)).replace(b"\n", b"\r\n")),
        payload_part(ndjson(result())),
    ]
    sink = Sink(count=1)
    model, backend = backend_for(endpoint)
    job = EditJob(
        prompt="add a moon",
        images=[Image.new("RGB", (64, 48), (1, 2, 3))],
        mask=None,
        width=64,
        height=48,
        n=1,
        quality="low",
        transparent=False,
        input_fidelity="low",
        deadline_seconds=10,
        partials=sink.sink,
    )
    (image,) = backend.edit(model, job)
    assert sink.got == [(0, (64, 48), COLOURS[0])] and image.image.size == (64, 48)
    assert endpoint.requests[0][1]["task"] == "edit"


# -- the container's own error line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "raised", "code", "unhealthy"),
    [
        (400, {"code": "content_policy_violation", "message": "no"}, InvalidRequest, "content_policy_violation", False),
        (400, {"code": "bad", "message": "seed", "param": "seed"}, InvalidRequest, "invalid_value", False),
        (400, {"code": "bad", "message": "no"}, UpstreamError, "upstream_error", False),
        (500, {"code": "oom", "message": "CUDA"}, UpstreamError, "upstream_error", True),
        (0, {"code": "timeout", "message": "slow"}, UpstreamTimeout, "upstream_timeout", True),
    ],
)
def test_a_terminal_error_line_maps_as_invoke_endpoints_model_error(endpoint, status, error, raised, code, unhealthy):
    endpoint.script = [payload_part(ndjson(partial(0), {"type": "error", "status": status, "error": error}))]
    sink = Sink()
    model, backend = backend_for(endpoint, threshold=1)
    with pytest.raises(raised) as caught:
        backend.generate(model, gen_job(sink))
    assert caught.value.code == code
    assert caught.value.param == ("seed" if error.get("param") else None)
    assert backend.breaker.state == ("open" if unhealthy else "closed")
    assert len(endpoint.requests) == 1


def test_a_busy_error_line_after_a_partial_is_not_retried(endpoint):
    endpoint.script = [payload_part(ndjson(partial(0), {"type": "error", "status": 429, "error": {"code": "busy"}}))]
    sink = Sink()
    model, backend = backend_for(endpoint)
    with pytest.raises(ServiceUnavailable):
        backend.generate(model, gen_job(sink))
    assert len(endpoint.requests) == 1 and [got[0] for got in sink.got] == [0]  # partial 0 was not sent twice


# -- an invalid stream ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        ndjson(partial(0), partial(1)),  # the stream ends without a terminal line
        ndjson(partial(0, 32, 24), result()),  # a partial of another size
        ndjson({"type": "partial", "index": 0, "image": "not base64!"}, result()),
        ndjson({"type": "partial", "index": 0, "image": b64(b"GIF89a-not-really")}, result()),
        ndjson(partial(1), result()),  # out of order
        ndjson(partial(0), partial(0), result()),  # twice
        ndjson(partial(0), partial(1), {**partial(2), "index": 3}, result()),  # more than asked for
        b'{"type": "partial", "index": 0, "im\n' + ndjson(result()),  # not JSON
        b"[1, 2]\n" + ndjson(result()),  # not an object
        ndjson({"type": "surprise"}, result()),
        ndjson({"type": "result", "body": "images"}),
        ndjson({"type": "result", "body": {"images": []}}),  # not n images
        ndjson({"type": "error", "status": "500", "error": {}}),
        b"",
    ],
)
def test_an_invalid_stream_is_a_502_that_counts_against_the_endpoint(endpoint, lines):
    endpoint.script = [payload_part(lines)] if lines else []
    sink = Sink(count=3)
    model, backend = backend_for(endpoint, threshold=1)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job(sink))
    assert caught.value.status == 502 and caught.value.code == "upstream_invalid_response"
    assert backend.breaker.state == "open"


def test_a_line_over_the_cap_is_a_502(endpoint, monkeypatch):
    monkeypatch.setattr(stream, "MAX_LINE_BYTES", 2048)
    endpoint.script = split_parts(ndjson(PROGRESS) + b'{"type": "progress", "pad": "' + b"x" * 4096, 500)
    model, backend = backend_for(endpoint)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job(Sink()))
    assert caught.value.code == "upstream_invalid_response"


def test_a_stream_over_the_cap_is_a_502(endpoint, monkeypatch):
    monkeypatch.setattr(stream, "MAX_STREAM_BYTES", 4096)
    endpoint.script = [payload_part(ndjson(PROGRESS))] * 200
    model, backend = backend_for(endpoint)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job(Sink()))
    assert caught.value.code == "upstream_invalid_response"


# -- no sink, or a contract that cannot stream: InvokeEndpoint as before --------------------------------


@pytest.mark.parametrize(
    ("endpoint_fields", "with_sink"),
    [({}, False), ({"contract": "jumpstart-sd"}, True), ({"contract": "hf-diffusers"}, True)],
)
def test_without_a_streaming_sink_invoke_endpoint_is_called_as_before(endpoint_fields, with_sink):
    client = boto3.client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    model = entry(**endpoint_fields)
    contract = endpoint_fields.get("contract")
    image = b64(png_of(64, 48, (5, 5, 5)))
    answer = {"generated_images": [image]} if contract == "jumpstart-sd" else {"images": [image]}
    data = json.dumps(image if contract == "hf-diffusers" else answer).encode()
    sink = Sink()
    with stubbed(client) as stub:  # only invoke_endpoint is queued: a streamed call would fail here
        stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(data), len(data))})
        (got,) = SageMakerBackend(model, client=client).generate(model, gen_job(sink if with_sink else None))
    assert got.image.size == (64, 48) and sink.got == []
