"""The ``bedrock`` backend: Amazon Bedrock foundation models through ``bedrock-runtime``.

* image models -> ``InvokeModel``, with the request and answer shapes of the family the catalog entry declares
  (``endpoint.family``, never guessed from the model id: an inference profile or a new version need not look
  like the family it belongs to):

  - ``nova-canvas``, ``titan-image``: generate -> the ``TEXT_IMAGE`` task; edit with a mask -> ``INPAINTING``
    (one input image); edit without one -> ``IMAGE_VARIATION`` (1-5 input images guide a new picture); one call
    returns all ``n`` images (:mod:`darkroom.inference.bedrock_images`);
  - ``stability-image`` (SD3.5 Large, Stable Image Core and Ultra): generate -> text-to-image at the aspect
    ratio of the job's size; edit -> image-to-image (no mask); ``stability-inpaint`` (Stability AI Image
    Services' Inpaint): edit -> an image and its mask. One image per call, so ``n`` images are ``n`` calls
    made one after another within the one deadline (:mod:`darkroom.inference.bedrock_stability`);

* respond -> the ``Converse`` API (text, and PNG images for models that see); family ``converse``. A streamed
  request's job (one with a ``TextSink``) -> ``ConverseStream``, the same request, each text delta sent on as
  Bedrock writes it (:mod:`darkroom.inference.bedrock_stream`).

Each family's planner checks what its models accept before AWS is called (400 naming the parameter) and
returns :class:`~darkroom.inference.bedrock_images.ImageCalls`: the bodies to send and how to read an answer.
Each call goes through :func:`~darkroom.inference.aws_runtime.guarded` (breaker, retries) on the one deadline;
a further call is not started when less time remains than the slowest call so far took (a 504 then, rather
than paying for an image the deadline would discard).

**Errors.** ``ThrottlingException``, ``ServiceUnavailableException``, ``ModelNotReadyException``,
``InternalServerException``, ``ServiceQuotaExceededException`` -> 503 + ``retry-after``;
``ValidationException`` saying the content filters blocked the request (or an image answer with an
``error`` field or a "Filter reason" finish reason) -> 400 ``content_policy_violation`` with a neutral message;
any other ``ValidationException``, ``AccessDeniedException``, ``ResourceNotFoundException``,
``ModelErrorException`` (and Stability's "Inference error") -> 502 ``upstream_error``; ``ModelTimeoutException``
and botocore read/connect timeouts -> 504; a malformed answer -> 502 ``upstream_invalid_response``. No message
names the model ARN or repeats what Bedrock said. Images in answers pass through :mod:`darkroom.intake`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from darkroom.api.errors import UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import BedrockEndpoint
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob
from darkroom.inference.aws_runtime import (
    CONFIG_MESSAGE,
    FAILED_MESSAGE,
    AwsBackend,
    content_policy,
    error_code,
    error_message,
    guarded,
    invalid_response,
    json_object,
    png_bytes,
    read_body,
    refuse,
    throttled,
    transport_outcome,
)
from darkroom.inference.bedrock_images import ImageCalls, amazon_edit, amazon_generate
from darkroom.inference.bedrock_stability import edit_calls, generate_calls, inpaint_calls
from darkroom.inference.bedrock_stream import FILTERED_STOPS, ConverseStream
from darkroom.inference.resilience import TIMEOUT_MESSAGE, Outcome
from darkroom.observability import logger

J = TypeVar("J", GenerateJob, EditJob)
# Each image family's planner, by the family its catalog entry declares.
_GENERATE: dict[str, Callable[[ModelEntry, GenerateJob], ImageCalls]] = {
    "nova-canvas": amazon_generate,
    "titan-image": amazon_generate,
    "stability-image": lambda _model, job: generate_calls(job),
}
_EDIT: dict[str, Callable[[ModelEntry, EditJob], ImageCalls]] = {
    "nova-canvas": amazon_edit,
    "titan-image": amazon_edit,
    "stability-image": lambda _model, job: edit_calls(job),
    "stability-inpaint": lambda _model, job: inpaint_calls(job),
}
_UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "InternalServerException",
        "ServiceQuotaExceededException",
    }
)
_CONFIG_CODES = frozenset(
    {"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException", "ExpiredTokenException"}
)
# What Bedrock says when its filters block a prompt, an input image or a generated image.
_CONTENT_FILTERED = re.compile(
    r"content filter|blocked by our|content moderation|responsible ai|"
    r"violates? (?:our|the) (?:content|acceptable use)|\baup\b",
    re.IGNORECASE,
)
_ROLES = {"user": "user", "assistant": "assistant"}


class BedrockBackend(AwsBackend):
    """The ``Backend`` port over Amazon Bedrock (image models via InvokeModel, text via Converse)."""

    SERVICE = "bedrock-runtime"

    # -- the port -------------------------------------------------------------------------------

    def generate(self, model: ModelEntry, job: GenerateJob) -> list[GeneratedImage]:
        return self._images(model, "generate", _plan(_GENERATE, model, job), job.deadline_seconds)

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        return self._images(model, "edit", _plan(_EDIT, model, job), job.deadline_seconds)

    def respond(self, model: ModelEntry, job: TextJob) -> str:
        system = [{"text": job.instructions}] if job.instructions else []
        messages: list[dict[str, Any]] = []
        for role, text in job.messages:
            if role in ("system", "developer"):
                system.append({"text": text})
                continue
            self._append(messages, _ROLES.get(role, "user"), [{"text": text}])
        if job.images:
            blocks = [
                {"image": {"format": "png", "source": {"bytes": png_bytes(picture.image)}}} for picture in job.images
            ]
            self._append(messages, "user", blocks)
        if not messages:
            raise refuse("The conversation has no message for the model to answer.", "input")
        if messages[0]["role"] != "user":  # Converse starts with the user
            messages.insert(0, {"role": "user", "content": [{"text": "(conversation continues)"}]})
        request: dict[str, Any] = {"modelId": model.endpoint_as(BedrockEndpoint).model_id, "messages": messages}
        if system:
            request["system"] = system

        deadline = self.deadline(model, job.deadline_seconds)
        call: Callable[[], str] = partial(self._converse, model, request)
        if job.deltas is not None:  # a streamed request: the text as Bedrock writes it
            call = ConverseStream(self.client, model, request, job.deltas, deadline, self._client_error)
        operation = "converse" if job.deltas is None else "converse_stream"
        return guarded(
            self.breaker,
            model.id,
            operation,
            call,
            backend=model.backend,
            deadline=deadline,
            resilience=self.resilience,
        )

    # -- requests -------------------------------------------------------------------------------

    @staticmethod
    def _append(messages: list[dict[str, Any]], role: str, content: list[dict[str, Any]]) -> None:
        """Converse wants alternating roles: consecutive turns of one role become one message."""
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(content)
        else:
            messages.append({"role": role, "content": list(content)})

    # -- answers --------------------------------------------------------------------------------

    def _images(
        self, model: ModelEntry, operation: str, calls: ImageCalls, deadline_seconds: float
    ) -> list[GeneratedImage]:
        deadline = self.deadline(model, deadline_seconds)
        images: list[GeneratedImage] = []
        slowest = 0.0
        for body in calls.bodies:
            before = deadline.remaining()
            if images and before < slowest:  # another call like the slowest would end past the deadline
                logger.warning("bedrock image call not started: no time left", extra={"model": model.id})
                raise UpstreamTimeout(TIMEOUT_MESSAGE)
            payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
            images.extend(
                guarded(
                    self.breaker,
                    model.id,
                    operation,
                    partial(self._invoke, model, payload, calls.read),
                    backend=model.backend,
                    deadline=deadline,
                    resilience=self.resilience,
                )
            )
            slowest = max(slowest, before - deadline.remaining())
        return images

    def _converse(self, model: ModelEntry, request: Mapping[str, Any]) -> str:
        """One ``Converse`` attempt -> the answer's text (or an ``Outcome``)."""
        try:
            response = self.client.converse(**request)
        except ClientError as exc:
            raise self._client_error(model, exc) from None
        except BotoCoreError as exc:
            raise transport_outcome(exc) from None
        return self._text(response)

    def _invoke(
        self, model: ModelEntry, payload: bytes, read: Callable[[dict[str, Any]], list[GeneratedImage]]
    ) -> list[GeneratedImage]:
        """One ``InvokeModel`` attempt -> the answer's images (or an ``Outcome``)."""
        try:
            response = self.client.invoke_model(
                modelId=model.endpoint_as(BedrockEndpoint).model_id,
                body=payload,
                contentType="application/json",
                accept="application/json",
            )
        except ClientError as exc:
            raise self._client_error(model, exc) from None
        except BotoCoreError as exc:
            raise transport_outcome(exc) from None
        return read(json_object(read_body(response.get("body"))))

    @staticmethod
    def _text(response: Mapping[str, Any]) -> str:
        if response.get("stopReason") in FILTERED_STOPS:
            raise content_policy()
        output = response.get("output")
        message = output.get("message") if isinstance(output, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            raise Outcome(invalid_response(), unhealthy=True)
        texts = [
            block["text"] for block in content if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        ]
        if not texts:
            raise Outcome(invalid_response(), unhealthy=True)
        return "".join(texts)

    @staticmethod
    def _client_error(model: ModelEntry, exc: ClientError) -> Outcome:
        code = error_code(exc)
        if code in _UNAVAILABLE_CODES:
            return throttled()
        if code == "ModelTimeoutException":
            return Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True)
        if code == "ValidationException" and _CONTENT_FILTERED.search(error_message(exc)):
            return content_policy()
        if code in _CONFIG_CODES or code == "ValidationException":
            logger.error("bedrock rejected darkroom's request", extra={"model": model.id, "code": code})
            return Outcome(UpstreamError(CONFIG_MESSAGE, code="upstream_error"), unhealthy=False)
        logger.error("bedrock call failed", extra={"model": model.id, "code": code[:64]})
        return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=code == "ModelErrorException")


def _plan(planners: Mapping[str, Callable[[ModelEntry, J], ImageCalls]], model: ModelEntry, job: J) -> ImageCalls:
    """The declared family's planner for ``job`` (the catalog admits no capability a family lacks)."""
    planner = planners.get(model.endpoint_as(BedrockEndpoint).family)
    if planner is None:
        raise refuse(f"The model '{model.id}' does not draw images this way.", "model", "model_not_supported")
    return planner(model, job)
