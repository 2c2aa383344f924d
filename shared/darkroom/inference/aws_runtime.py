"""What the AWS-hosted backends (SageMaker, Bedrock) share: one boto3 client per service, region and
timeout; a circuit breaker around each call; reading, parsing and validating what the service sends
back (images go through the intake like any untrusted input); and the neutral errors clients see.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Mapping
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
from darkroom.inference.resilience import CircuitBreaker
from darkroom.intake import EDIT_FORMATS, IntakeLimits, decode_base64, read_header
from darkroom.observability import logger, upstream_call

# The answer as a whole, and each image in it (formats, bytes, pixels): an upstream is untrusted input.


MAX_RESPONSE_BYTES = 128 * 1024 * 1024
OUTPUT_LIMITS = IntakeLimits(max_images=10, max_image_bytes=32 * 1024 * 1024, max_total_bytes=MAX_RESPONSE_BYTES,
                             max_pixels=40_000_000, max_side=12_000, formats=EDIT_FORMATS)

INVALID_RESPONSE = "The model's backend returned an invalid response."
UNAVAILABLE_MESSAGE = "The model's backend is temporarily unavailable. Retry later."
TIMEOUT_MESSAGE = "The model's backend did not answer in time."
REFUSED_MESSAGE = "The model's backend refused the request."
FAILED_MESSAGE = "The model's backend failed to process the request."
CONFIG_MESSAGE = "The model's backend is not configured correctly."
RETRY_AFTER_SECONDS = 2

# ---------------------------------------------------------------------------------------------------
# Helpers shared with darkroom.inference.bedrock


class Outcome(Exception):  # noqa: N818 - a carrier, not an error type of its own
    """An ``ApiError`` plus whether it says the endpoint is unhealthy (counts against the breaker)."""

    def __init__(self, error: ApiError, *, unhealthy: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.unhealthy = unhealthy


def invalid_response() -> UpstreamError:
    return UpstreamError(INVALID_RESPONSE, code="upstream_invalid_response")


def unavailable(seconds: int = RETRY_AFTER_SECONDS) -> ServiceUnavailable:
    return ServiceUnavailable(UNAVAILABLE_MESSAGE, headers={"retry-after": str(seconds)})


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def aws_client(service: str, *, read_timeout: float, region: str | None = None):
    """One boto3 client per (service, region, read timeout) per container, built by :func:`config.client`.

    ``config.client`` caches by its arguments, and two equal ``Config`` objects are different keys, so the
    client is kept here too: a backend built per request still reuses the container's connection pool."""
    key = (service, region, read_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            extra = Config(read_timeout=read_timeout, retries={"mode": "standard", "max_attempts": 3},
                           **({"region_name": region} if region else {}))
            client = _clients[key] = config.client(service, extra)
        return client


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


def decode_images(encoded: object, n: int, width: int, height: int, transparent: bool,
                  param: str = "images") -> list[GeneratedImage]:
    """Exactly ``n`` base64 images -> validated ``GeneratedImage``s of ``width`` x ``height``; every header is
    read (and charged to the request's decode budget) before any image is decoded."""
    if not isinstance(encoded, list) or len(encoded) != n or not all(isinstance(item, str) for item in encoded):
        raise Outcome(invalid_response(), unhealthy=True)
    images = []
    try:
        headers = [read_header(decode_base64(item, param=f"{param}[{i}]", max_bytes=OUTPUT_LIMITS.max_image_bytes),
                               param=f"{param}[{i}]", limits=OUTPUT_LIMITS) for i, item in enumerate(encoded)]
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
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True)
    if isinstance(exc, EndpointConnectionError):
        return Outcome(unavailable(), unhealthy=True)
    return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_unreachable"), unhealthy=True)


def guarded(breaker: CircuitBreaker, model_id: str, operation: str, call: Callable[[], Any], *, backend: str) -> Any:
    """Run ``call`` behind ``breaker``; ``Outcome``s become their ``ApiError`` (and breaker records).

    Counts the call for ``backend`` (metrics ``UpstreamCalls``, and ``UpstreamErrors`` when it fails with a 5xx)."""
    try:
        breaker.acquire()
    except ApiError:
        upstream_call(backend, "circuit_open")
        raise
    try:
        result = call()
    except Outcome as outcome:
        (breaker.failure if outcome.unhealthy else breaker.success)()
        record_outcome(backend, outcome.error)
        logger.warning("upstream call failed", extra={"model": model_id, "operation": operation,
                                                      "code": outcome.error.code, "status": outcome.error.status})
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

    def __init__(self, model: ModelEntry, client=None, *, breaker: CircuitBreaker | None = None) -> None:
        self.model = model
        self._client = client
        self.breaker = breaker or CircuitBreaker()

    @property
    def client(self):
        if self._client is None:
            endpoint = self.model.endpoint
            self._client = aws_client(self.SERVICE, read_timeout=endpoint.timeout_seconds, region=endpoint.region)
        return self._client
