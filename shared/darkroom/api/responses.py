"""Responses API wire models (``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``).

Only what darkroom serves is modelled strictly; sampling knobs that common clients always send
(``temperature``, ``top_p``, ...) are accepted and ignored, so an unmodified client works.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Accepted for compatibility; the local backends have nothing to sample.
IGNORED_PARAMETERS = frozenset({
    "temperature", "top_p", "max_output_tokens", "parallel_tool_calls", "truncation", "reasoning", "text",
    "include", "service_tier", "user", "top_logprobs", "max_tool_calls", "safety_identifier", "prompt_cache_key",
})


class ResponseCreateRequest(BaseModel):
    """The body of ``POST /v1/responses``. Input items are validated by :mod:`darkroom.responses`."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] = Field(description="A string, or a list of input items.")
    instructions: str | None = Field(default=None, max_length=32000)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=64)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=8)
    tool_choice: str | dict[str, Any] | None = None
    stream: bool | None = None
    background: bool | None = Field(default=None,
                                    description="Answer at once (queued) and run the work in a background job.")


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list = Field(default_factory=list)
    logprobs: list = Field(default_factory=list)


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


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int
    images: int = 0  # darkroom: images produced by this response


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
    text: dict = Field(default_factory=lambda: {"format": {"type": "text"}})
    error: dict | None = None
    incomplete_details: dict | None = None
    usage: ResponseUsage | None = None


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
