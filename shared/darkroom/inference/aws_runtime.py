"""What the AWS-hosted backends (SageMaker, Bedrock) share: one boto3 client per service and region; one
call path (a circuit breaker, and attempts with jittered retries that all fit inside the call's deadline);
reading, parsing and validating what the service sends back (images go through the intake like any
untrusted input); and the neutral errors clients see.

**Retries are darkroom's, not botocore's.** botocore's ``standard`` mode retries throttling, 5xx and
timeouts on its own, each attempt with the client's full ``read_timeout``; with ``max_attempts: 3`` (three
*retries*: four attempts, botocore.config.Config) one call could last four times the endpoint's timeout,
far past the request's deadline. The runtime clients make one attempt per call
(``retries={"total_max_attempts": 1}``: "a value of 1 indicates that no requests will be retried",
botocore.config.Config), and :func:`guarded` retries through :meth:`Resilience.retry`: an attempt starts
only while time remains, and its read timeout is what remains, less the connect timeout. The read timeout
is set per attempt in botocore's request context (``context["read_timeout"]``, read by
``URLLib3Session.send``; boto/botocore#3770, "Add support for per-API invocation read timeouts"), from a
``before-parameter-build`` handler; ``tests/unit/test_aws_deadline.py`` pins it against a real socket.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from PIL import Image, ImageOps

from darkroom import config
from darkroom.api.errors import ApiError, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.inference import GeneratedImage
from darkroom.inference.resilience import CircuitBreaker, Deadline, Resilience
from darkroom.intake import EDIT_FORMATS, IntakeLimits, decode_base64, read_header
from darkroom.observability import logger, upstream_call

# The answer as a whole, and each image in it (formats, bytes, pixels): an upstream is untrusted input.


MAX_RESPONSE_BYTES = 128 * 1024 * 1024
OUTPUT_LIMITS = IntakeLimits(
    max_images=10,
    max_image_bytes=32 * 1024 * 1024,
    max_total_bytes=MAX_RESPONSE_BYTES,
    max_pixels=40_000_000,
    max_side=12_000,
    formats=EDIT_FORMATS,
)

INVALID_RESPONSE = "The model's backend returned an invalid response."
UNAVAILABLE_MESSAGE = "The model's backend is temporarily unavailable. Retry later."
TIMEOUT_MESSAGE = "The model's backend did not answer in time."
REFUSED_MESSAGE = "The model's backend refused the request."
FAILED_MESSAGE = "The model's backend failed to process the request."
CONFIG_MESSAGE = "The model's backend is not configured correctly."
RETRY_AFTER_SECONDS = 2

# ---------------------------------------------------------------------------------------------------
# Helpers shared with darkroom.inference.bedrock


class Outcome(Exception):
    """An ``ApiError`` plus whether it says the endpoint is unhealthy (counts against the breaker) and whether
    another attempt may succeed (throttling, an endpoint briefly unavailable, no connection)."""

    def __init__(self, error: ApiError, *, unhealthy: bool, retryable: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.unhealthy = unhealthy
        self.retryable = retryable


def invalid_response() -> UpstreamError:
    return UpstreamError(INVALID_RESPONSE, code="upstream_invalid_response")


def unavailable(seconds: int = RETRY_AFTER_SECONDS) -> ServiceUnavailable:
    return ServiceUnavailable(UNAVAILABLE_MESSAGE, headers={"retry-after": str(seconds)})


def throttled() -> Outcome:
    """The endpoint is busy or briefly unavailable: a 503 with ``retry-after``, retried while time remains."""
    return Outcome(unavailable(), unhealthy=True, retryable=True)


# An attempt's connect timeout; its read timeout is the call's remaining time less this, so that an attempt
# that has to connect first still ends by the deadline.
CONNECT_SECONDS = 1.0
_RUNTIME_CONFIG = {"connect_timeout": CONNECT_SECONDS, "retries": {"mode": "standard", "total_max_attempts": 1}}
_attempt_read_timeout: ContextVar[float | None] = ContextVar("darkroom_attempt_read_timeout", default=None)

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def aws_client(service: str, *, region: str | None = None):
    """One boto3 client per (service, region) per container, built by :func:`config.client`, with botocore's
    retries off and each attempt's read timeout taken from :func:`guarded`'s deadline.

    ``config.client`` caches by its arguments, and two equal ``Config`` objects are different keys, so the
    client is kept here too: a backend built per request still reuses the container's connection pool."""
    key = (service, region)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            extra = Config(**_RUNTIME_CONFIG, **({"region_name": region} if region else {}))
            client = _clients[key] = config.client(service, extra)
            client.meta.events.register("before-parameter-build", _set_attempt_read_timeout)
        return client


def _set_attempt_read_timeout(context: dict | None = None, **_: Any) -> None:
    """botocore ``before-parameter-build`` handler: this attempt's read timeout into the request context."""
    seconds = _attempt_read_timeout.get()
    if seconds is not None and context is not None:
        context["read_timeout"] = seconds


