"""Streamed Bedrock text (``ConverseStream``): a real boto3 ``bedrock-runtime`` client against a loopback server that
answers in AWS's event-stream framing (``sagemaker_stream_stubs``), each event's payload the JSON of its
``ConverseStreamOutput`` member (botocore 1.44.8 ``data/bedrock-runtime/2023-09-30/service-2.json``)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sagemaker_stream_stubs import frame, stream_endpoint

from backend_stubs import ATTEMPTS, no_wait, stubbed
from darkroom.api.errors import ClientGone, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.inference import TextJob, TextSink
from darkroom.inference import bedrock_stream as stream
from darkroom.inference.bedrock import BedrockBackend
from darkroom.inference.resilience import CircuitBreaker

MODEL_ID = "amazon.nova-lite-v1:0"
PATH = "/model/amazon.nova-lite-v1%3A0/converse-stream"  # the model id, URL-encoded


def event(kind: str, document: dict) -> bytes:
    headers = {":message-type": "event", ":event-type": kind, ":content-type": "application/json"}
    return frame(headers, json.dumps(document).encode())


def exception_event(kind: str, message: str = "stream failed") -> bytes:
    """An exception event: its payload is the exception's shape (``message``, lower case, as Bedrock's)."""
    headers = {":message-type": "exception", ":exception-type": kind, ":content-type": "application/json"}
    return frame(headers, json.dumps({"message": message}).encode())


def delta(text: str, index: int = 0) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}, "p": "abcd"})


START = [event("messageStart", {"role": "assistant", "p": "ab"})]  # a text block has no contentBlockStart


def stop(reason: str = "end_turn") -> list[bytes]:
    return [
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("messageStop", {"stopReason": reason}),
        event(
            "metadata", {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {"latencyMs": 9}}
        ),
    ]


class Sink:
    """A TextSink that records its pieces (and can ask to stop after ``stop_after`` of them)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.got: list[str] = []
        self.stop_after = stop_after
        self.sink = TextSink(deliver=self.deliver, stopped=threading.Event())

    def deliver(self, piece: str) -> None:
        self.got.append(piece)
        if self.stop_after is not None and len(self.got) >= self.stop_after:
            self.sink.stopped.set()


def entry() -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "bedrock-text",
            "backend": "bedrock",
            "endpoint": {"model_id": MODEL_ID, "family": "converse", "timeout_seconds": 20},
            "capabilities": ["text"],
        }
    )


def job(sink: Sink | None, deadline: float = 10) -> TextJob:
    return TextJob(
        instructions="Be brief.",
        messages=[("user", "hello")],
        images=[],
        deadline_seconds=deadline,
        deltas=sink.sink if sink else None,
    )


@pytest.fixture
def endpoint():
    with stream_endpoint("bedrock-runtime") as fake:
        yield fake


def backend_for(fake, threshold: int = 100) -> BedrockBackend:
    return BedrockBackend(
        entry(), client=fake.client(), breaker=CircuitBreaker(threshold=threshold), resilience=no_wait()
    )


# -- success -----------------------------------------------------------------------------------------


def test_deltas_arrive_in_order_and_the_text_is_their_join(endpoint):
    endpoint.script = [*START, delta("Hel"), delta(""), delta("lo, "), delta("world."), *stop()]
    endpoint.chunk = 37  # event frames cut across HTTP chunks
    sink = Sink()
    backend = backend_for(endpoint)
    assert backend.respond(entry(), job(sink)) == "Hello, world."
    assert sink.got == ["Hel", "lo, ", "world."]  # an empty delta delivers nothing
    ((path, body),) = endpoint.requests
    assert path == PATH
    assert body["messages"] == [{"role": "user", "content": [{"text": "hello"}]}]
    assert body["system"] == [{"text": "Be brief."}]
    assert backend.breaker.state == "closed"


def test_events_without_text_deliver_nothing(endpoint):
    reasoning = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}})
    endpoint.script = [*START, reasoning, delta("Yes."), *stop("max_tokens")]
    sink = Sink()
    assert backend_for(endpoint).respond(entry(), job(sink)) == "Yes."
    assert sink.got == ["Yes."]


