"""The model server's HTTP side: SageMaker's hosting contract (``GET /ping``, ``POST /invocations``) on Starlette,
served by uvicorn (``python -m darkroom_endpoint serve``).

* Models load, then warm up, on the GPU worker thread started with the app: ``/ping`` is 503 until both are done.
  A failed load is logged (its type) and keeps ``/ping`` at 503: SageMaker never routes traffic to the instance.
* ``/invocations`` takes darkroom's JSON contract (:mod:`darkroom_endpoint.contract`). One job runs on the GPU at
  a time, at most ``settings.queue_size`` wait, and one more is a 429 with ``Retry-After`` at once: a burst goes
  back to darkroom (a 503 with ``retry-after`` for its client) instead of piling up to SageMaker's 60 s timeout.
* ``"stream": true`` (generate and edit) answers NDJSON while the job runs: progress, partial images, then the
  result or the error (:mod:`darkroom_endpoint.streaming`); a refusal before the job is queued is plain JSON.
* Every refusal is ``{"error": {"code", "message", "param"}}``. Nothing the client sent is echoed or logged: a
  request's log line holds its task, sizes, status and duration, and an exception is logged by type only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from darkroom_endpoint.contract import AnalyzeTask, ContractError, ImageTask, parse_task
from darkroom_endpoint.gpu_worker import GpuWorker
from darkroom_endpoint.replies import (
    INTERNAL_CODE,
    INTERNAL_MESSAGE,
    JSON,
    Reply,
    b64png,
    decode_json,
    error_reply,
    json_reply,
    read_body,
)
from darkroom_endpoint.settings import Settings
from darkroom_endpoint.streaming import NDJSON, Stream, StreamOptions, StreamResponse, StreamSink, split_stream_options

logger = logging.getLogger("darkroom_endpoint")

# Retry-After (seconds): about one job's duration, a moving average, clamped; a guess before the first job.
FIRST_RETRY_AFTER, MAX_RETRY_AFTER = 5.0, 60

Loader = Callable[[Settings], Any]  # -> loading.ModelSet


class InvalidModelOutput(Exception):
    """The ModelSet broke its promise (image count, size or type): a bug, answered as a 500."""


class ModelServer:
    """The models, their readiness, and the bounded queue in front of the single GPU worker thread."""

    def __init__(self, settings: Settings, load: Loader | None = None) -> None:
        self.settings = settings
        self._load = load
        self.models: Any = None  # set once loaded and warmed up: the only readiness signal
        self.failed = False  # loading failed: /ping stays 503 for good
        self._gpu: GpuWorker | None = None  # started with the app (lifespan), not when the app is built
        self._lock = threading.Lock()
        self._admitted = 0  # the running job + those waiting (and those being decoded for the GPU)
        self._seconds_per_job = FIRST_RETRY_AFTER

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Load (and warm up) in the background: ``/ping`` stays responsive, and 503, meanwhile. One thread does
        all the model work, loading and warm-up included, so per-thread CUDA state (streams, captured graphs) is
        the same for warm-up and for every job."""
        self._gpu = GpuWorker()
        self._gpu.submit(self._load_models)

    def close(self) -> None:
        """Drop queued jobs; a running one cannot be interrupted, and the worker thread dies with the process."""
        if self._gpu is not None:
            self._gpu.close()

    def _load_models(self) -> None:
        started = time.monotonic()
        try:
            load = self._load or _default_loader()
            models = load(self.settings)
            if self.settings.warm_up:
                models.warm_up()
        except Exception as exc:  # noqa: BLE001 - any failure leaves /ping at 503; only the type is logged
            self.failed = True
            logger.error("model loading failed: %s; /ping stays 503", type(exc).__name__)
            return
        self.models = models
        logger.info(
            "models ready in %.1f s (warm-up %s)",
            time.monotonic() - started,
            "done" if self.settings.warm_up else "skipped",
        )

    @property
    def ready(self) -> bool:
        """Whether the models are loaded and warmed up."""
        return self.models is not None

    @property
    def pending(self) -> int:
        """Requests admitted and not yet finished on the GPU: the running one plus those waiting."""
        return self._admitted

    @property
    def has_room(self) -> bool:
        """Whether a request now would be admitted (ready, and the queue not full); it may change at once."""
        return self.ready and self._admitted <= self.settings.queue_size

    # -- the bounded queue ----------------------------------------------------------------------

    def _admit(self) -> bool:
        with self._lock:
            if self._admitted > self.settings.queue_size:  # one running + queue_size waiting
                return False
            self._admitted += 1
            return True

    def _release(self, *_: object) -> None:
        with self._lock:
            self._admitted -= 1

    def retry_after(self) -> str:
        """Seconds until a slot is likely free: about one job's duration (the running one ends first)."""
        return str(max(1, min(MAX_RETRY_AFTER, math.ceil(self._seconds_per_job))))

    # -- one invocation -------------------------------------------------------------------------

    def not_ready(self) -> Reply:
        """The 503 of ``/ping`` and of every invocation until the models are loaded and warmed up."""
        code, message = (
            ("model_load_failed", "The model server failed to load its models.")
            if self.failed
            else ("model_not_ready", "The model server is still loading its models.")
        )
        return error_reply(503, code, message, {"Retry-After": str(int(FIRST_RETRY_AFTER))})

    def refuse_early(self, content_type: str | None) -> Reply | None:
        """The refusals that need no body: not ready (503) and not JSON (415)."""
        if not self.ready:
            return self.not_ready()
        if (content_type or "").split(";")[0].strip().lower() != JSON:
            return error_reply(415, "unsupported_media_type", "The request body must be application/json.")
        return None

    def _refuse_body(self, body: bytes, content_type: str | None) -> Reply | None:
        """Not ready, not JSON, too large, or no room in the queue; else None, and the request is admitted."""
        reply = self.refuse_early(content_type)
        if reply is None and len(body) > self.settings.max_body_bytes:
            reply = error_reply(
                413, "request_too_large", f"The request body is larger than {self.settings.max_body_bytes} bytes."
            )
        if reply is None and not self._admit():
            reply = error_reply(
                429, "too_many_requests", "The model server is busy; retry later.", {"Retry-After": self.retry_after()}
            )
        return reply

    async def answer(self, body: bytes, content_type: str | None) -> Reply:
        """The container's whole answer to one request body (InvokeEndpoint and async invocations in the runtime
        emulator): a streamed request's NDJSON lines are collected, as SageMaker's InvokeEndpoint would."""
        outcome = await self.answer_or_stream(body, content_type)
        if isinstance(outcome, Reply):
            return outcome
        return Reply(200, b"".join([line async for line in outcome.lines()]), content_type=NDJSON)

    async def answer_or_stream(self, body: bytes, content_type: str | None) -> Reply | Stream:
        """The container's answer to one request body, or, for ``"stream": true``, the :class:`Stream` of the job
        just queued (``/invocations`` and the runtime emulator both use it). Every refusal before the job is queued
        is a plain :class:`Reply`."""
        started = time.monotonic()
        task: ImageTask | AnalyzeTask | None = None
        reply = self._refuse_body(body, content_type)
        if reply is None:
            on_gpu = False
            try:
                # Decoding (JSON, base64, images) is CPU work off the event loop, and is done only for an admitted
                # request: at most queue_size + 1 bodies are ever decoded into images at once.
                task, options = await run_in_threadpool(_parse, body)
                await run_in_threadpool(self.models.check, task)
                if options is not None:
                    stream = self._stream(task, options, len(body), started)
                    on_gpu = True
                    return stream
                future = self._gpu.submit(self._run, task)
                on_gpu = True
                future.add_done_callback(self._release)  # also when this coroutine is cancelled meanwhile
                result = await asyncio.wrap_future(future)
                reply = await run_in_threadpool(_encode, task, result)
            except ContractError as exc:
                reply = json_reply(exc.status, exc.body())
            except Exception as exc:  # noqa: BLE001 - any other failure is a 500 whose body says nothing
                logger.error("invocation failed: %s", type(exc).__name__)
                reply = error_reply(500, INTERNAL_CODE, INTERNAL_MESSAGE)
            finally:
                if not on_gpu:
                    self._release()
        _log_invocation(task, len(body), reply.status, time.monotonic() - started)
        return reply

    def _stream(self, task: ImageTask | AnalyzeTask, options: StreamOptions, size: int, started: float) -> Stream:
        sink = StreamSink(options, asyncio.get_running_loop())
        planned = getattr(self.models, "planned_steps", None)  # optional in a ModelSet (tests' fakes lack it)
        sink.steps = planned(task) if callable(planned) else 0
        assert self._gpu is not None  # started with the app, before any request
        future = self._gpu.submit(self._run, task, sink)
        future.add_done_callback(self._release)  # also when the job is cancelled before it runs

        def finish(status: int) -> None:
            _log_invocation(task, size, status, time.monotonic() - started, streamed=True)

        return Stream(future, sink, lambda result: _encode(task, result).body, finish)

    def _run(self, task: ImageTask | AnalyzeTask, sink: StreamSink | None = None) -> Any:
        started = time.monotonic()
        try:
            return self.models.run(task) if sink is None else self.models.run(task, sink)
        finally:  # a moving average of job durations, for Retry-After
            self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.monotonic() - started)


