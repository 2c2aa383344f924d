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
* ``ModelError`` whose container answer was a 4xx carrying the contract's safety refusal,
  ``{"error": {"code": "content_policy_violation", ...}}`` -> 400 ``content_policy_violation`` with a neutral
  message (as :mod:`darkroom.inference.bedrock` answers its filters); a 4xx whose ``error.param`` is one of the
  model's ``passthrough`` names -> 400 ``invalid_value`` for that parameter (the client's value, e.g. a ``seed``
  the model cannot take); only ``code`` and ``param`` are read from the container's body, and at most
  ``MAX_REFUSAL_BYTES`` of it (:func:`container_refusal`);
* any other ``ModelError`` (the container answered 4xx/5xx) and ``ValidationError`` (darkroom's request did
  not fit the endpoint: an operator issue) -> 502 ``upstream_error``;
* botocore ``ReadTimeoutError`` / ``ConnectTimeoutError`` -> 504 ``upstream_timeout``; so is a ``ModelError``
  with ``OriginalStatusCode`` 0, SageMaker's answer when the container did not answer within its 60 s ("Received
  server error (0) from primary with message \"Your invocation timed out while waiting for a response from
  container primary...\"", as reported in aws/amazon-sagemaker-examples#799 and #1407): no retry, which would
  take another 60 s.

Each backend has a circuit breaker (:class:`darkroom.inference.resilience.CircuitBreaker`): throttling,
timeouts, invalid answers and 5xx count against the endpoint; deliberate 4xx answers (refusals included) do not.

An endpoint with ``async_inference`` is a SageMaker *asynchronous* endpoint: the same body and answer
travel through S3 instead (:mod:`darkroom.inference.sagemaker_async`); ``submit_async`` and
``collect_async`` split one call in two for a background job that outlives a Lambda invocation.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, overload

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)
from PIL import Image

from darkroom import config
from darkroom.api.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import SageMakerEndpoint
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob
from darkroom.inference.aws_runtime import (
    CONFIG_MESSAGE,
    FAILED_MESSAGE,
    REFUSED_MESSAGE,
    AwsBackend,
    b64png,
    decode_images,
    error_code,
    guarded,
    invalid_response,
    json_object,
    png_bytes,
    read_body,
    throttled,
    transport_outcome,
)
from darkroom.inference.resilience import TIMEOUT_MESSAGE, CircuitBreaker, Outcome, Resilience
from darkroom.inference.sagemaker_async import Answer, AsyncEndpoint, Task
from darkroom.observability import logger

# The contract's safety refusal (a 4xx whose body is {"error": {"code": "content_policy_violation"}}) and the
# neutral words the client gets instead of the container's: bedrock.py's, so both backends refuse alike.
CONTENT_POLICY_CODE = "content_policy_violation"
CONTENT_POLICY_MESSAGE = "The request was rejected by the model's content filters."
# How much of a container's error body is looked at to find that code: an error object is a few hundred bytes
# (and botocore's sagemaker-runtime model caps ModelError.OriginalMessage at 2048 characters, shape "Message");
# anything longer is not a refusal, so a huge or hostile body is never parsed.
MAX_REFUSAL_BYTES = 64 * 1024
_UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "InternalFailure",
        "InternalDependencyException",
        "InternalServerException",
    }
)


def container_refusal(model: ModelEntry, body: object) -> Outcome | None:
    """The client's 400 for a container's error body that the contract lets darkroom read, else None:

    * ``error.code`` ``content_policy_violation``: the safety refusal (neutral words, bedrock's);
    * ``error.param`` naming one of the model's ``passthrough`` parameters: the client sent that parameter a value
      the model cannot take (``seed: "x"``), which is the client's 400 for that parameter, not a 502.

    ``body`` is untrusted (``str`` or ``bytes``): only ``error.code`` and ``error.param`` are read, only from a body
    of at most ``MAX_REFUSAL_BYTES``, and ``param`` is used only when it is one of the catalog's own names. A refusal
    is the client's request, not the endpoint's health (``unhealthy=False``); nothing of the container's text
    reaches the client or the logs."""
    data = body.encode("utf-8", "replace") if isinstance(body, str) else body
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_REFUSAL_BYTES:
        return None
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    if error.get("code") == CONTENT_POLICY_CODE:
        return Outcome(InvalidRequest(CONTENT_POLICY_MESSAGE, code=CONTENT_POLICY_CODE), unhealthy=False)
    param = error.get("param")
    if isinstance(param, str) and param in model.passthrough:
        return Outcome(
            InvalidRequest(f"Invalid value for '{param}': {model.id} cannot take it.", param=param), unhealthy=False
        )
    return None