def test_a_job_without_a_sink_still_uses_converse(endpoint):
    backend = backend_for(endpoint)
    with stubbed(backend.client) as stubber:
        reply = {
            "output": {"message": {"role": "assistant", "content": [{"text": "whole"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
            "metrics": {"latencyMs": 1},
        }
        stubber.add_response("converse", reply)
        assert backend.respond(entry(), job(None)) == "whole"
    assert endpoint.requests == []


# -- what ends the answer badly ----------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["content_filtered", "guardrail_intervened"])
def test_a_filtered_stop_is_400_content_policy(endpoint, reason):
    endpoint.script = [*START, delta("Once"), *stop(reason)]
    backend = backend_for(endpoint, threshold=1)
    with pytest.raises(InvalidRequest) as caught:
        backend.respond(entry(), job(Sink()))
    assert caught.value.status == 400 and caught.value.code == "content_policy_violation"
    assert backend.breaker.state == "closed"


@pytest.mark.parametrize("kind", ["modelStreamErrorException", "internalServerException"])
def test_an_exception_event_after_a_delta_is_502_and_not_retried(endpoint, kind):
    endpoint.script = [*START, delta("Hel"), exception_event(kind, "SECRET")]
    sink = Sink()
    backend = backend_for(endpoint, threshold=1)
    with pytest.raises(UpstreamError) as caught:
        backend.respond(entry(), job(sink))
    assert caught.value.status == 502 and caught.value.code == "upstream_error"
    assert "SECRET" not in caught.value.message
    assert sink.got == ["Hel"] and len(endpoint.requests) == 1
    assert backend.breaker.state == "open"  # the model's failure


def test_throttling_after_a_delta_is_final(endpoint):
    endpoint.script = [*START, delta("Hel"), exception_event("throttlingException")]
    sink = Sink()
    with pytest.raises(ServiceUnavailable):
        backend_for(endpoint).respond(entry(), job(sink))
    assert sink.got == ["Hel"] and len(endpoint.requests) == 1  # another attempt would send "Hel" again


@pytest.mark.parametrize("kind", ["throttlingException", "serviceUnavailableException"])
def test_throttling_before_any_delta_is_retried(endpoint, kind):
    good = [*START, delta("ok"), *stop()]
    endpoint.script = [*START, exception_event(kind), lambda: setattr(endpoint, "script", good)]
    sink = Sink()
    assert backend_for(endpoint).respond(entry(), job(sink)) == "ok"
    assert sink.got == ["ok"] and len(endpoint.requests) == 2


def test_throttling_every_time_is_503_with_retry_after(endpoint):
    endpoint.script = [exception_event("throttlingException")]
    with pytest.raises(ServiceUnavailable) as caught:
        backend_for(endpoint).respond(entry(), job(Sink()))
    assert caught.value.status == 503 and int(caught.value.headers["retry-after"]) >= 1
    assert len(endpoint.requests) == ATTEMPTS


def test_a_throttled_call_before_the_stream_is_mapped_as_converse(endpoint):
    endpoint.error = (429, {"x-amzn-ErrorType": "ThrottlingException"}, {"message": "slow down"})
    with pytest.raises(ServiceUnavailable):
        backend_for(endpoint).respond(entry(), job(Sink()))
    assert len(endpoint.requests) == ATTEMPTS


@pytest.mark.parametrize(
    ("message", "raised", "code"),
    [
        ("This request has been blocked by our content filters.", InvalidRequest, "content_policy_violation"),
        ("Malformed input request", UpstreamError, "upstream_error"),
    ],
)
def test_a_validation_event_maps_as_converses(endpoint, message, raised, code):
    endpoint.script = [*START, exception_event("validationException", message)]
    with pytest.raises(raised) as caught:
        backend_for(endpoint).respond(entry(), job(Sink()))
    assert caught.value.code == code and len(endpoint.requests) == 1


def test_an_event_of_the_wrong_shape_is_502_invalid(endpoint):
    endpoint.script = [*START, event("contentBlockStart", {"contentBlockIndex": 0, "start": {}}), *stop()]
    backend = backend_for(endpoint, threshold=1)
    with pytest.raises(UpstreamError) as caught:
        backend.respond(entry(), job(Sink()))
    assert caught.value.code == "upstream_invalid_response" and backend.breaker.state == "open"


def test_a_stream_without_message_stop_is_502_invalid(endpoint):
    endpoint.script = [*START, delta("Hel"), event("contentBlockStop", {"contentBlockIndex": 0})]
    sink = Sink()
    backend = backend_for(endpoint, threshold=1)
    with pytest.raises(UpstreamError) as caught:
        backend.respond(entry(), job(sink))
    assert caught.value.status == 502 and caught.value.code == "upstream_invalid_response"
    assert backend.breaker.state == "open"


def test_an_answer_without_any_text_is_502_invalid(endpoint):
    endpoint.script = [*START, *stop()]
    with pytest.raises(UpstreamError) as caught:
        backend_for(endpoint).respond(entry(), job(Sink()))
    assert caught.value.code == "upstream_invalid_response"


def test_text_past_the_cap_is_502_invalid(endpoint, monkeypatch):
    monkeypatch.setattr(stream, "MAX_TEXT_BYTES", 5)
    endpoint.script = [*START, delta("Hel"), delta("lo!"), *stop()]
    sink = Sink()
    with pytest.raises(UpstreamError) as caught:
        backend_for(endpoint).respond(entry(), job(sink))
    assert caught.value.code == "upstream_invalid_response" and sink.got == ["Hel"]


# -- the client going away ---------------------------------------------------------------------------


def test_a_client_gone_stops_the_stream(endpoint):
    endpoint.script = [*START, delta("Hel"), 0.2, delta("lo"), *stop()]
    sink = Sink(stop_after=1)
    backend = backend_for(endpoint, threshold=1)
    with pytest.raises(ClientGone) as caught:
        backend.respond(entry(), job(sink))
    assert caught.value.code == "client_disconnected"
    assert sink.got == ["Hel"]
    assert backend.breaker.state == "closed"  # not the model's health


def test_a_stop_before_the_call_sends_nothing(endpoint):
    sink = Sink()
    sink.sink.stopped.set()
    with pytest.raises(ClientGone):
        backend_for(endpoint).respond(entry(), job(sink))
    assert endpoint.requests == []


def test_a_stalled_stream_ends_by_the_deadline(endpoint):
    endpoint.script = [*START, delta("Hel"), 5.0, delta("lo"), *stop()]
    sink = Sink()
    backend = backend_for(endpoint, threshold=1)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        backend.respond(entry(), job(sink, deadline=1.5))
    assert time.monotonic() - started <= 2.0
    assert sink.got == ["Hel"] and len(endpoint.requests) == 1  # not tried again once a piece was sent
    assert backend.breaker.state == "open"
