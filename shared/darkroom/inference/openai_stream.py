"""A streamed chat completion from an OpenAI-compatible upstream: the text's pieces as the model writes them.

A :class:`~darkroom.inference.TextJob` that carries a :class:`~darkroom.inference.TextSink` (a ``stream: true``
request) is sent to ``POST {base_url}/chat/completions`` with ``"stream": true`` and nothing else changed. The answer
is server-sent events (openai-python, ``src/openai/types/chat/completion_create_params.py``, ``stream``: "streamed to
the client as it is generated using server-sent events"), each ``data`` a ``chat.completion.chunk`` whose
``choices[0].delta.content`` is the next piece (``types/chat/chat_completion_chunk.py``, ``ChoiceDelta.content``).
Read as openai-python reads it (``src/openai/_streaming.py``: ``SSEDecoder``, per the WHATWG event-stream
interpretation, https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation;
``Stream.__stream__``: the stream ends at ``data: [DONE]``, a ``data`` object with an ``error`` is the upstream's
failure), with darkroom's guarantees:

* every piece that is not empty goes to ``sink.deliver`` as soon as its event is complete; the text returned is
  exactly the pieces joined. Chunks without choices (a usage chunk), without ``content`` (the role, a
  ``finish_reason``, reasoning fields) deliver nothing;
* caps: the stream's bytes (``MAX_STREAM_BYTES``, the non-streamed answer's cap), one line or one event's data
  (``MAX_LINE_BYTES``), the text (``MAX_TEXT_BYTES``); past one, a 502 ``upstream_invalid_response``;
* an answer that is not a stream: a status other than 2xx is read whole and mapped exactly as a non-streamed
  answer's (retries of 429/5xx included); a 2xx ``application/json`` answer (a server that ignores ``stream``) is the
  non-streamed answer, read and checked as such, its text sent whole by the caller;
* ``data: {"error": ...}`` -> 502 ``upstream_error``; a line that is not UTF-8, data that is not a JSON object, a
  chunk of the wrong shape, or a stream that ends without ``[DONE]`` -> 502 ``upstream_invalid_response``: both
  count against the endpoint;
* a retryable failure (a read timeout, a retryable status) is tried again only while nothing was delivered: another
  attempt would send the first pieces again;
* the deadline and the sink's ``stopped`` are checked after every read; and while a read waits (a model that thinks
  before it writes), a watcher thread shuts the connection's socket down the moment the client goes away or the
  deadline passes, so the read ends at once (the socket is ``response.extensions["network_stream"]``'s, which
  httpx's default transport exposes: https://www.python-httpx.org/advanced/extensions/,
  https://www.encode.io/httpcore/extensions/; without it, only the checks between reads). A client gone is
  :class:`ClientGone`, not the endpoint's ill health. The response is closed on every way out; one not read to
  its end is never pooled (httpcore closes a connection whose exchange did not finish).

Library: httpx-sse (the parser openai-python's started as) reads ``response.iter_text()`` itself and buffers a line
until its newline without bound, so the caps above could not hold around it; the part of it needed here is
:class:`~darkroom.inference.stream_lines.Lines` (shared with the SageMaker stream) and :class:`Events`.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from darkroom.api.errors import ClientGone, UpstreamError
from darkroom.inference import TextSink
from darkroom.inference.openai_images import MAX_RESPONSE_BYTES
from darkroom.inference.openai_images import invalid as _invalid
from darkroom.inference.resilience import Deadline, Outcome, Reply
from darkroom.inference.stream_lines import MAX_TEXT_BYTES, Lines
from darkroom.observability import logger

MAX_STREAM_BYTES = MAX_RESPONSE_BYTES
# One chunk is a token or a few; a server that does not really stream may send the whole answer in one.
MAX_LINE_BYTES = 8 * 1024 * 1024
WATCH_POLL_SECONDS = 0.25  # how soon the watcher notices the read ended (a stop or the deadline wake it at once)
FAILED_MESSAGE = "The model's backend failed while answering."

T = TypeVar("T")


class DeadlineReached(httpx.ReadTimeout):
    """The body was still arriving when the call's deadline passed (a slow drip)."""


class Events:
    """The WHATWG event-stream interpretation, for what a chat stream uses: each event's ``data`` lines joined."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._size = 0

    def line(self, raw: bytes) -> str | None:
        """The data of the event ``raw`` (one line) completes, or None."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid() from None
        if not line:  # dispatch; an event without data is none (the spec's "data buffer is empty")
            data, self._data, self._size = self._data, [], 0
            return "\n".join(data) if data else None
        name, _, value = line.partition(":")
        if name == "data":  # comments (":..."), event, id, retry and unknown fields carry nothing here
            value = value[1:] if value.startswith(" ") else value
            self._size += len(raw)
            if self._size > MAX_LINE_BYTES:
                raise _invalid()
            self._data.append(value)
        return None