def _parse(body: bytes) -> tuple[ImageTask | AnalyzeTask, StreamOptions | None]:
    document, options = split_stream_options(decode_json(body))
    return parse_task(document), options


def _encode(task: ImageTask | AnalyzeTask, result: object) -> Reply:
    if isinstance(task, AnalyzeTask):
        if not isinstance(result, str):
            raise InvalidModelOutput("analyze did not return text")
        return json_reply(200, {"text": result})
    if (
        not isinstance(result, list)
        or len(result) != task.num_images
        or not all(isinstance(image, Image.Image) and image.size == (task.width, task.height) for image in result)
    ):
        raise InvalidModelOutput("images of the wrong count, type or size")
    return json_reply(200, {"images": [b64png(image) for image in result]})


def _log_invocation(
    task: ImageTask | AnalyzeTask | None, size: int, status: int, seconds: float, *, streamed: bool = False
) -> None:
    what = "task=-"  # the body was refused before it was a task
    if isinstance(task, ImageTask):
        what = f"task={task.task} images={task.num_images} size={task.width}x{task.height}"
    elif isinstance(task, AnalyzeTask):
        what = f"task=analyze images={len(task.images)} messages={len(task.messages)}"
    level = logging.ERROR if status >= 500 else logging.INFO
    if streamed:
        what += " streamed"
    logger.log(level, "invocation %s body_bytes=%d status=%d seconds=%.3f", what, size, status, seconds)


