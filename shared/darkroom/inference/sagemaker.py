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
import json
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)
from PIL import Image

from darkroom.api.errors import UpstreamError
from darkroom.catalog import ModelEntry
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob

# The answer as a whole, and each image in it (formats, bytes, pixels): an upstream is untrusted input.
from darkroom.inference.aws_runtime import (
    CONFIG_MESSAGE,
    FAILED_MESSAGE,
    REFUSED_MESSAGE,
    AwsBackend,
    Outcome,
    b64png,
    decode_images,
    error_code,
    guarded,
    invalid_response,
    json_object,
    png_bytes,
    read_body,
    transport_outcome,
    unavailable,
)
from darkroom.observability import logger

_UNAVAILABLE_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "ServiceUnavailable",
                                "ServiceUnavailableException", "ModelNotReadyException", "InternalFailure",
                                "InternalDependencyException", "InternalServerException"})


def edit_mask_png(mask: Image.Image) -> bytes:
    """darkroom's mask ("L", 0 = edit here) -> the contract's grayscale PNG: 255 = edit, 0 = keep."""
    return png_bytes(mask.convert("L").point(lambda alpha: 255 if alpha == 0 else 0))


class SageMakerBackend(AwsBackend):
    """The ``Backend`` port over a SageMaker real-time endpoint (darkroom's JSON contract)."""

    SERVICE = "sagemaker-runtime"

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
