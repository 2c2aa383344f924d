"""A streamed call to a SageMaker endpoint in darkroom's contract: the model's partial images as they are drawn.

A job that carries a :class:`~darkroom.inference.PartialSink` (a ``stream: true`` request that asked for
``partial_images``) on a real-time endpoint of the ``darkroom`` contract is sent with
``sagemaker-runtime:InvokeEndpointWithResponseStream`` (``POST /endpoints/{EndpointName}/invocations-response-stream``,
botocore 1.44.8 ``data/sagemaker-runtime/2017-05-13/service-2.json``; it needs the ``sagemaker:InvokeEndpoint`` IAM
action, https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointWithResponseStream.html).
The off-the-shelf contracts and asynchronous endpoints cannot stream: they ignore the sink.

Request: darkroom's usual body plus ``"stream": true, "partial_images": n``. Answer: SageMaker forwards the container's
chunked answer as ``PayloadPart`` events (``{"PayloadPart": {"Bytes": b"..."}}``) whose boundaries are arbitrary; the
bytes are NDJSON, one object a line:

* ``{"type": "partial", "index": k, "image": "<base64 PNG>"}``, ``k`` = 0, 1, ... in order, fewer than ``n``: read
  through the intake exactly as a final image (:func:`darkroom.inference.aws_runtime.decode_images`: byte caps,
  decode-work limits, the request's decode budget) and at exactly the job's ``width`` x ``height``, then
  ``sink.deliver(k, image)``;
* ``{"type": "progress", "step": s, "steps": n}``: a heartbeat, ignored (it keeps the socket's read alive);
* terminal ``{"type": "result", "body": {...}}``: ``body`` is the non-streamed answer, parsed by
  :func:`darkroom.inference.sagemaker_contracts.parse_answer` as InvokeEndpoint's is;
* terminal ``{"type": "error", "status": S, "error": {"code", "message", "param"}}``: mapped exactly as an
  InvokeEndpoint ``ModelError`` with ``OriginalStatusCode`` S and that body (the backend's ``_client_error``:
  ``content_policy_violation``, a pass-through ``param``, 429, 0 = timed out, ...).

Any other deviation (a line that is not a JSON object of those kinds, a partial out of order or invalid, a line over
``MAX_LINE_BYTES``, a stream over ``MAX_STREAM_BYTES``, a stream that ends without a terminal line) is a 502
``upstream_invalid_response``, like an invalid non-streamed answer, and counts against the endpoint.

Errors inside the stream reach botocore as exception events and are raised while iterating as
``botocore.exceptions.EventStreamError`` whose ``Error.Code`` is the event's ``:exception-type``
(``BaseEventStreamParser._do_error_parse``; only ``Message`` is kept, so a ``ModelStreamError``'s ``ErrorCode``,
``ModelInvocationTimeExceeded`` or ``StreamBroken``, cannot be told apart):

* ``ModelStreamError`` -> 502 ``upstream_error``, unhealthy (the model failed, as a 5xx ``ModelError``);
* ``InternalStreamFailure`` -> 503 + ``retry-after``, unhealthy, as InvokeEndpoint's ``InternalFailure`` is today.

A ``ModelError`` (or any other error) before the stream starts maps as InvokeEndpoint's. A retryable outcome is
tried again only while no partial has been delivered: another attempt would send partial 0 again.

The whole call, stream included, ends by the job's ``deadline_seconds``, not capped by the endpoint's
``timeout_seconds``: that is InvokeEndpoint's, whose containers have 60 seconds to answer (the InvokeEndpoint
reference, e.g. https://docs.aws.amazon.com/AWSJavaScriptSDK/v3/latest/client/sagemaker-runtime/command/InvokeEndpointCommand);
SageMaker ends a stream that runs too long itself (``ModelStreamError`` ``ModelInvocationTimeExceeded``, the
``ResponseStream`` reference). Each attempt's socket read timeout is what remains
(:func:`darkroom.inference.aws_runtime.guarded`) and is tightened to what remains after every event; the deadline
and the sink's ``stopped`` are checked between events. When the client has gone away (``stopped``), the event stream
is closed (``EventStream.close`` closes the HTTP response: SageMaker sees the connection go) and the call raises
:class:`ClientGone`, which is not the endpoint's health. The stream is closed on every other way out too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from botocore.eventstream import ParserError as FramingError
from botocore.exceptions import BotoCoreError, ClientError, EventStreamError
from botocore.parsers import ResponseParserError
from urllib3.exceptions import HTTPError as StreamBroken
from urllib3.exceptions import ReadTimeoutError as StreamReadTimeout

from darkroom.api.errors import ClientGone, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import SageMakerEndpoint
from darkroom.inference import GeneratedImage, PartialSink
from darkroom.inference.aws_runtime import (
    FAILED_MESSAGE,
    MAX_RESPONSE_BYTES,
    decode_images,
    error_code,
    invalid_response,
    json_object,
    throttled,
    transport_outcome,
)
from darkroom.inference.resilience import TIMEOUT_MESSAGE, Deadline, Outcome
from darkroom.inference.sagemaker_contracts import ContractCall, parse_answer
from darkroom.inference.stream_lines import Lines
from darkroom.observability import logger

OPERATION = "InvokeEndpointWithResponseStream"
# One line: the result line is the non-streamed answer (at most MAX_RESPONSE_BYTES, as read_body reads it) in a
# small wrapper; a partial is one image, far less.
MAX_LINE_BYTES = MAX_RESPONSE_BYTES + 64 * 1024
# The whole stream: the answer, up to three partials of at most its size, and heartbeats.
MAX_STREAM_BYTES = 2 * MAX_RESPONSE_BYTES

ClientErrorMap = Callable[[ModelEntry, ClientError], Outcome]


def streams(model: ModelEntry, sink: PartialSink | None) -> bool:
    """Whether a job with ``sink`` is streamed: only darkroom's contract on a real-time endpoint can."""
    endpoint = model.endpoint_as(SageMakerEndpoint)
    return sink is not None and endpoint.contract == "darkroom" and not endpoint.async_inference


