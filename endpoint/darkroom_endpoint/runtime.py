"""A LOCAL emulation of the SageMaker Runtime service front, for darkroom's local stack and tests ONLY.

On AWS, SageMaker provides this front and runs the model container behind it: nothing here runs on a SageMaker
endpoint. Locally, ``create_app(..., emulate_runtime=True)`` (``serve --emulate-runtime``) mounts these routes on
the model server itself, so darkroom's production ``sagemaker`` adapter reaches it through botocore's real
``sagemaker-runtime`` client, with only the endpoint URL overridden
(``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:PORT``). Every request goes through the same path as
``POST /invocations`` (:meth:`ModelServer.answer`): the same validation, and the same bounded GPU queue.

What is emulated follows botocore's service model (``botocore/data/sagemaker-runtime/2017-05-13/service-2.json``):

* ``InvokeEndpoint``: ``POST /endpoints/{EndpointName}/invocations``; the body (``BodyBlob``, at most 6,291,456
  bytes) goes to the container with the ``Content-Type`` and ``Accept`` headers (``ContentType``, ``Accept``).
  A 2xx from the container is returned with its content type; any other status is a ``ModelError``: HTTP 424
  (``ModelError.error.httpStatusCode``), ``x-amzn-ErrorType: ModelError`` (the header botocore's rest-json parser
  reads the error code from), and a JSON body with the shape's members ``Message``, ``OriginalStatusCode``,
  ``OriginalMessage`` (the container's body text) and ``LogStreamArn``; ``Message`` values are cut at the shape's
  2048 characters. The ``Message`` wording follows what SageMaker is seen to send ("Received client error (400)
  from primary with message ...", e.g. github.com/aws/amazon-sagemaker-examples/issues/4324 and #785).
* ``InvokeEndpointWithResponseStream``: ``POST /endpoints/{EndpointName}/invocations-response-stream``; the same
  request as InvokeEndpoint, the answer an event stream of ``PayloadPart`` events
  (:mod:`darkroom_endpoint.runtime_stream`).
* ``InvokeEndpointAsync``: ``POST /endpoints/{EndpointName}/async-invocations``; the request is read from the
  headers ``X-Amzn-SageMaker-InputLocation`` (an ``s3://`` URI), ``-Inference-Id`` (1-64 printable characters;
  a UUID when absent), ``-RequestTTLSeconds`` (60-21600, default 21600), ``-InvocationTimeoutSeconds`` (1-3600,
  default 900), ``-Content-Type`` and ``-Accept``, or the request body itself (``Body``, at most 128,000 bytes,
  exclusive with ``InputLocation``). The answer is 202 (the operation's ``responseCode``) with ``InferenceId`` in
  the JSON body and ``X-Amzn-SageMaker-OutputLocation`` / ``-FailureLocation`` headers. In the background the input
  is read from S3 (boto3: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` point it at the local S3), run, and the
  container's answer is written to ``<output path><inference id>.out``, or, when the container answered an error
  (or the input could not be read, the request expired in the queue, or the invocation timed out), its error body
  to ``<failure path><inference id>-error.out``. The paths come from ``DARKROOM_ENDPOINT_ASYNC_OUTPUT_PATH`` and
  ``DARKROOM_ENDPOINT_ASYNC_FAILURE_PATH``, as ``S3OutputPath`` / ``S3FailurePath`` of an endpoint config's
  ``AsyncInferenceConfig``. The service model says SageMaker names the output "based on the inference ID" (the
  ``Filename`` member); the ``.out`` / ``-error.out`` suffixes are what darkroom's docs expect, not checked
  against a live endpoint. Async requests reach the container one at a time, like an endpoint with
  ``MaxConcurrentInvocationsPerInstance`` 1, and wait while the container answers 429 or 503, until their TTL.

Not emulated: request signatures are not checked, CustomAttributes and the Target*/Session headers are ignored,
``S3OutputPathExtension``, ``Filename`` and ``https://`` input locations are refused, and no SNS notification is
sent. Every endpoint name reaches the one local container.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from darkroom_endpoint.contract import ContractError
from darkroom_endpoint.runtime_stream import stream_response
from darkroom_endpoint.server import ModelServer, Reply, error_reply, read_body

logger = logging.getLogger("darkroom_endpoint.runtime")

OUTPUT_PATH_ENV = "DARKROOM_ENDPOINT_ASYNC_OUTPUT_PATH"
FAILURE_PATH_ENV = "DARKROOM_ENDPOINT_ASYNC_FAILURE_PATH"
# Limits from the service model's shapes.
MAX_REALTIME_BODY = 6_291_456  # BodyBlob.max
MAX_INLINE_ASYNC_BODY = 128_000  # AsyncBodyBlob.max
MAX_MESSAGE = 2048  # Message.max (Message, OriginalMessage)
MAX_ENDPOINT_NAME = 63  # EndpointName.max
ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*\Z")  # EndpointName.pattern
INFERENCE_ID = re.compile(r"\S[\x20-\x7e]*\Z")  # InferenceId.pattern \A\S[\p{Print}]*\z, 1-64 characters
TTL_SECONDS = (60, 21_600, 21_600)  # RequestTTLSecondsHeader min, max; the documented default (6 hours)
TIMEOUT_SECONDS = (1, 3_600, 900)  # InvocationTimeoutSecondsHeader min, max; the documented default (15 minutes)
VARIANT = "AllTraffic"  # the variant name SageMaker's own tools give a single-variant endpoint
LOCAL_ACCOUNT = "000000000000"
BUSY_RETRY_SECONDS = 0.25
_HEADER = "x-amzn-sagemaker-"


@dataclass(frozen=True)
class _AsyncJob:
    inference_id: str
    content_type: str | None
    input_location: tuple[str, str] | None  # (bucket, key); None with an inline body
    body: bytes | None
    output: tuple[str, str]
    failure: tuple[str, str] | None
    expires_at: float  # monotonic: RequestTTLSeconds after submission
    timeout: int  # InvocationTimeoutSeconds


class _ServiceError(Exception):
    """An error of the service itself (not of the container), answered in rest-json's error shape."""

    def __init__(self, message: str, code: str = "ValidationError", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status

    def response(self) -> Response:
        return JSONResponse(
            {"message": self.message},
            status_code=self.status,
            headers={"x-amzn-ErrorType": self.code, "x-amzn-RequestId": str(uuid.uuid4())},
        )


class RuntimeEmulator:
    """``InvokeEndpoint`` and ``InvokeEndpointAsync`` in front of one :class:`ModelServer` (see the module doc)."""

    def __init__(self, server: ModelServer, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.server = server
        # A malformed path is the operator's mistake: refused at start, not at the first request.
        self.output_path = _s3_path(env.get(OUTPUT_PATH_ENV), OUTPUT_PATH_ENV)
        self.failure_path = _s3_path(env.get(FAILURE_PATH_ENV), FAILURE_PATH_ENV)
        self.region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._s3: Any = None
        self._s3_lock = threading.Lock()
        self._jobs: set[asyncio.Task] = set()
        self._one_at_a_time = asyncio.Semaphore(1)

    def routes(self) -> list[Route]:
        """The two operations' routes (``requestUri`` in the service model)."""
        return [
            Route("/endpoints/{name}/invocations", self.invoke_endpoint, methods=["POST"]),
            Route("/endpoints/{name}/async-invocations", self.invoke_endpoint_async, methods=["POST"]),
            Route(
                "/endpoints/{name}/invocations-response-stream",
                self.invoke_endpoint_with_response_stream,
                methods=["POST"],
            ),
        ]

    async def stop(self) -> None:
        """Cancel the async jobs still queued or running (the app is shutting down)."""
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    # -- InvokeEndpoint -------------------------------------------------------------------------

    async def invoke_endpoint(self, request: Request) -> Response:
        """The container's answer, or a ``ModelError`` carrying it."""
        try:
            name = _endpoint_name(request)
            body = await _read(request, MAX_REALTIME_BODY, "InvokeEndpoint")
        except _ServiceError as exc:
            return exc.response()
        reply = await self.server.answer(body, request.headers.get("content-type"))
        if reply.status < 400:
            return Response(
                reply.body,
                status_code=200,
                media_type=reply.content_type,
                headers={"x-Amzn-Invoked-Production-Variant": VARIANT, "x-amzn-RequestId": str(uuid.uuid4())},
            )
        return self._model_error(name, reply)

    async def invoke_endpoint_with_response_stream(self, request: Request) -> Response:
        """The container's answer as ``PayloadPart`` events, or the same ``ModelError`` as InvokeEndpoint before it
        starts (:mod:`darkroom_endpoint.runtime_stream`)."""
        try:
            name = _endpoint_name(request)
            body = await _read(request, MAX_REALTIME_BODY, "InvokeEndpointWithResponseStream")
        except _ServiceError as exc:
            return exc.response()
        outcome = await self.server.answer_or_stream(body, request.headers.get("content-type"))
        if isinstance(outcome, Reply) and outcome.status >= 400:
            return self._model_error(name, outcome)
        headers = {"x-Amzn-Invoked-Production-Variant": VARIANT, "x-amzn-RequestId": str(uuid.uuid4())}
        return stream_response(outcome, headers)

    def _model_error(self, name: str, reply: Reply) -> Response:
        text = reply.body.decode("utf-8", "replace")
        kind = "client" if reply.status < 500 else "server"
        log_group = f"/aws/sagemaker/Endpoints/{name}"
        message = (
            f'Received {kind} error ({reply.status}) from primary with message "{text}". '
            f"See the log group {log_group} in account {LOCAL_ACCOUNT} for more information."
        )
        document = {
            "Message": message[:MAX_MESSAGE],
            "OriginalStatusCode": reply.status,
            "OriginalMessage": text[:MAX_MESSAGE],
            "LogStreamArn": f"arn:aws:logs:{self.region}:{LOCAL_ACCOUNT}:log-group:{log_group}",
        }
        return JSONResponse(
            document, status_code=424, headers={"x-amzn-ErrorType": "ModelError", "x-amzn-RequestId": str(uuid.uuid4())}
        )

    # -- InvokeEndpointAsync --------------------------------------------------------------------

    async def invoke_endpoint_async(self, request: Request) -> Response:
        """Queue the request; 202 with where its answer or failure will appear."""
        try:
            job = await self._job(request)
        except _ServiceError as exc:
            return exc.response()
        task = asyncio.get_running_loop().create_task(self._process(job))
        self._jobs.add(task)  # a reference, so the task is not collected; and stop() can cancel it
        task.add_done_callback(self._jobs.discard)
        headers = {f"{_HEADER}OutputLocation": _uri(job.output), "x-amzn-RequestId": str(uuid.uuid4())}
        if job.failure is not None:
            headers[f"{_HEADER}FailureLocation"] = _uri(job.failure)
        return JSONResponse({"InferenceId": job.inference_id}, status_code=202, headers=headers)

    async def _job(self, request: Request) -> _AsyncJob:
        _endpoint_name(request)
        headers = request.headers
        for unsupported in ("S3OutputPathExtension", "Filename"):
            if headers.get(_HEADER + unsupported.lower()):
                raise _ServiceError(f"{unsupported} is not emulated by the local SageMaker Runtime.")
        if self.output_path is None:
            raise _ServiceError(f"The endpoint is not configured for asynchronous inference ({OUTPUT_PATH_ENV}).")
        inference_id = headers.get(_HEADER + "inference-id") or str(uuid.uuid4())
        if len(inference_id) > 64 or not INFERENCE_ID.match(inference_id):
            raise _ServiceError("InferenceId must be 1 to 64 printable characters.")
        ttl = _seconds(headers, "requestttlseconds", "RequestTTLSeconds", TTL_SECONDS)
        timeout = _seconds(headers, "invocationtimeoutseconds", "InvocationTimeoutSeconds", TIMEOUT_SECONDS)
        location = headers.get(_HEADER + "inputlocation")
        body = await _read(request, MAX_INLINE_ASYNC_BODY, "InvokeEndpointAsync")
        if bool(location) == bool(body):
            raise _ServiceError("Provide exactly one of InputLocation and Body.")
        input_location = None
        if location:
            input_location = _s3_object(location)
            if input_location is None:
                raise _ServiceError("InputLocation must be an s3://bucket/key URI in the local emulator.")
        failure = None
        if self.failure_path is not None:
            failure = (self.failure_path[0], f"{self.failure_path[1]}{inference_id}-error.out")
        return _AsyncJob(
            inference_id=inference_id,
            content_type=headers.get(_HEADER + "content-type"),
            input_location=input_location,
            body=body or None,
            output=(self.output_path[0], f"{self.output_path[1]}{inference_id}.out"),
            failure=failure,
            expires_at=time.monotonic() + ttl,
            timeout=timeout,
        )

    async def _process(self, job: _AsyncJob) -> None:
        try:
            async with self._one_at_a_time:
                reply = await self._dispatch(job)
            await asyncio.to_thread(self._store, job, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a background job must not die silently
            logger.error("async inference %s failed in the emulator: %s", job.inference_id, type(exc).__name__)

    async def _dispatch(self, job: _AsyncJob) -> Reply:
        if time.monotonic() >= job.expires_at:
            return error_reply(408, "request_expired", "The request waited in the queue longer than its TTL.")
        body = job.body
        if body is None:
            body = await asyncio.to_thread(self._read_input, job)
            if body is None:
                return error_reply(400, "input_not_found", "The input object could not be read from S3.")
        while True:
            # SageMaker's own queue holds an async request while the container is busy or not yet healthy: wait
            # for room (quietly: each refused attempt would log a 429), then try; another request may win the slot.
            while not (self.server.has_room or self.server.failed) and time.monotonic() < job.expires_at:
                await asyncio.sleep(BUSY_RETRY_SECONDS)
            try:
                reply = await asyncio.wait_for(self.server.answer(body, job.content_type), job.timeout)
            except TimeoutError:
                return error_reply(408, "invocation_timeout", "The invocation took longer than its timeout.")
            if reply.status not in (429, 503) or self.server.failed or time.monotonic() >= job.expires_at:
                return reply
            await asyncio.sleep(BUSY_RETRY_SECONDS)

    # -- S3 (blocking; run in threads) ----------------------------------------------------------

    def _client(self) -> Any:
        with self._s3_lock:
            if self._s3 is None:
                # Imported here: boto3 is a local-only dependency (requirements-local.txt), not the container's.
                import boto3
                from botocore.config import Config

                self._s3 = boto3.session.Session().client(
                    "s3",
                    region_name=self.region,
                    config=Config(connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3}),
                )
            return self._s3

    def _read_input(self, job: _AsyncJob) -> bytes | None:
        bucket, key = job.input_location
        limit = self.server.settings.max_body_bytes
        try:
            stream = self._client().get_object(Bucket=bucket, Key=key)["Body"]
            try:
                return stream.read(limit + 1)  # one byte more than allowed: the container's 413 tells it apart
            finally:
                stream.close()
        except Exception as exc:  # noqa: BLE001 - any failure to read is the request's failure object
            logger.warning("async inference %s: input not readable (%s)", job.inference_id, _aws_code(exc))
            return None

    def _store(self, job: _AsyncJob, reply: Reply) -> None:
        location = job.output if reply.status < 400 else job.failure
        outcome = "output" if reply.status < 400 else "failure"
        if location is None:
            logger.warning(
                "async inference %s failed (status %d) and no failure path is configured",
                job.inference_id,
                reply.status,
            )
            return
        try:
            self._client().put_object(
                Bucket=location[0], Key=location[1], Body=reply.body, ContentType=reply.content_type
            )
        except Exception as exc:  # noqa: BLE001 - the answer is lost; say so, by type
            logger.error("async inference %s: could not write its %s (%s)", job.inference_id, outcome, _aws_code(exc))
            return
        logger.info("async inference %s: %s written (status %d)", job.inference_id, outcome, reply.status)


def _endpoint_name(request: Request) -> str:
    name = request.path_params["name"]
    if len(name) > MAX_ENDPOINT_NAME or not ENDPOINT_NAME.match(name):
        raise _ServiceError("EndpointName must match [a-zA-Z0-9](-*[a-zA-Z0-9])* and be at most 63 characters.")
    return name


async def _read(request: Request, limit: int, operation: str) -> bytes:
    try:
        return await read_body(request, limit)
    except ContractError as exc:
        if exc.status == 413:
            raise _ServiceError(f"The request body is larger than the {limit} bytes {operation} accepts.") from None
        raise _ServiceError(exc.message) from None


def _seconds(headers: Mapping[str, str], header: str, member: str, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    value = headers.get(_HEADER + header)
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise _ServiceError(f"{member} must be an integer from {low} to {high}.")
    return int(value)


def _s3_path(value: str | None, name: str) -> tuple[str, str] | None:
    """``s3://bucket/prefix`` -> (bucket, prefix ending in "/" unless empty); None when unset."""
    if not value:
        return None
    bucket, _, prefix = value.removeprefix("s3://").partition("/")
    if not value.startswith("s3://") or not bucket:
        raise ValueError(f"{name} must be an s3://bucket/prefix/ URI")
    return bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _s3_object(value: str) -> tuple[str, str] | None:
    bucket, _, key = value.removeprefix("s3://").partition("/")
    return (bucket, key) if value.startswith("s3://") and bucket and key else None


def _uri(location: tuple[str, str]) -> str:
    return f"s3://{location[0]}/{location[1]}"


def _aws_code(exc: Exception) -> str:
    """An AWS error's code (``NoSuchKey``), else the exception's type: never its message."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code)[:64] if code else type(exc).__name__
