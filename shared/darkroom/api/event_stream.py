"""How a route hands a server-sent event stream to whatever carries the function's answer.

A route that streams (``stream: true``) does all its checks and its admission inside the Powertools resolver, as
any route does, and then calls :func:`open_stream` with the stream's chunks, which are produced lazily: the work
happens while they are read.

* Under a streaming transport (Lambda Web Adapter in ``response_stream`` mode, :mod:`darkroom.api.lwa`, or the
  local stack's streaming routes) the transport wraps the handler call in :class:`StreamingTransport`. The route's
  ``Response`` is then only the head (status and headers); the transport sends it, then each chunk the moment it is
  made, and closes the iterator (``GeneratorExit`` in the producer) when the client goes away.
* Anywhere else (a buffered API Gateway integration, ``sam local invoke``, a test calling ``lambda_handler``) the
  chunks are drained into one body: the same bytes, all at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from aws_lambda_powertools.event_handler import Response

EVENT_STREAM = "text/event-stream; charset=utf-8"
_transport: ContextVar[StreamingTransport | None] = ContextVar("darkroom_streaming_transport", default=None)


class StreamingTransport:
    """Set while a streaming transport runs one handler call; ``stream`` is the opened stream, if any."""

    def __init__(self) -> None:
        self.stream: Iterator[bytes] | None = None
        self._token: object | None = None

    def __enter__(self) -> StreamingTransport:
        self._token = _transport.set(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        _transport.reset(self._token)  # type: ignore[arg-type]


def streaming() -> bool:
    """Whether this call's answer can be streamed (a transport is carrying it)."""
    return _transport.get() is not None


def open_stream(chunks: Iterator[bytes]) -> Response[Any]:
    """The route's answer for a stream of ``chunks``: streamed by the transport, or drained into one body."""
    transport = _transport.get()
    head = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold the events back
    if transport is None:
        return Response(200, EVENT_STREAM, b"".join(chunks).decode("utf-8"), head)
    transport.stream = _flushing_metrics(chunks)
    return Response(200, EVENT_STREAM, "", head)


def _flushing_metrics(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, then the metrics the work recorded after the handler returned (its own flush ran then)."""
    from darkroom.observability import metrics

    try:
        yield from chunks  # closing this generator closes ``chunks`` (PEP 380)
    finally:
        if metrics.metric_set:
            metrics.flush_metrics()
