"""Responses API wire models (``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``).

What darkroom serves is modelled strictly (strict types, as OpenAI's); sampling knobs that common
clients always send (``temperature``, ``top_p``, ...) are accepted, type-checked and ignored
(:class:`ResponseOptions`), so an unmodified client works.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer


class AccessPrograms(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", hide_input_in_errors=True)

    cyber: Literal["standard", "daybreak_blue", "daybreak_red"] | None = None


class BackgroundOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", hide_input_in_errors=True)

    completion_window: Literal["soonest", "2h", "8h"] | None = None
    continuation_id: str | None = Field(default=None, max_length=256)


class ImageContextOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", hide_input_in_errors=True)

    context_compression: Literal["auto", "enabled", "disabled"] | None = None


class ResponseOptions(BaseModel):
    """The ``POST /v1/responses`` parameters of the current SDK that darkroom does not act on, typed as the SDK
    types them (a wrong type is still a 400). Validated from :class:`ResponseCreateRequest`'s extra keys by
    :mod:`darkroom.responses`, which refuses the values it cannot honour; a key not here is ``unknown_parameter``.
    README "Parameters of the current SDK" gives the reason for each."""

    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)

    # Accepted, no effect: darkroom's models have nothing to sample, cache, truncate, compact or reason with.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=0)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    parallel_tool_calls: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    include: list[str] | None = None
    service_tier: str | None = Field(default=None, max_length=32)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None
    stream_options: dict[str, Any] | None = None
    # Accepted with the values darkroom honours; the others are unsupported_value.
    access_programs: AccessPrograms | None = None
    background_options: BackgroundOptions | None = None
    image: ImageContextOptions | None = None
    # Refused when set (unsupported_value): no Conversations API, no prompt templates, no moderation model.
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None


class ResponseCreateRequest(BaseModel):
    """The body of ``POST /v1/responses``. Input items are validated by :mod:`darkroom.responses`; the SDK's
    other parameters arrive as extra keys and are checked there against :class:`ResponseOptions`."""

    model_config = ConfigDict(extra="allow", strict=True, hide_input_in_errors=True)

    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] = Field(description="A string, or a list of input items.")
    instructions: str | None = Field(default=None, max_length=32000)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=64)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=8)
    tool_choice: str | dict[str, Any] | None = None
    stream: bool | None = None
    background: bool | None = Field(
        default=None, description="Answer at once (queued) and run the work in a background job."
    )
    safety_identifier: str | None = Field(
        default=None, max_length=128, description="Your end user's stable id: recorded only as a salted hash."
    )
    user: str | None = Field(
        default=None, max_length=256, description="Deprecated: recorded like safety_identifier when that is empty."
    )


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list[Any])
    logprobs: list[Any] = Field(default_factory=list[Any])


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["completed"] = "completed"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ImageGenerationCall(BaseModel):
    """``image_generation_call``: ``result`` is the image as base64; ``url`` (darkroom) a presigned link."""

    type: Literal["image_generation_call"] = "image_generation_call"
    id: str
    status: Literal["completed", "in_progress", "generating", "failed"] = "completed"
    result: str | None = None
    revised_prompt: str | None = None
    action: Literal["generate", "edit"] | None = None
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    background: str | None = None
    url: str | None = None

    @model_serializer(mode="wrap")
    # Unannotated on purpose: pydantic would take a return annotation as this model's serialization schema.
    def _wire(self, handler):  # type: ignore[no-untyped-def]
        body = handler(self)
        body.setdefault("result", None)  # required by the spec, null until the image exists
        return body


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # required by the spec since 2026; darkroom caches no prompts


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int
    images: int = 0  # darkroom: images produced by this response


# Response keys the spec requires but allows to be null (openai-openapi, components/schemas/Response).
REQUIRED_NULLABLE = ("error", "incomplete_details", "instructions", "temperature", "top_p")

# ResponseErrorCode: the codes a failed response's ``error.code`` may have.
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)
# darkroom's own codes (its HTTP errors) with a ResponseErrorCode of the same meaning; any other is server_error.
_RESPONSE_ERROR_EQUIVALENTS = {
    "content_policy_violation": "invalid_prompt",
    "moderation_blocked": "invalid_prompt",
    "invalid_base64": "invalid_base64_image",
    "unsupported_image_format": "invalid_image_format",
}


def response_error(error: dict[str, Any]) -> dict[str, Any]:
    """A failed response's ``error`` as the spec has it: ``{code, message}`` with a ``ResponseErrorCode``."""
    code = error.get("code") or "server_error"
    code = code if code in RESPONSE_ERROR_CODES else _RESPONSE_ERROR_EQUIVALENTS.get(code, "server_error")
    return {"code": code, "message": str(error.get("message") or "Internal error")}


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"] = "completed"
    background: bool = False
    model: str
    output: list[OutputMessage | ImageGenerationCall]
    instructions: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    previous_response_id: str | None = None
    store: bool = True
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    usage: ResponseUsage | None = None

    @model_serializer(mode="wrap")
    # Unannotated on purpose: pydantic would take a return annotation as this model's serialization schema.
    def _wire(self, handler):  # type: ignore[no-untyped-def]
        """As OpenAI's ``Response``: the keys it requires are there even when null (``exclude_none`` too), and
        ``usage`` is left out until there is one: the spec makes it optional but not nullable."""
        body = handler(self)
        for name in REQUIRED_NULLABLE:
            body.setdefault(name, None)
        if "usage" in body and body["usage"] is None:
            del body["usage"]
        return body


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