def edit_mask_png(mask: Image.Image) -> bytes:
    """darkroom's mask ("L", 0 = edit here) -> the contract's grayscale PNG: 255 = edit, 0 = keep."""
    return png_bytes(mask.convert("L").point(lambda alpha: 255 if alpha == 0 else 0))


# -- the contract: request bodies and what a valid answer to each looks like ---------------------------


def generate_request(job: GenerateJob) -> dict[str, Any]:
    return _image_request(
        "generate", job.prompt, job.width, job.height, job.n, job.quality, job.transparent, job.options
    )


def edit_request(job: EditJob) -> dict[str, Any]:
    body = _image_request("edit", job.prompt, job.width, job.height, job.n, job.quality, job.transparent, job.options)
    body["image"] = b64png(job.images[0])
    if len(job.images) > 1:
        body["reference_images"] = [b64png(image) for image in job.images[1:]]
    if job.mask is not None:
        body["mask"] = base64.b64encode(edit_mask_png(job.mask)).decode("ascii")
    return body


def analyze_request(job: TextJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "analyze",
        "messages": [{"role": role, "content": text} for role, text in job.messages],
        "images": [b64png(picture.image) for picture in job.images],
    }
    if job.instructions:
        body["instructions"] = job.instructions
    return body


def _image_request(
    task: Literal["generate", "edit"],
    prompt: str,
    width: int,
    height: int,
    n: int,
    quality: str,
    transparent: bool,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    # Pass-through first (negative_prompt, steps, seed, ...): the contract's own keys always win.
    body: dict[str, Any] = {
        **options,
        "task": task,
        "prompt": prompt,
        "width": width,
        "height": height,
        "num_images": n,
        "quality": quality,
    }
    if transparent:
        body["background"] = "transparent"
    return body


def expectation(task: Task, body: Mapping[str, Any]) -> dict[str, Any]:
    """What a valid answer to ``body`` must hold, as plain JSON: an async handle carries it between
    invocations, and both paths parse with it, so an async answer is checked exactly like a real-time one."""
    if task == "analyze":
        return {}
    return {
        "n": body["num_images"],
        "width": body["width"],
        "height": body["height"],
        "transparent": body.get("background") == "transparent",
    }


def parse_answer(task: str, expect: Mapping[str, Any], document: dict[str, Any]) -> Answer:
    """The container's (untrusted) answer -> validated images or text; anything else is an ``Outcome``."""
    if task == "analyze":
        text = document.get("text")
        if not isinstance(text, str):
            raise Outcome(invalid_response(), unhealthy=True)
        return text
    return decode_images(document.get("images"), expect["n"], expect["width"], expect["height"], expect["transparent"])


class SageMakerBackend(AwsBackend):
    """The ``Backend`` port over a SageMaker endpoint, real-time or asynchronous (darkroom's JSON contract)."""

    SERVICE = "sagemaker-runtime"

    def __init__(
        self,
        model: ModelEntry,
        client: Any = None,
        *,
        breaker: CircuitBreaker | None = None,
        resilience: Resilience | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(model, client, breaker=breaker, resilience=resilience)
        self._sleep = sleep  # injectable so tests poll an async endpoint without waiting
        self._clock = clock
        self._async: AsyncEndpoint | None = None

    # -- the port -------------------------------------------------------------------------------

    def generate(self, model: ModelEntry, job: GenerateJob) -> list[GeneratedImage]:
        return self._call(model, "generate", generate_request(job), job.deadline_seconds)

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        return self._call(model, "edit", edit_request(job), job.deadline_seconds)

    def respond(self, model: ModelEntry, job: TextJob) -> str:
        return self._call(model, "analyze", analyze_request(job), job.deadline_seconds)

    # -- an async endpoint, across invocations --------------------------------------------------

    def submit_async(
        self, model: ModelEntry, task: Task, body: dict[str, Any], *, deadline_seconds: float | None = None
    ) -> dict[str, Any]:
        """Queue a contract body (``generate_request`` & co.) on the model's async endpoint; the handle
        returned is plain JSON for :meth:`collect_async`, in this invocation or a later one."""
        return self.async_endpoint.submit(model, task, body, expectation(task, body), deadline_seconds)

    def collect_async(self, model: ModelEntry, handle: Mapping[str, Any]) -> Answer | None:
        """The images (or text) once the endpoint has answered, None while it is still working; raises
        the same ``ApiError``s as a real-time call (504 once the handle's deadline has passed)."""
        return self.async_endpoint.collect(model, handle)

    @property
    def async_endpoint(self) -> AsyncEndpoint:
        """Built on first use: a real-time model never needs the S3 client or the bucket."""
        if self._async is None:
            self._async = AsyncEndpoint(
                self.client,
                config.client("s3"),
                config.get_settings().images_bucket,
                self.breaker,
                parse=parse_answer,
                client_error=self._client_error,
                refusal=container_refusal,
                resilience=self.resilience,
                sleep=self._sleep,
                clock=self._clock,
            )
        return self._async

    # -- one call -------------------------------------------------------------------------------

    @overload
    def _call(
        self, model: ModelEntry, task: Literal["generate", "edit"], body: dict[str, Any], deadline_seconds: float
    ) -> list[GeneratedImage]: ...

    @overload
    def _call(
        self, model: ModelEntry, task: Literal["analyze"], body: dict[str, Any], deadline_seconds: float
    ) -> str: ...

    def _call(self, model: ModelEntry, task: Task, body: dict[str, Any], deadline_seconds: float) -> Answer:
        endpoint = model.endpoint_as(SageMakerEndpoint)
        expect = expectation(task, body)
        if endpoint.async_inference:
            return self.async_endpoint.run(model, task, body, expect, deadline_seconds)
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")

        def call() -> Answer:
            try:
                response = self.client.invoke_endpoint(
                    EndpointName=endpoint.endpoint_name,
                    Body=payload,
                    ContentType=endpoint.content_type,
                    Accept=endpoint.accept,
                )
            except ClientError as exc:
                raise self._client_error(model, exc) from None
            except BotoCoreError as exc:
                raise transport_outcome(exc) from None
            return parse_answer(task, expect, json_object(read_body(response.get("Body"))))

        return guarded(
            self.breaker,
            model.id,
            task,
            call,
            backend=model.backend,
            deadline=self.deadline(model, deadline_seconds),
            resilience=self.resilience,
        )

    @staticmethod
    def _client_error(model: ModelEntry, exc: ClientError) -> Outcome:
        code = error_code(exc)
        if code in _UNAVAILABLE_CODES:
            return throttled()
        if code == "ModelError":
            original = exc.response.get("OriginalStatusCode")
            status = original if isinstance(original, int) else 500
            if status == 0:  # no container answer at all: SageMaker gave up waiting (60 s)
                logger.error("sagemaker container timed out", extra={"model": model.id})
                return Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True)
            if 400 <= status < 500 and status != 429:
                refused = container_refusal(model, exc.response.get("OriginalMessage"))
                if refused is not None:  # the client's request, not an operator's problem: guarded() logs it
                    return refused
            logger.error("sagemaker container error", extra={"model": model.id, "original_status": status})
            if status == 429:
                return throttled()
            if 400 <= status < 500:  # the container refused this request deliberately
                return Outcome(UpstreamError(REFUSED_MESSAGE, code="upstream_error"), unhealthy=False)
            return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=True)
        if code == "ValidationError":  # our request does not fit the endpoint (name, content type, size)
            logger.error("sagemaker rejected darkroom's request", extra={"model": model.id, "code": code})
            return Outcome(UpstreamError(CONFIG_MESSAGE, code="upstream_error"), unhealthy=False)
        logger.error("sagemaker call failed", extra={"model": model.id, "code": code[:64]})
        return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=False)
