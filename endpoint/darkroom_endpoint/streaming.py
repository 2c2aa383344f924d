"""Streamed answers (issue 18): ``"stream": true`` on ``generate``/``edit`` turns ``/invocations``' answer into
NDJSON sent while the pipeline runs, so darkroom (through SageMaker's ``InvokeEndpointWithResponseStream``, which
forwards a container's chunked answer as ``PayloadPart`` events) can pass partial images on as they are made.

The wire format, one compact JSON object and ``\\n`` a line, ``Content-Type: application/x-ndjson``:

* ``{"type":"progress","step":s,"steps":n}``: once at once, then at most once a second while the job waits or
  runs (a heartbeat: the API in front needs bytes at least every 30 s). ``steps`` is the planned count of denoising
  steps over all the job's pipeline calls (an edit's ``steps x strength``, as the pipeline rounds it, once known);
* ``{"type":"partial","index":k,"image":"<base64 PNG>"}`` for k = 0 .. partial_images-1, in order, during the run:
  the first image's latents at evenly spaced steps, decoded (:mod:`darkroom_endpoint.previews`);
* exactly one terminal line: ``{"type":"result","body":{...}}`` (the body the unstreamed answer would carry) or
  ``{"type":"error","status":...,"error":{"code","message","param"}}`` (the unstreamed answer's status and error).

Refusals before the job is queued (the contract, a task the model cannot make, 413, 429, 503) are the plain JSON
errors of an unstreamed request. When the client goes away, the job is cancelled: dropped if still queued, and
stopped at its next denoising step if running (:class:`StreamCancelled`), so the GPU worker takes the next job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from darkroom_endpoint.contract import ContractError
from darkroom_endpoint.replies import INTERNAL_CODE, INTERNAL_MESSAGE, b64png

logger = logging.getLogger("darkroom_endpoint")

NDJSON = "application/x-ndjson"
MAX_PARTIAL_IMAGES = 3  # OpenAI's partial_images: 0-3
HEARTBEAT_SECONDS = 1.0


class StreamCancelled(Exception):
    """The client of a streamed request went away: the pipeline stops at its next step."""


@dataclass(frozen=True)
class StreamOptions:
    """What a streamed request asked for."""

    partial_images: int = 0


def split_stream_options(document: object) -> tuple[object, StreamOptions | None]:
    """Take ``stream`` and ``partial_images`` out of a request body: (the rest, the options or None)."""
    if not isinstance(document, dict) or not ({"stream", "partial_images"} & set(document)):
        return document, None
    rest = dict(document)
    stream, partial_images = rest.pop("stream", None), rest.pop("partial_images", None)
    if rest.get("task") == "analyze":
        param = "stream" if "stream" in document else "partial_images"
        raise ContractError("'analyze' answers are not streamed.", param=param, code="invalid_value")
    if stream is not None and not isinstance(stream, bool):
        raise ContractError("'stream' must be true or false.", param="stream", code="invalid_value")
    if partial_images is not None and (
        isinstance(partial_images, bool)
        or not isinstance(partial_images, int)
        or not 0 <= partial_images <= MAX_PARTIAL_IMAGES
    ):
        raise ContractError(
            f"'partial_images' must be an integer from 0 to {MAX_PARTIAL_IMAGES}.",
            param="partial_images",
            code="invalid_value",
        )
    if not stream:
        if partial_images is not None:
            raise ContractError("'partial_images' needs 'stream': true.", param="partial_images", code="invalid_value")
        return rest, None
    return rest, StreamOptions(partial_images=partial_images or 0)


class StreamSink:
    """What the GPU thread reports to a streamed request (thread-safe), and how it learns the client left."""

    def __init__(self, options: StreamOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.partial_images = options.partial_images
        self.step, self.steps = 0, 0
        self._loop = loop
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancelled = threading.Event()

    # -- the GPU thread's side ------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """Whether the client went away (the job should stop)."""
        return self._cancelled.is_set()

    def progress(self, step: int, steps: int) -> None:
        """``step`` of ``steps`` denoising steps are done; raises :class:`StreamCancelled` once the client left."""
        self.step, self.steps = step, steps
        if self.cancelled:
            raise StreamCancelled()

    def partial(self, index: int, image: Image.Image) -> None:
        """Partial image ``index`` (0-based), full size."""
        self._put("partial", (index, image))

    # -- the event loop's side ------------------------------------------------------------------

    def _put(self, kind: str, value: Any) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))

    def cancel(self) -> None:
        self._cancelled.set()

    async def next_event(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            return None


Encode = Callable[[Any], bytes]  # the job's result -> the unstreamed answer's JSON body (may raise)
Finish = Callable[[int], None]  # called once with the terminal status (for the invocation's log line)


class Stream:
    """One streamed invocation: the job's future, its sink, and the NDJSON lines to send."""

    def __init__(self, future: Future, sink: StreamSink, encode: Encode, finish: Finish) -> None:
        self.future, self.sink = future, sink
        self._encode, self._finish = encode, finish
        self.finished = False  # the terminal line was made (or the client left)
        future.add_done_callback(lambda _: sink._put("done", None))

    def cancel(self) -> None:
        """The client went away: drop the job if queued, stop it at its next step if running."""
        self.sink.cancel()
        self.future.cancel()
        self._done(499)  # nginx's "client closed request": only for the log line

    def _done(self, status: int) -> None:
        if not self.finished:
            self.finished = True
            self._finish(status)

    async def lines(self) -> AsyncIterator[bytes]:
        """The NDJSON lines, the terminal one last; an unexpected failure here is an ``error`` line too."""
        try:
            yield self._progress()
            last = time.monotonic()
            while True:
                event = await self.sink.next_event(max(0.0, last + HEARTBEAT_SECONDS - time.monotonic()))
                if event is None:
                    yield self._progress()
                    last = time.monotonic()
                elif event[0] == "partial":
                    index, image = event[1]
                    encoded = await run_in_threadpool(b64png, image)
                    yield _line({"type": "partial", "index": index, "image": encoded})
                else:
                    break
            if self.future.cancelled():  # the server is shutting down (a client that left reads nothing)
                raise RuntimeError("the job was cancelled before it ran")
            body = await run_in_threadpool(self._encode, self.future.result())
            self._done(200)
            yield b'{"type":"result","body":' + body + b"}\n"
        except ContractError as exc:  # a refusal during the run (content policy): the unstreamed answer's error
            self._done(exc.status)
            yield _line({"type": "error", "status": exc.status, **exc.body()})
        except Exception as exc:  # noqa: BLE001 - any other failure is a 500 whose body says nothing
            logger.error("streamed invocation failed: %s", type(exc).__name__)
            self.sink.cancel()
            self._done(500)
            yield _line({"type": "error", "status": 500, **internal_error()})

    def _progress(self) -> bytes:
        return _line({"type": "progress", "step": self.sink.step, "steps": self.sink.steps})


class StreamResponse(StreamingResponse):
    """A streamed answer that cancels its job when it ends early (the client went away, or the server stops)."""

    def __init__(self, content: AsyncIterator[bytes], stream: Stream, media_type: str, **kwargs: Any) -> None:
        super().__init__(content, media_type=media_type, **kwargs)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.stream.finished:
                self.stream.cancel()


def internal_error() -> dict[str, Any]:
    """The body of the server's generic 500 (no detail: it is logged by type only)."""
    return ContractError(INTERNAL_MESSAGE, code=INTERNAL_CODE, status=500).body()


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"
