"""A streamed Converse call to Amazon Bedrock: a text model's answer in pieces, as the model writes them.

A :class:`~darkroom.inference.TextJob` that carries a :class:`~darkroom.inference.TextSink` (a ``stream: true``
request) on a ``bedrock`` text model is sent with ``bedrock-runtime:ConverseStream``
(``POST /model/{modelId}/converse-stream``, the same request as ``Converse``; it needs the
``bedrock:InvokeModelWithResponseStream`` IAM action,
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html). The answer is AWS's
event stream; botocore 1.44.8 (``data/bedrock-runtime/2023-09-30/service-2.json``, the ``ConverseStreamOutput``
union) parses each event into ``{member: {...}}``:

* ``messageStart``, ``contentBlockStart``, ``contentBlockStop``, ``metadata`` (usage, metrics) carry no text;
* ``contentBlockDelta``: ``{"contentBlockIndex": i, "delta": {"text": "..."}}``; each text that is not empty goes to
  ``sink.deliver`` at once, and the text returned is exactly those pieces joined. Other deltas (``reasoningContent``,
  ``toolUse``, ``citation``, ...) deliver nothing, as ``Converse``'s non-text blocks are dropped;
* ``messageStop``: ``{"stopReason": ...}`` ends the answer. ``content_filtered`` or ``guardrail_intervened`` is a 400
  ``content_policy_violation``, as a non-streamed answer with that ``stopReason``; an answer with no text delta at
  all is a 502 ``upstream_invalid_response``, as ``Converse`` content without a text block.

Errors inside the stream are exception events, raised while iterating as ``botocore.exceptions.EventStreamError``
whose ``Error.Code`` is the union member's name (``BaseEventStreamParser._do_error_parse``):

* ``throttlingException``, ``serviceUnavailableException`` -> 503 + ``retry-after``, as ``Converse``'s
  ``ThrottlingException`` / ``ServiceUnavailableException``;
* ``validationException`` -> as ``Converse``'s ``ValidationException`` (the content filters' words: 400
  ``content_policy_violation``; otherwise 502 ``upstream_error``);
* ``modelStreamErrorException``, ``internalServerException`` (and any other) -> 502 ``upstream_error``, unhealthy:
  the answer broke off mid-way.

An error before the stream starts (``ThrottlingException``, ``ModelErrorException``, ...) is mapped as ``Converse``'s.
A stream that ends without ``messageStop``, or whose text passes ``MAX_TEXT_BYTES``, is a 502
``upstream_invalid_response`` that counts against the model. A retryable failure is tried again only while nothing was
delivered: another attempt would send the first pieces again.

Reading follows :mod:`darkroom.inference.sagemaker_stream` (the other botocore event stream): the transport's failures
map as there, each socket read is tightened to what remains of the deadline after every event, the deadline and the
sink's ``stopped`` are checked between events (a client gone is :class:`ClientGone`, not the model's health), and the
event stream is closed on every way out (Bedrock sees the connection go).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EventStreamError

from darkroom.api.errors import UpstreamError
from darkroom.catalog import ModelEntry
from darkroom.inference import TextSink
from darkroom.inference.aws_runtime import (
    FAILED_MESSAGE,
    content_policy,
    error_code,
    error_message,
    invalid_response,
    transport_outcome,
)
from darkroom.inference.resilience import Deadline, Outcome
from darkroom.inference.sagemaker_stream import check_running, close_stream, limit_read, next_event
from darkroom.inference.stream_lines import MAX_TEXT_BYTES
from darkroom.observability import logger

OPERATION = "ConverseStream"
# The stop reasons that mean the model's filters or a guardrail blocked the answer (Converse's and ConverseStream's).
FILTERED_STOPS = frozenset({"content_filtered", "guardrail_intervened"})
# Exception events mapped as Converse's errors of the same name (the rest are the stream's own failure).
_AS_CONVERSE = {
    "throttlingException": "ThrottlingException",
    "serviceUnavailableException": "ServiceUnavailableException",
    "validationException": "ValidationException",
}

ClientErrorMap = Callable[[ModelEntry, ClientError], Outcome]


@dataclass
class ConverseStream:
    """One streamed Converse, as :func:`~darkroom.inference.aws_runtime.guarded`'s ``call`` (one attempt a call)."""

    client: Any
    model: ModelEntry
    request: Mapping[str, Any]
    sink: TextSink
    deadline: Deadline
    client_error: ClientErrorMap
    delivered: int = 0  # pieces handed to the sink, over every attempt

    def __call__(self) -> str:
        try:
            return self._attempt()
        except Outcome as outcome:
            if outcome.retryable and self.delivered:  # another attempt would deliver the first pieces again
                raise Outcome(outcome.error, unhealthy=outcome.unhealthy) from None
            raise

    def _attempt(self) -> str:
        self._check()
        try:
            response = self.client.converse_stream(**self.request)
        except ClientError as exc:  # before the stream: as Converse's
            raise self.client_error(self.model, exc) from None
        except BotoCoreError as exc:
            raise transport_outcome(exc) from None
        events = response.get("stream")
        try:
            return self._read(events)
        finally:
            close_stream(events)

    def _read(self, events: Any) -> str:
        pieces: list[str] = []
        size, texts = 0, 0
        iterator = iter(events)
        while (event := self._next(iterator)) is not None:
            self._check()
            if not isinstance(event, Mapping):
                raise Outcome(invalid_response(), unhealthy=True)
            if "messageStop" in event:
                return self._stop(event["messageStop"], pieces, texts)
            piece = _text(event.get("contentBlockDelta"))
            if piece is not None:
                texts += 1
            if piece:
                size += len(piece.encode("utf-8"))
                if size > MAX_TEXT_BYTES:
                    raise Outcome(invalid_response(), unhealthy=True)
                self.sink.deliver(piece)
                self.delivered += 1
                pieces.append(piece)
            limit_read(events, self.deadline.remaining())
        self._check()
        logger.error("bedrock stream ended without messageStop", extra={"model": self.model.id})
        raise Outcome(invalid_response(), unhealthy=True)

    def _stop(self, stop: object, pieces: list[str], texts: int) -> str:
        reason = stop.get("stopReason") if isinstance(stop, Mapping) else None
        if reason in FILTERED_STOPS:
            raise content_policy()
        if not isinstance(reason, str) or not texts:
            raise Outcome(invalid_response(), unhealthy=True)
        return "".join(pieces)

    def _next(self, iterator: Iterator[object]) -> object | None:
        return next_event(iterator, self._stream_error)

    def _check(self) -> None:
        check_running(self.sink.stopped, self.deadline, "bedrock", self.model.id)

    def _stream_error(self, exc: EventStreamError) -> Outcome:
        code = error_code(exc)
        if code in _AS_CONVERSE:
            answer: Any = {"Error": {"Code": _AS_CONVERSE[code], "Message": error_message(exc)}}
            return self.client_error(self.model, ClientError(answer, OPERATION))
        logger.error("bedrock stream failed", extra={"model": self.model.id, "code": code[:64]})
        return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=True)


def _text(delta_event: object) -> str | None:
    """The text of a ``contentBlockDelta`` event, None when it is not one or carries no text."""
    delta = delta_event.get("delta") if isinstance(delta_event, Mapping) else None
    text = delta.get("text") if isinstance(delta, Mapping) else None
    return text if isinstance(text, str) else None