def reset_clients() -> None:
    with _clients_lock:
        _clients.clear()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64png(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def read_body(body: Any) -> bytes:
    """A response ``Body`` (botocore ``StreamingBody`` or bytes), read with a cap."""
    try:
        data = body.read(MAX_RESPONSE_BYTES + 1) if hasattr(body, "read") else body
    except (BotoCoreError, OSError, ValueError):
        raise Outcome(invalid_response(), unhealthy=True) from None
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_RESPONSE_BYTES:
        raise Outcome(invalid_response(), unhealthy=True)
    return bytes(data)


def json_object(data: bytes) -> dict:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise Outcome(invalid_response(), unhealthy=True) from None
    if not isinstance(document, dict):
        raise Outcome(invalid_response(), unhealthy=True)
    return document


def decode_images(
    encoded: object, n: int, width: int, height: int, transparent: bool, param: str = "images"
) -> list[GeneratedImage]:
    """Exactly ``n`` base64 images -> validated ``GeneratedImage``s of ``width`` x ``height``; every header is
    read (and charged to the request's decode budget) before any image is decoded."""
    if not isinstance(encoded, list) or len(encoded) != n or not all(isinstance(item, str) for item in encoded):
        raise Outcome(invalid_response(), unhealthy=True)
    images = []
    try:
        headers = [
            read_header(
                decode_base64(item, param=f"{param}[{i}]", max_bytes=OUTPUT_LIMITS.max_image_bytes),
                param=f"{param}[{i}]",
                limits=OUTPUT_LIMITS,
            )
            for i, item in enumerate(encoded)
        ]
    except ApiError:
        raise Outcome(invalid_response(), unhealthy=True) from None
    for header in headers:
        try:
            image = header.decode().image
        except ApiError:
            raise Outcome(invalid_response(), unhealthy=True) from None
        if image.size != (width, height):  # the port's contract is exactly width x height: cover, then crop
            image = ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)
        if transparent and image.mode != "RGBA":
            image = image.convert("RGBA")
        images.append(GeneratedImage(image=image))
    return images


def transport_outcome(exc: BotoCoreError) -> Outcome:
    """botocore's own failures (no answer from AWS): timeouts are 504, a connection failure 503."""
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):  # another attempt only if time remains
        return Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True, retryable=True)
    if isinstance(exc, EndpointConnectionError):
        return Outcome(unavailable(), unhealthy=True, retryable=True)
    return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_unreachable"), unhealthy=True)


def guarded(
    breaker: CircuitBreaker,
    model_id: str,
    operation: str,
    call: Callable[[], Any],
    *,
    backend: str,
    deadline: Deadline | None = None,
    resilience: Resilience | None = None,
) -> Any:
    """Run ``call`` behind ``breaker``; ``Outcome``s become their ``ApiError`` (and breaker records).

    With a ``deadline``, ``call`` is one attempt: a retryable ``Outcome`` is tried again (``resilience``'s
    policy, jittered backoff) only while another attempt fits, and each attempt's read timeout ends by the
    deadline. Without one, ``call`` runs once as it is. Counts the call for ``backend`` (metrics
    ``UpstreamCalls``, and ``UpstreamErrors`` when it fails with a 5xx); retries are one call."""
    resilience = resilience or Resilience()
    if deadline is not None and deadline.remaining() <= CONNECT_SECONDS + resilience.policy.min_attempt_seconds:
        # No time to start an attempt: the request's budget is spent, which says nothing about the endpoint.
        logger.warning("upstream call not started: no time left", extra={"model": model_id, "operation": operation})
        raise UpstreamTimeout(TIMEOUT_MESSAGE)
    try:
        breaker.acquire()
    except ApiError:
        upstream_call(backend, "circuit_open")
        raise
    try:
        result = call() if deadline is None else _attempts(call, deadline, resilience)
    except Outcome as outcome:
        (breaker.failure if outcome.unhealthy else breaker.success)()
        record_outcome(backend, outcome.error)
        logger.warning(
            "upstream call failed",
            extra={
                "model": model_id,
                "operation": operation,
                "code": outcome.error.code,
                "status": outcome.error.status,
            },
        )
        raise outcome.error from None
    except ApiError:
        breaker.success()  # refused before or without a call (a request the model cannot serve)
        raise
    except BaseException:
        breaker.failure()
        upstream_call(backend, "internal")
        raise
    breaker.success()
    upstream_call(backend)
    return result


def _attempts(call: Callable[[], Any], deadline: Deadline, resilience: Resilience) -> Any:
    def attempt(remaining: float) -> Any:
        token = _attempt_read_timeout.set(max(remaining - CONNECT_SECONDS, 0.01))
        try:
            return call()
        finally:
            _attempt_read_timeout.reset(token)

    return resilience.retry(
        deadline, attempt, reserve=CONNECT_SECONDS, retryable=lambda exc: isinstance(exc, Outcome) and exc.retryable
    )


def record_outcome(backend: str, error: ApiError) -> None:
    """Count a call that ended in ``error``: an upstream error when the client gets a 5xx for it."""
    upstream_call(backend, error.code if error.status >= 500 else None)


def error_code(exc: ClientError) -> str:
    error = exc.response.get("Error") if isinstance(exc.response, Mapping) else None
    code = error.get("Code") if isinstance(error, Mapping) else None
    return code if isinstance(code, str) else ""


def error_message(exc: ClientError) -> str:
    error = exc.response.get("Error") if isinstance(exc.response, Mapping) else None
    message = error.get("Message") if isinstance(error, Mapping) else None
    return message if isinstance(message, str) else ""


# ---------------------------------------------------------------------------------------------------


class AwsBackend:
    """A backend whose model is reached through one AWS runtime client (built lazily, once)."""

    SERVICE = ""

    def __init__(
        self,
        model: ModelEntry,
        client=None,
        *,
        breaker: CircuitBreaker | None = None,
        resilience: Resilience | None = None,
    ) -> None:
        self.model = model
        self._client = client
        self.breaker = breaker or CircuitBreaker()
        self.resilience = resilience or Resilience()

    @property
    def client(self):
        if self._client is None:
            self._client = aws_client(self.SERVICE, region=self.model.endpoint.region)
        return self._client

    def deadline(self, model: ModelEntry, deadline_seconds: float) -> Deadline:
        """One call's deadline: the job's remaining time, at most the endpoint's timeout."""
        return self.resilience.deadline(min(deadline_seconds, model.endpoint.timeout_seconds))
