"""The ``sagemaker`` backend: a SageMaker real-time endpoint that speaks darkroom's JSON contract.

darkroom calls ``sagemaker-runtime:InvokeEndpoint`` with the endpoint's ``content_type``/``accept``
(both ``application/json`` unless the catalog says otherwise) and one JSON object as the body. A model
container that wants to be served by darkroom implements exactly this (docs/deploying-backends.md):

Request (keys with no value are left out)::

    {"task": "generate" | "edit" | "analyze",
     "prompt": "...",                      # generate, edit
     "negative_prompt": "...",             # when the job's pass-through options carry one
     "width": 1024, "height": 1024,        # generate, edit: the exact size every image must have
     "num_images": 2,                      # generate, edit: the exact number of images to return
     "quality": "low" | "medium" | "high", # generate, edit
     "background": "transparent",          # only when the client asked for transparency
     "steps": 30, "seed": 7, ...,          # any other catalog-approved pass-through, verbatim
     "image": "<base64 PNG>",              # edit: the image to edit (width x height)
     "reference_images": ["<base64 PNG>"], # edit: further input images, when the client sent them
     "mask": "<base64 PNG>",               # edit, optional: grayscale ("L"), width x height;
                                           #   WHITE (255) = repaint this pixel, BLACK (0) = keep it
     "images": ["<base64 PNG>"],           # analyze: the images to look at, in order (may be empty)
     "instructions": "...",                # analyze: the system prompt, when there is one
     "messages": [{"role": "user" | "assistant" | "system" | "developer", "content": "..."}]}

Response: ``{"images": ["<base64 PNG|JPEG|WebP>", ...]}`` for generate/edit (exactly ``num_images``,
ideally at ``width`` x ``height``: other sizes are cover-fitted) or ``{"text": "..."}`` for analyze.

darkroom's own masks use the OpenAI convention (alpha 0 = edit here); the contract's mask is the
inverse, white = edit, as most diffusion inpainting pipelines expect, and is sent as a plain grayscale
PNG of only 0 and 255 so a container never has to reason about alpha.

The container's answer is untrusted: the body is read with a byte cap, every image goes through
:func:`darkroom.intake.decode_base64` and :func:`darkroom.intake.open_image`, and any deviation from the
contract is a 502 ``upstream_invalid_response``. Error messages never carry the endpoint name, an ARN
or the container's body. AWS errors map as follows:

* ``ThrottlingException``, ``ServiceUnavailable``, ``ModelNotReadyException``, ``InternalFailure``,
  ``InternalDependencyException``, a container answer of 429, a connection failure -> 503 + ``retry-after``;
* ``ModelError`` (the container answered 4xx/5xx) and ``ValidationError`` (darkroom's request did not
  fit the endpoint: an operator issue) -> 502 ``upstream_error``;
* botocore ``ReadTimeoutError`` / ``ConnectTimeoutError`` -> 504 ``upstream_timeout``.

Each backend has a circuit breaker (:class:`darkroom.inference.resilience.CircuitBreaker`): throttling,
timeouts, invalid answers and 5xx count against the endpoint; deliberate 4xx answers do not.
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
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob
from darkroom.inference.resilience import CircuitBreaker
from darkroom.intake import EDIT_FORMATS, IntakeLimits, decode_base64, open_image
from darkroom.observability import logger

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

_UNAVAILABLE_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "ServiceUnavailable",
                                "ServiceUnavailableException", "ModelNotReadyException", "InternalFailure",
                                "InternalDependencyException", "InternalServerException"})

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
    """Exactly ``n`` base64 images -> validated ``GeneratedImage``s of ``width`` x ``height``."""
    if not isinstance(encoded, list) or len(encoded) != n:
        raise Outcome(invalid_response(), unhealthy=True)
    images = []
    for index, item in enumerate(encoded):
        if not isinstance(item, str):
            raise Outcome(invalid_response(), unhealthy=True)
        where = f"{param}[{index}]"
        try:
            raw = decode_base64(item, param=where, max_bytes=OUTPUT_LIMITS.max_image_bytes)
            image = open_image(raw, param=where, limits=OUTPUT_LIMITS).image
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


def guarded(breaker: CircuitBreaker, model_id: str, operation: str, call: Callable[[], Any]) -> Any:
    """Run ``call`` behind ``breaker``; ``Outcome``s become their ``ApiError`` (and breaker records)."""
    breaker.acquire()
    try:
        result = call()
    except Outcome as outcome:
        (breaker.failure if outcome.unhealthy else breaker.success)()
        logger.warning("upstream call failed", extra={"model": model_id, "operation": operation,
                                                      "code": outcome.error.code, "status": outcome.error.status})
        raise outcome.error from None
    except ApiError:
        breaker.success()  # refused before or without a call (a request the model cannot serve)
        raise
    except BaseException:
        breaker.failure()
        raise
    breaker.success()
    return result


def error_code(exc: ClientError) -> str:
    error = exc.response.get("Error") if isinstance(exc.response, Mapping) else None
    code = error.get("Code") if isinstance(error, Mapping) else None
    return code if isinstance(code, str) else ""


def error_message(exc: ClientError) -> str:
    error = exc.response.get("Error") if isinstance(exc.response, Mapping) else None
    message = error.get("Message") if isinstance(error, Mapping) else None
    return message if isinstance(message, str) else ""


# ---------------------------------------------------------------------------------------------------


def edit_mask_png(mask: Image.Image) -> bytes:
    """darkroom's mask ("L", 0 = edit here) -> the contract's grayscale PNG: 255 = edit, 0 = keep."""
    return png_bytes(mask.convert("L").point(lambda alpha: 255 if alpha == 0 else 0))


class SageMakerBackend:
    """The ``Backend`` port over a SageMaker real-time endpoint (darkroom's JSON contract)."""

    def __init__(self, model: ModelEntry, client=None, *, breaker: CircuitBreaker | None = None) -> None:
        self.model = model
        self._client = client
        self.breaker = breaker or CircuitBreaker()

    @property
    def client(self):
        if self._client is None:
            endpoint = self.model.endpoint
            self._client = aws_client("sagemaker-runtime", read_timeout=endpoint.timeout_seconds,
                                      region=endpoint.region)
        return self._client

    # -- the port -------------------------------------------------------------------------------

    def generate(self, model: ModelEntry, job: GenerateJob) -> list[GeneratedImage]:
        body = self._image_request("generate", job.prompt, job.width, job.height, job.n, job.quality,
                                   job.transparent, job.options)
        return self._call(model, "generate", body, lambda document: decode_images(
            document.get("images"), job.n, job.width, job.height, job.transparent))

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        body = self._image_request("edit", job.prompt, job.width, job.height, job.n, job.quality,
                                   job.transparent, job.options)
        body["image"] = b64png(job.images[0])
        if len(job.images) > 1:
            body["reference_images"] = [b64png(image) for image in job.images[1:]]
        if job.mask is not None:
            body["mask"] = base64.b64encode(edit_mask_png(job.mask)).decode("ascii")
        return self._call(model, "edit", body, lambda document: decode_images(
            document.get("images"), job.n, job.width, job.height, job.transparent))

    def respond(self, model: ModelEntry, job: TextJob) -> str:
        body: dict[str, Any] = {"task": "analyze",
                                "messages": [{"role": role, "content": text} for role, text in job.messages],
                                "images": [b64png(picture.image) for picture in job.images]}
        if job.instructions:
            body["instructions"] = job.instructions
        return self._call(model, "analyze", body, self._text)

    # -- one call -------------------------------------------------------------------------------

    @staticmethod
    def _image_request(task: str, prompt: str, width: int, height: int, n: int, quality: str, transparent: bool,
                       options: Mapping[str, Any]) -> dict[str, Any]:
        # Pass-through first (negative_prompt, steps, seed, ...): the contract's own keys always win.
        body: dict[str, Any] = {**options, "task": task, "prompt": prompt, "width": width, "height": height,
                                "num_images": n, "quality": quality}
        if transparent:
            body["background"] = "transparent"
        return body

    @staticmethod
    def _text(document: dict) -> str:
        text = document.get("text")
        if not isinstance(text, str):
            raise Outcome(invalid_response(), unhealthy=True)
        return text

    def _call(self, model: ModelEntry, task: str, body: dict, parse: Callable[[dict], Any]):
        endpoint = model.endpoint
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")

        def call():
            try:
                response = self.client.invoke_endpoint(EndpointName=endpoint.endpoint_name, Body=payload,
                                                       ContentType=endpoint.content_type, Accept=endpoint.accept)
            except ClientError as exc:
                raise self._client_error(model, exc) from None
            except BotoCoreError as exc:
                raise transport_outcome(exc) from None
            return parse(json_object(read_body(response.get("Body"))))

        return guarded(self.breaker, model.id, task, call)

    @staticmethod
    def _client_error(model: ModelEntry, exc: ClientError) -> Outcome:
        code = error_code(exc)
        if code in _UNAVAILABLE_CODES:
            return Outcome(unavailable(), unhealthy=True)
        if code == "ModelError":
            status = exc.response.get("OriginalStatusCode")
            status = status if isinstance(status, int) else 500
            logger.error("sagemaker container error", extra={"model": model.id, "original_status": status})
            if status == 429:
                return Outcome(unavailable(), unhealthy=True)
            if 400 <= status < 500:  # the container refused this request deliberately
                return Outcome(UpstreamError(REFUSED_MESSAGE, code="upstream_error"), unhealthy=False)
            return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=True)
        if code == "ValidationError":  # our request does not fit the endpoint (name, content type, size)
            logger.error("sagemaker rejected darkroom's request", extra={"model": model.id, "code": code})
            return Outcome(UpstreamError(CONFIG_MESSAGE, code="upstream_error"), unhealthy=False)
        logger.error("sagemaker call failed", extra={"model": model.id, "code": code[:64]})
        return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=False)


_adapters: dict[str, tuple[ModelEntry, SageMakerBackend]] = {}
_adapters_lock = threading.Lock()


def adapter_for(model: ModelEntry) -> SageMakerBackend:
    """The container's adapter for ``model`` (one client and breaker; rebuilt if its entry changed)."""
    with _adapters_lock:
        cached = _adapters.get(model.id)
        if cached is None or cached[0] != model:
            cached = _adapters[model.id] = (model, SageMakerBackend(model))
        return cached[1]
