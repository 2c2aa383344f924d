"""The ``bedrock`` backend: Amazon Bedrock foundation models through ``bedrock-runtime``.

* generate -> ``InvokeModel`` with the Nova Canvas / Titan Image Generator ``TEXT_IMAGE`` task;
* edit with a mask -> ``INPAINTING`` (one input image); edit without a mask -> ``IMAGE_VARIATION``
  (1-5 input images guide a new picture);
* respond -> the ``Converse`` API (text, and PNG images for models that see).

The image families' request shapes, masks and limits (checked before AWS is called) are
:mod:`darkroom.inference.bedrock_images`'. Which family a model is comes from its catalog entry
(``endpoint.family``: ``nova-canvas``, ``titan-image``, or ``converse`` for text and vision), never from its
model id: an inference profile or a new version need not look like the family it belongs to.

**Errors.** ``ThrottlingException``, ``ServiceUnavailableException``, ``ModelNotReadyException``,
``InternalServerException``, ``ServiceQuotaExceededException`` -> 503 + ``retry-after``;
``ValidationException`` saying the content filters blocked the request (or an image answer with an
``error`` field) -> 400 ``content_policy_violation`` with a neutral message; any other
``ValidationException``, ``AccessDeniedException``, ``ResourceNotFoundException``,
``ModelErrorException`` -> 502 ``upstream_error``; ``ModelTimeoutException`` and botocore read/connect
timeouts -> 504; a malformed answer -> 502 ``upstream_invalid_response``. No message names the model
ARN or repeats what Bedrock said. Images in answers pass through :mod:`darkroom.intake`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from darkroom.api.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.catalog_endpoints import BedrockEndpoint
from darkroom.inference import EditJob, GeneratedImage, GenerateJob, TextJob
from darkroom.inference.aws_runtime import (
    CONFIG_MESSAGE,
    FAILED_MESSAGE,
    AwsBackend,
    decode_images,
    error_code,
    error_message,
    guarded,
    invalid_response,
    json_object,
    png_bytes,
    read_body,
    throttled,
    transport_outcome,
)
from darkroom.inference.bedrock_images import edit_body, generate_body, refuse, rules_for
from darkroom.inference.resilience import TIMEOUT_MESSAGE, Outcome
from darkroom.observability import logger

CONTENT_POLICY_MESSAGE = "The request was rejected by the model's content filters."
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
        body = generate_body(rules_for(model), job)
        return self._images(model, "generate", body, job.n, job.width, job.height, job.deadline_seconds)

    def edit(self, model: ModelEntry, job: EditJob) -> list[GeneratedImage]:
        body = edit_body(rules_for(model), job)
        return self._images(model, "edit", body, job.n, job.width, job.height, job.deadline_seconds)

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

        def call() -> str:
            try:
                response = self.client.converse(**request)
            except ClientError as exc:
                raise self._client_error(model, exc) from None
            except BotoCoreError as exc:
                raise transport_outcome(exc) from None
            return self._text(response)

        return guarded(
            self.breaker,
            model.id,
            "converse",
            call,
            backend=model.backend,
            deadline=self.deadline(model, job.deadline_seconds),
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
        self,
        model: ModelEntry,
        operation: str,
        body: dict[str, Any],
        n: int,
        width: int,
        height: int,
        deadline_seconds: float,
    ) -> list[GeneratedImage]:
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")

        def call() -> list[GeneratedImage]:
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
            document = json_object(read_body(response.get("body")))
            if document.get("error"):  # Bedrock's filters removed what it drew
                raise Outcome(InvalidRequest(CONTENT_POLICY_MESSAGE, code="content_policy_violation"), unhealthy=False)
            return decode_images(document.get("images"), n, width, height, transparent=False)

        return guarded(
            self.breaker,
            model.id,
            operation,
            call,
            backend=model.backend,
            deadline=self.deadline(model, deadline_seconds),
            resilience=self.resilience,
        )

    @staticmethod
    def _text(response: Mapping[str, Any]) -> str:
        if response.get("stopReason") in ("content_filtered", "guardrail_intervened"):
            raise Outcome(InvalidRequest(CONTENT_POLICY_MESSAGE, code="content_policy_violation"), unhealthy=False)
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
            return Outcome(InvalidRequest(CONTENT_POLICY_MESSAGE, code="content_policy_violation"), unhealthy=False)
        if code in _CONFIG_CODES or code == "ValidationException":
            logger.error("bedrock rejected darkroom's request", extra={"model": model.id, "code": code})
            return Outcome(UpstreamError(CONFIG_MESSAGE, code="upstream_error"), unhealthy=False)
        logger.error("bedrock call failed", extra={"model": model.id, "code": code[:64]})
        return Outcome(UpstreamError(FAILED_MESSAGE, code="upstream_error"), unhealthy=code == "ModelErrorException")