class StreamCall:
    """One streamed call, as :func:`~darkroom.inference.aws_runtime.guarded`'s ``call`` (one attempt each time)."""

    def __init__(
        self,
        client: Any,
        model: ModelEntry,
        task: str,
        request: ContractCall,
        sink: PartialSink,
        deadline: Deadline,
        client_error: ClientErrorMap,
    ) -> None:
        self.client = client
        self.model = model
        self.task = task
        self.request = request
        self.sink = sink
        self.deadline = deadline
        self.client_error = client_error
        self.delivered = 0  # partials handed to the sink, over every attempt
        body = {**request.body, "stream": True, "partial_images": sink.count}
        self._payload = json.dumps(body, separators=(",", ":")).encode("utf-8")

    def __call__(self) -> list[GeneratedImage]:
        try:
            return self._attempt()
        except Outcome as outcome:
            if outcome.retryable and self.delivered:  # another attempt would deliver partial 0 again
                raise Outcome(outcome.error, unhealthy=outcome.unhealthy) from None
            raise

    def _attempt(self) -> list[GeneratedImage]:
        self._check()
        try:
            response = self.client.invoke_endpoint_with_response_stream(
                EndpointName=self.model.endpoint_as(SageMakerEndpoint).endpoint_name,
                Body=self._payload,
                ContentType=self.request.content_type,
                Accept=self.request.accept,
            )
        except ClientError as exc:  # ModelError, ValidationError, throttling...: as InvokeEndpoint's
            raise self.client_error(self.model, exc) from None
        except BotoCoreError as exc:
            raise transport_outcome(exc) from None
        events = response.get("Body")
        try:
            return self._read(events)
        finally:
            close_stream(events)

    def _read(self, events: Any) -> list[GeneratedImage]:
        lines = Lines(MAX_LINE_BYTES, MAX_STREAM_BYTES, lambda: Outcome(invalid_response(), unhealthy=True))
        iterator = iter(events)
        while (event := self._next(iterator)) is not None:
            self._check()
            answer = self._event(event, lines)
            if answer is not None:
                return answer
            limit_read(events, self.deadline.remaining())
        self._check()
        logger.error("sagemaker stream ended without an answer", extra={"model": self.model.id})
        raise Outcome(invalid_response(), unhealthy=True)

    def _next(self, iterator: Iterator[object]) -> object | None:
        return next_event(iterator, self._stream_error)

    def _check(self) -> None:
        check_running(self.sink.stopped, self.deadline, "sagemaker", self.model.id)

    def _event(self, event: object, lines: Lines) -> list[GeneratedImage] | None:
        part = event.get("PayloadPart") if isinstance(event, Mapping) else None
        data = part.get("Bytes") if isinstance(part, Mapping) else None
        if not isinstance(data, bytes):
            return None  # no other event kind is modelled; errors are raised by botocore
        for line in lines.feed(data):
            answer = self._line(line)
            if answer is not None:
                return answer
        return None

    def _line(self, line: bytes) -> list[GeneratedImage] | None:
        if not line.strip():
            return None
        document = json_object(line)
        kind = document.get("type")
        if kind == "progress":
            return None
        if kind == "partial":
            self._partial(document)
            return None
        if kind == "result":
            return self._result(document.get("body"))
        if kind == "error":
            raise self._error(document)
        raise Outcome(invalid_response(), unhealthy=True)

    def _partial(self, document: Mapping[str, Any]) -> None:
        index, encoded = document.get("index"), document.get("image")
        in_order = type(index) is int and index == self.delivered < self.sink.count
        if not in_order or not isinstance(encoded, str):
            raise Outcome(invalid_response(), unhealthy=True)
        expect = self.request.expect
        (partial,) = decode_images([encoded], 1, expect["width"], expect["height"], expect["transparent"], "partial")
        if partial.upstream is None:  # decode_images resized it (GeneratedImage.upstream): not the job's size
            raise Outcome(invalid_response(), unhealthy=True)
        self._check()
        self.sink.deliver(self.delivered, partial.image)
        self.delivered += 1

    def _result(self, body: object) -> list[GeneratedImage]:
        if not isinstance(body, dict):
            raise Outcome(invalid_response(), unhealthy=True)
        answer = parse_answer(self.task, self.request.expect, json.dumps(body).encode("utf-8"))
        if not isinstance(answer, list):
            raise Outcome(invalid_response(), unhealthy=True)
        return answer

    def _error(self, document: Mapping[str, Any]) -> Outcome:
        """The container's error line, as InvokeEndpoint's ``ModelError`` carrying the same status and body."""
        status, error = document.get("status"), document.get("error")
        if type(status) is not int or not isinstance(error, dict):
            return Outcome(invalid_response(), unhealthy=True)
        answer: Any = {
            "Error": {"Code": "ModelError", "Message": "The container answered an error."},
            "OriginalStatusCode": status,
            "OriginalMessage": json.dumps({"error": error}),
        }
        return self.client_error(self.model, ClientError(answer, OPERATION))

    def _stream_error(self, exc: EventStreamError) -> Outcome:
        code = error_code(exc)
        logger.error("sagemaker stream failed", extra={"model": self.model.id, "code": code[:64]})
        if code == "InternalStreamFailure":  # as InternalFailure: SageMaker's own, briefly
            return throttled()
        return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=True)  # ModelStreamError