def _default_loader() -> Loader:
    # Imported when loading starts, not with this module: loading pulls in torch and diffusers.
    from darkroom_endpoint.loading import load_models

    return load_models


class _Guard:
    """Outermost safety net: an exception that escapes a route is a generic 500, logged by type, never a
    traceback in the answer (Starlette's own error middleware would also print it to the log)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence answers, and logs the type only
            logger.error("unhandled error in %s: %s", scope.get("path"), type(exc).__name__)
            if not started:
                await error_reply(500, INTERNAL_CODE, INTERNAL_MESSAGE).response()(scope, receive, send)


def _http_error(request: Request, exc: HTTPException) -> Response:
    code, message = {
        404: ("not_found", "No such route: the model server answers GET /ping and POST /invocations."),
        405: ("method_not_allowed", "This method is not allowed on this route."),
    }.get(exc.status_code, ("invalid_request", "The request was refused."))
    return error_reply(exc.status_code, code, message, exc.headers).response()


def create_app(
    settings: Settings,
    load: Loader | None = None,
    *,
    emulate_runtime: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Starlette:
    """The ASGI app. ``load`` defaults to :func:`darkroom_endpoint.loading.load_models` (imported when loading
    starts). ``emulate_runtime`` also mounts the local SageMaker Runtime emulator (:mod:`darkroom_endpoint.runtime`,
    configured from ``environ``, default ``os.environ``): for the local stack and tests, never on SageMaker."""
    server = ModelServer(settings, load)
    emulator = None
    if emulate_runtime:
        from darkroom_endpoint.runtime import RuntimeEmulator

        emulator = RuntimeEmulator(server, environ)

    async def ping(request: Request) -> Response:
        if server.ready:
            return json_reply(200, {"status": "ready"}).response()
        return server.not_ready().response()

    async def invocations(request: Request) -> Response:
        content_type = request.headers.get("content-type")
        early = server.refuse_early(content_type)
        if early is not None:
            return early.response()
        try:
            body = await read_body(request, settings.max_body_bytes)
        except ContractError as exc:
            _log_invocation(None, 0, exc.status, 0.0)
            return json_reply(exc.status, exc.body()).response()
        outcome = await server.answer_or_stream(body, content_type)
        if isinstance(outcome, Stream):
            return StreamResponse(outcome.lines(), outcome, NDJSON)
        return outcome.response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        server.start()
        try:
            yield
        finally:
            if emulator is not None:
                await emulator.stop()
            server.close()

    routes = [Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])]
    if emulator is not None:
        routes += emulator.routes()
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.add_middleware(_Guard)
    app.state.server = server
    app.state.emulator = emulator
    return app
