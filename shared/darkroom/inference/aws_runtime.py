"""What the AWS-hosted backends (SageMaker, Bedrock) share: their runtime client (one per service and region,
from the container's one cache, :func:`darkroom.config.client`); their call path, :func:`guarded`, which is
:meth:`Resilience.call` (the one wrapper every adapter goes through) with each attempt's read timeout ending by
the call's deadline; reading, parsing and validating what the service sends back (images go through the
intake like any untrusted input); and the neutral errors clients see.

**Retries are darkroom's, not botocore's.** A runtime client makes one attempt per call (why, with botocore's
own words: :mod:`darkroom.config`), and :func:`guarded` retries through :meth:`Resilience.call`: an attempt
starts only while time remains, and its read timeout is what remains, less the connect timeout
(``config.RUNTIME_CONNECT_SECONDS``). ``tests/adapters/test_aws_deadline.py`` pins it against a real socket.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from PIL import Image, ImageOps

from darkroom import config
from darkroom.api.errors import ApiError, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import AwsEndpoint
from darkroom.inference import GeneratedImage
from darkroom.inference.resilience import (
    TIMEOUT_MESSAGE,
    UNAVAILABLE_MESSAGE,
    CircuitBreaker,
    Deadline,
    Outcome,
    Resilience,
)
from darkroom.intake import UPSTREAM_LIMITS, decode_base64, read_header

T = TypeVar("T")

# The answer as a whole (each image in it is read within UPSTREAM_LIMITS): an upstream is untrusted input.
MAX_RESPONSE_BYTES = UPSTREAM_LIMITS.max_total_bytes

INVALID_RESPONSE = "The model's backend returned an invalid response."
REFUSED_MESSAGE = "The model's backend refused the request."
CONTENT_POLICY_MESSAGE = "The request was rejected by the model's content filters."
FAILED_MESSAGE = "The model's backend failed to process the request."
CONFIG_MESSAGE = "The model's backend is not configured correctly."
RETRY_AFTER_SECONDS = 2


def refuse(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    """The client's 400 for what a model cannot take, raised before AWS is called."""
    return InvalidRequest(message, param=param, code=code)


def content_policy() -> Outcome:
    """The model's filters refused the prompt, an input image or what it drew: the client's 400 (with darkroom's
    neutral words, never the model's), not the endpoint's health."""
    return Outcome(InvalidRequest(CONTENT_POLICY_MESSAGE, code="content_policy_violation"), unhealthy=False)


def repaint_mask(mask: Image.Image) -> Image.Image:
    """darkroom's mask ("L", 0 = edit here) -> the diffusion convention: greyscale, white (255) = repaint this
    pixel, black (0) = keep it (darkroom's contract, Stability's inpaint, JumpStart's inpainting)."""
    return mask.convert("L").point(lambda alpha: 255 if alpha == 0 else 0)


def invalid_response() -> UpstreamError:
    return UpstreamError(INVALID_RESPONSE, code="upstream_invalid_response")


def unavailable(seconds: int = RETRY_AFTER_SECONDS) -> ServiceUnavailable:
    return ServiceUnavailable(UNAVAILABLE_MESSAGE, headers={"retry-after": str(seconds)})


def throttled() -> Outcome:
    """The endpoint is busy or briefly unavailable: a 503 with ``retry-after``, retried while time remains."""
    return Outcome(unavailable(), unhealthy=True, retryable=True)


def aws_client(service: str, *, region: str | None = None) -> Any:
    """The container's runtime client for ``service`` (and ``region``): botocore's retries off, each attempt's
    read timeout taken from :func:`guarded`'s deadline."""
    return config.client(service, region=region, runtime=True)


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


def json_object(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise Outcome(invalid_response(), unhealthy=True) from None
    if not isinstance(document, dict):
        raise Outcome(invalid_response(), unhealthy=True)
    return document


def decode_images(
    encoded: object,
    n: int,
    width: int,
    height: int,
    transparent: bool,
    param: str = "images",
    aspect_tolerance: float | None = None,
) -> list[GeneratedImage]:
    """Exactly ``n`` base64 images -> validated ``GeneratedImage``s of ``width`` x ``height``; every header is
    read (and charged to the request's decode budget) before any image is decoded. An image of another size is
    covered and cropped to it; with ``aspect_tolerance``, one whose aspect ratio is further off than that is a
    502 instead (cropping it would cut away what the model drew), so only a resize remains."""
    if not isinstance(encoded, list) or len(encoded) != n or not all(isinstance(item, str) for item in encoded):
        raise Outcome(invalid_response(), unhealthy=True)
    images: list[GeneratedImage] = []
    try:
        raws = [
            decode_base64(item, param=f"{param}[{i}]", max_bytes=UPSTREAM_LIMITS.max_image_bytes)
            for i, item in enumerate(encoded)
        ]
        headers = [read_header(raw, param=f"{param}[{i}]", limits=UPSTREAM_LIMITS) for i, raw in enumerate(raws)]
    except ApiError:
        raise Outcome(invalid_response(), unhealthy=True) from None
    for header, raw in zip(headers, raws, strict=True):
        try:
            image = header.decode().image
        except ApiError:
            raise Outcome(invalid_response(), unhealthy=True) from None
        upstream: bytes | None = raw  # validated and decoded above: may be stored as it is
        got_width, got_height = image.size
        if aspect_tolerance is not None and abs(got_width * height - got_height * width) > (
            aspect_tolerance * width * got_height
        ):
            raise Outcome(invalid_response(), unhealthy=True)
        if image.size != (width, height):  # the port's contract is exactly width x height: cover, then crop
            image, upstream = ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS), None
        if transparent and image.mode != "RGBA":
            image = image.convert("RGBA")
        images.append(GeneratedImage(image=image, upstream=upstream))
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
    call: Callable[[], T],
    *,
    backend: str,
    deadline: Deadline | None = None,
    resilience: Resilience | None = None,
) -> T:
    """``call`` (one attempt at an AWS runtime client) through :meth:`Resilience.call`: behind ``breaker``, an
    ``Outcome`` becomes its ``ApiError``, a retryable one is tried again while another attempt fits before
    ``deadline``, and each attempt's read timeout ends by the deadline. Without one, ``call`` runs once."""

    def attempt(remaining: float) -> T:
        if deadline is None:
            return call()
        with config.attempt_read_timeout(max(remaining - config.RUNTIME_CONNECT_SECONDS, 0.01)):
            return call()

    return (resilience or Resilience()).call(
        attempt,
        breaker=breaker,
        deadline=deadline,
        backend=backend,
        model=model_id,
        operation=operation,
        reserve=config.RUNTIME_CONNECT_SECONDS,
    )


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
        client: Any = None,
        *,
        breaker: CircuitBreaker | None = None,
        resilience: Resilience | None = None,
    ) -> None:
        self.model = model
        self._client = client
        self.breaker = breaker or CircuitBreaker()
        self.resilience = resilience or Resilience()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client(self.SERVICE, region=self.model.endpoint_as(AwsEndpoint).region)
        return self._client

    def deadline(self, model: ModelEntry, deadline_seconds: float) -> Deadline:
        """One call's deadline: the job's remaining time, at most the endpoint's timeout."""
        return self.resilience.deadline(min(deadline_seconds, model.endpoint_as(AwsEndpoint).timeout_seconds))