def next_event(iterator: Iterator[object], stream_error: Callable[[EventStreamError], Outcome]) -> object | None:
    """The next event of an AWS response stream, None at the end; what goes wrong reading it is the stream's (never
    the sink's) fault. Shared by the SageMaker and Bedrock readers."""
    try:
        return next(iterator, None)
    except EventStreamError as exc:  # an exception event: each service maps its own
        raise stream_error(exc) from None
    except StreamReadTimeout:  # a read outlived the deadline: as botocore's ReadTimeoutError is today
        raise Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True, retryable=True) from None
    except (StreamBroken, OSError):  # the connection broke mid-answer
        raise Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_unreachable"), unhealthy=True) from None
    except (FramingError, ResponseParserError):  # not AWS's event-stream framing, or an event of the wrong shape
        raise Outcome(invalid_response(), unhealthy=True) from None
    except BotoCoreError as exc:
        raise transport_outcome(exc) from None


def check_running(stopped: threading.Event, deadline: Deadline, service: str, model_id: str) -> None:
    """Between events: the client still there (else :class:`ClientGone`), time still left (else a 504)."""
    if stopped.is_set():
        logger.info("response stream abandoned: the client went away", extra={"model": model_id, "backend": service})
        raise Outcome(ClientGone(), unhealthy=False)
    if deadline.remaining() <= 0:
        raise Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True)


def limit_read(events: Any, seconds: float) -> None:
    """Best effort: the next socket read waits at most ``seconds`` (what is left of the deadline), not the whole
    read timeout the attempt started with. The socket is urllib3's (``HTTPResponse.connection.sock``) under botocore's
    ``EventStream`` (its private ``_raw_stream``); when either is missing the attempt's read timeout still bounds it."""
    connection = getattr(getattr(events, "_raw_stream", None), "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(seconds, 0.01))
        except OSError:
            pass


def close_stream(events: Any) -> None:
    """Close the event stream, always: its HTTP connection is dropped, never pooled with a tightened timeout."""
    close = getattr(events, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing a broken stream must not hide why it ended
            logger.warning("a response stream did not close cleanly")
