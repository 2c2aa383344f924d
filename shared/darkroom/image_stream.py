"""One streamed image request (``stream: true``): its work runs in a thread, its events leave as they are made.

The route starts the work (the same use case as a non-streamed request) and waits until the model is about to run.
Anything that fails before that (validation, admission's 429, an input that does not decode) is raised in the
route, an ordinary HTTP error: nothing has been sent yet. From then on the transport sends the head and
:meth:`StreamRun.events` yields the work's progress as it comes: partial images, heartbeats while nothing else
happens, then the result or the failure. The use case refunds on failure and bills on success exactly as it does for
a non-streamed request, so usage stays exactly-once.

A client that goes away closes the events iterator (``GeneratorExit``): the partial sink's ``stopped`` is set,
so a backend that can stop its upstream does, and the iterator waits for the work to end before it returns, so
that its refund or billing is done inside the invocation (Lambda may freeze the environment once the answer ends).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from PIL import Image

from darkroom.content_credentials import Provenance
from darkroom.inference import PartialSink, TextSink
from darkroom.observability import logger

# A comment line every this many seconds while nothing else is sent: API Gateway closes a streamed answer after
# 5 minutes idle (regional endpoints; 30 s edge-optimized), and proxies in between often after 60 s:
# https://docs.aws.amazon.com/apigateway/latest/developerguide/response-transfer-mode.html
HEARTBEAT_SECONDS = 15.0
HEARTBEAT = b": keep-alive\n\n"  # an SSE comment: every SSE parser skips it (the SDK's SSEDecoder included)
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Partial:
    index: int
    image: Image.Image


@dataclass(frozen=True)
class _Delta:
    text: str


@dataclass(frozen=True)
class _Ended(Generic[_T]):
    result: _T | None
    error: BaseException | None


class StreamRun(Generic[_T]):
    """The work of one streamed request, run in a thread; see the module docstring."""

    def __init__(self, partial_images: int) -> None:
        self._queue: queue.Queue[_Partial | _Delta | _Ended[_T]] = queue.Queue()
        self.sink = PartialSink(count=partial_images, deliver=self._deliver)
        # A text answer's pieces as the model writes them; the same stop as the partial images'.
        self.text = TextSink(deliver=lambda delta: self._queue.put(_Delta(delta)), stopped=self.sink.stopped)
        self._inference = threading.Event()  # set when the model is about to run, or the work ended first
        self._began = False
        self.provenance = Provenance("unknown")  # what the partials' Content Credentials say: set as the model starts
        self._thread: threading.Thread | None = None

    def _deliver(self, index: int, image: Image.Image) -> None:
        if 0 <= index < self.sink.count:  # a backend's extra partials are dropped, never sent
            self._queue.put(_Partial(index, image))

    def inference_started(self, provenance: Provenance | None = None) -> None:
        """Called by the use case just before it calls the backend: from here on, failures are streamed.
        ``provenance``: what an image's partials say in their Content Credentials."""
        self.provenance = provenance or self.provenance
        self._began = True
        self._inference.set()

    def start(self, work: Callable[[], _T]) -> None:
        """Run ``work`` in a thread; return once its inference starts, or raise what it raised before that."""
        context = contextvars.copy_context()  # the request's logger keys and correlation id

        def run() -> None:
            try:
                self._queue.put(_Ended(context.run(work), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the stream, which renders or re-raises it
                self._queue.put(_Ended(None, exc))
            finally:
                self._inference.set()

        self._thread = threading.Thread(target=run, name="darkroom-stream", daemon=True)
        self._thread.start()
        self._inference.wait()
        if not self._began:  # the work ended before the model ran: answer as a non-streamed request would
            ended = self._queue.get()
            assert isinstance(ended, _Ended)
            self._thread.join()
            if ended.error is not None:
                raise ended.error
            self._queue.put(ended)

    def events(
        self,
        partial: Callable[[int, Image.Image], bytes],
        done: Callable[[_T], bytes],
        failed: Callable[[BaseException], bytes],
        delta: Callable[[str], bytes] | None = None,
    ) -> Iterator[bytes]:
        """Each event's bytes as it happens: ``partial(index, image)``, ``delta(text)``, then ``done(result)`` or
        ``failed(error)``; first, a comment, so that the client has its first byte as soon as the model starts."""
        try:
            yield HEARTBEAT
            while True:
                try:
                    item = self._queue.get(timeout=HEARTBEAT_SECONDS)
                except queue.Empty:
                    yield HEARTBEAT
                    continue
                if isinstance(item, _Partial):
                    yield partial(item.index, item.image)
                elif isinstance(item, _Delta):
                    if delta is not None and item.text:
                        yield delta(item.text)
                elif item.error is not None:
                    yield failed(item.error)
                    return
                else:
                    yield done(item.result)  # type: ignore[arg-type]
                    return
        finally:
            self.stop()

    def stop(self) -> None:
        """Tell the backend the client is gone, and wait for the work (its refund or billing) to end."""
        self.sink.stopped.set()
        if self._thread is not None and self._thread.is_alive():
            logger.info("stream closed before its work ended; waiting for the work to finish")
            self._thread.join()
