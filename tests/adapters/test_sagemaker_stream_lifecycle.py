"""Streamed SageMaker calls (issue 18), how they end: errors in the stream, a client that goes away, the deadline.
A real boto3 client against the loopback ``sagemaker-runtime`` of ``sagemaker_stream_stubs``."""

from __future__ import annotations

import threading
import time

import pytest
from sagemaker_stream_stubs import (
    PROGRESS,
    Beats,
    Sink,
    backend_for,
    exception_event,
    gen_job,
    ndjson,
    partial,
    payload_part,
    result,
    stream_endpoint,
)

from darkroom.api.errors import ClientGone, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.inference import GenerateJob, PartialSink


@pytest.fixture
def endpoint():
    with stream_endpoint() as fake:
        yield fake


# -- errors inside the stream --------------------------------------------------------------------------


def test_a_model_stream_error_event_is_a_502_that_counts_against_the_endpoint(endpoint):
    endpoint.script = [payload_part(ndjson(partial(0))), exception_event("ModelStreamError", "SECRET", "StreamBroken")]
    sink = Sink()
    model, backend = backend_for(endpoint, threshold=1)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job(sink))
    assert caught.value.status == 502 and caught.value.code == "upstream_error"
    assert "SECRET" not in caught.value.message
    assert backend.breaker.state == "open" and len(sink.got) == 1


def test_an_internal_stream_failure_is_a_503_retried_only_before_any_partial(endpoint):
    endpoint.script = [exception_event("InternalStreamFailure")]
    model, backend = backend_for(endpoint)
    with pytest.raises(ServiceUnavailable) as caught:
        backend.generate(model, gen_job(Sink()))
    assert caught.value.headers["retry-after"]
    assert len(endpoint.requests) == backend.resilience.policy.max_attempts  # as InternalFailure is today

    endpoint.requests.clear()
    endpoint.script = [payload_part(ndjson(partial(0))), exception_event("InternalStreamFailure")]
    with pytest.raises(ServiceUnavailable):
        backend.generate(model, gen_job(Sink()))
    assert len(endpoint.requests) == 1  # a partial went out: another attempt would send it again


def test_a_model_error_before_the_stream_maps_as_invoke_endpoints(endpoint):
    original = '{"error": {"code": "content_policy_violation", "message": "SECRET"}}'
    endpoint.error = (
        424,
        {"x-amzn-ErrorType": "ModelError"},
        {"Message": "Received client error (400)", "OriginalStatusCode": 400, "OriginalMessage": original},
    )
    model, backend = backend_for(endpoint, threshold=1)
    with pytest.raises(InvalidRequest) as caught:
        backend.generate(model, gen_job(Sink()))
    assert caught.value.code == "content_policy_violation" and "SECRET" not in caught.value.message
    assert backend.breaker.state == "closed"


def test_a_connection_cut_mid_stream_is_a_502(endpoint):
    endpoint.script = [payload_part(ndjson(partial(0))), None]  # no closing chunk: the connection just ends
    model, backend = backend_for(endpoint, threshold=1)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job(Sink()))
    assert caught.value.status == 502
    assert backend.breaker.state == "open"


# -- the client goes away; the deadline ----------------------------------------------------------------


def test_a_stop_mid_stream_closes_the_stream_promptly(endpoint):
    endpoint.script = [payload_part(ndjson(partial(0))), Beats(interval=0.05, limit=10.0)]
    sink = Sink(stop_after=1)
    model, backend = backend_for(endpoint, threshold=1)
    started = time.monotonic()
    with pytest.raises(ClientGone) as caught:
        backend.generate(model, gen_job(sink))
    assert time.monotonic() - started < 2
    assert caught.value.code == "client_disconnected"
    assert endpoint.disconnected.wait(3), "the fake endpoint never saw the connection close"
    assert [got[0] for got in sink.got] == [0]
    assert backend.breaker.state == "closed"  # not the endpoint's health


def test_a_stop_before_the_call_sends_nothing(endpoint):
    sink = Sink()
    sink.sink.stopped.set()
    model, backend = backend_for(endpoint)
    with pytest.raises(ClientGone):
        backend.generate(model, gen_job(sink))
    assert endpoint.requests == []


def test_heartbeats_do_not_outlive_the_deadline(endpoint):
    endpoint.script = [Beats(interval=0.05, limit=10.0)]
    model, backend = backend_for(endpoint, threshold=1)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        backend.generate(model, gen_job(Sink(), deadline=1.5))
    assert time.monotonic() - started <= 1.7
    assert backend.breaker.state == "open"


def test_a_silent_stream_ends_at_the_deadline(endpoint):
    release = threading.Event()
    beat = payload_part(ndjson(PROGRESS))
    endpoint.script = [beat, 0.8, beat, 0.8, beat, lambda: release.wait(10)]  # then nothing, from 1.6 s on
    model, backend = backend_for(endpoint)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeout):  # each read may wait 1.0 s (the 2.0 s deadline less the connect second)
            backend.generate(model, gen_job(Sink(), deadline=2.0))
        assert time.monotonic() - started <= 2.25  # the read after 1.6 s waits what is left (0.4 s), not 1.0 s
    finally:
        release.set()


def test_a_stream_may_outlast_the_endpoints_invoke_endpoint_timeout(endpoint):
    endpoint.script = [
        payload_part(ndjson(partial(0))),
        Beats(interval=0.05, limit=1.5),
        payload_part(ndjson(result())),
    ]
    sink = Sink(count=1)
    model, backend = backend_for(endpoint, timeout_seconds=1)  # InvokeEndpoint's; the job's deadline bounds a stream
    (image,) = backend.generate(model, gen_job(sink, deadline=4.0))
    assert image.image.size == (64, 48) and len(sink.got) == 1


def test_a_frame_that_is_not_awss_framing_is_a_502(endpoint):
    framed = bytearray(payload_part(ndjson(result())))
    framed[-1] ^= 0xFF  # the message CRC no longer matches
    endpoint.script = [bytes(framed)]
    model, backend = backend_for(endpoint, threshold=1)
    with pytest.raises(UpstreamError) as caught:
        backend.generate(model, gen_job(Sink()))
    assert caught.value.code == "upstream_invalid_response" and backend.breaker.state == "open"


def test_a_sink_that_fails_is_not_the_endpoints_answer_and_the_stream_is_closed(endpoint):
    endpoint.script = [payload_part(ndjson(partial(0))), Beats(interval=0.05, limit=10.0)]

    def deliver(index, image):
        raise BrokenPipeError("the client's socket")  # the use case's own failure, not a broken upstream

    model, backend = backend_for(endpoint)
    sink = PartialSink(count=1, deliver=deliver)
    with pytest.raises(BrokenPipeError):
        backend.generate(model, GenerateJob("a cat", 64, 48, 1, "low", False, 10, partials=sink))
    assert endpoint.disconnected.wait(3)