class _Watch:
    """Shuts the connection's socket down when the client goes away or the deadline passes while the stream is
    read, which ends a read that is waiting at once; :meth:`finish` (under the same lock) before the response is
    closed, so a socket handed back to the pool is never touched."""

    def __init__(self, response: httpx.Response, stopped: threading.Event, deadline: Deadline) -> None:
        stream = response.extensions.get("network_stream")
        self._socket: Any = stream.get_extra_info("socket") if stream is not None else None
        self._stopped = stopped
        self._deadline = deadline
        self._lock = threading.Lock()
        self._done = False
        if isinstance(self._socket, socket.socket):
            threading.Thread(target=self._run, name="darkroom-openai-stream-watch", daemon=True).start()

    def _run(self) -> None:
        while True:
            fired = self._stopped.wait(min(WATCH_POLL_SECONDS, self._deadline.remaining()))
            with self._lock:
                if self._done:
                    return
                if fired or self._deadline.remaining() <= 0:
                    try:  # socket.socket's own shutdown: an SSLSocket's would also drop its TLS object mid-read
                        socket.socket.shutdown(self._socket, socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return

    def finish(self) -> None:
        with self._lock:
            self._done = True


class TextStream:
    """One streamed chat completion, over every attempt; :meth:`send` is one attempt (``http_reply``'s ``send``)."""

    def __init__(
        self,
        sink: TextSink,
        deadline: Deadline,
        model_id: str,
        open_response: Callable[[float], httpx.Response],
        read_reply: Callable[[httpx.Response], Reply],
    ) -> None:
        self.sink = sink
        self.deadline = deadline
        self.model_id = model_id
        self._open = open_response
        self._read_reply = read_reply
        self.delivered = 0  # pieces handed to the sink, over every attempt
        self.text: str | None = None  # the streamed text; None while none was read (or the answer was not a stream)

    def guarded(self, attempt: Callable[[float], T]) -> Callable[[float], T]:
        """``attempt``, whose retryable failures are final once a piece was delivered."""

        def run(remaining: float) -> T:
            try:
                return attempt(remaining)
            except Outcome as outcome:
                if outcome.retryable and self.delivered:
                    raise Outcome(outcome.error, unhealthy=outcome.unhealthy) from None
                raise

        return run

    def send(self, remaining: float) -> Reply:
        self._check()
        response = self._open(remaining)
        try:
            media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if not 200 <= response.status_code < 300 or media_type == "application/json":
                return self._read_reply(response)
            watch = _Watch(response, self.sink.stopped, self.deadline)
            try:
                self.text = self._read(response)
            finally:
                watch.finish()
            return Reply(status=response.status_code, headers=response.headers, body=b"")
        finally:
            response.close()

    def _read(self, response: httpx.Response) -> str:
        lines, events, size = Lines(MAX_LINE_BYTES, MAX_STREAM_BYTES, _invalid), Events(), 0
        pieces: list[str] = []
        chunks = response.iter_bytes()  # decoded (darkroom asks for identity); each as it arrives
        while (chunk := self._next(chunks)) is not None:
            self._check()
            for line in lines.feed(chunk):
                data = events.line(line)
                if data is None:
                    continue
                if data.strip() == "[DONE]":
                    return "".join(pieces)
                piece = _piece(data)
                if piece:
                    size += len(piece.encode("utf-8"))
                    if size > MAX_TEXT_BYTES:
                        raise _invalid()
                    self._check()
                    self.sink.deliver(piece)
                    self.delivered += 1
                    pieces.append(piece)
        self._check()
        logger.error("openai stream ended without [DONE]", extra={"model": self.model_id})
        raise _invalid()

    def _next(self, chunks: Iterator[bytes]) -> bytes | None:
        """The next chunk, None at the end; a read the watcher ended is the client's going or the deadline."""
        try:
            chunk: bytes | None = next(chunks, None)
            return chunk
        except httpx.HTTPError:
            self._check()
            raise

    def _check(self) -> None:
        """Between reads: the client still there, time still left."""
        if self.sink.stopped.is_set():
            logger.info("openai stream abandoned: the client went away", extra={"model": self.model_id})
            raise Outcome(ClientGone(), unhealthy=False)
        if self.deadline.remaining() <= 0:
            raise DeadlineReached("deadline")


def _piece(data: str) -> str:
    """The text of one ``chat.completion.chunk`` (``choices[0].delta.content``), "" when it has none."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise _invalid() from None
    if not isinstance(chunk, dict):
        raise _invalid()
    if chunk.get("error"):  # as openai-python's Stream: the upstream failed mid-answer
        logger.error("openai stream answered an error")
        raise Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=True)
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise _invalid()
    if not choices:  # a usage chunk
        return ""
    choice = choices[0]
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        raise _invalid()
    content = delta.get("content")
    if isinstance(content, list):  # content parts, as some servers send in a whole message (``_text``)
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        content = "".join(t for t in texts if isinstance(t, str))
    if content is not None and not isinstance(content, str):
        raise _invalid()
    return content or ""
