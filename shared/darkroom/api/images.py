"""Images API wire models (``POST /v1/images/generations``), per the OpenAI spec.

JSON ``null`` means "use the default" everywhere, as the OpenAI SDK sends explicit ``None`` values.
Model-specific limits (sizes, ``n``, prompt length, output formats) are checked against the catalog in
the use case. Types are strict, as OpenAI's are: an integer is an integer (not ``true``, ``"2"`` or
``1.0``), a boolean a boolean. Multipart edits, whose fields are all text, are converted by the
parameter's type first (:func:`darkroom.api.multipart.typed_fields`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OutputFormat = Literal["png", "jpeg", "webp"]  # what darkroom's encoder writes, and so what it answers with
RequestedFormat = Literal["png", "jpeg", "webp", "gif", "svg"]  # what the SDK can ask for
Background = Literal["transparent", "opaque", "auto"]
ResponseFormat = Literal["url", "b64_json"]


class SvgReasoning(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None


class SvgOptions(BaseModel):
    """``svg``: the SVG author model and its reasoning effort (SDK ``Svg``); only with ``output_format: svg``."""

    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)

    model: str | None = Field(default=None, max_length=256)
    reasoning: SvgReasoning | None = None


class ImageOptions(BaseModel):
    """What generate and edit requests share.

    Extra keys are kept (``model_extra``) so the use case can answer ``unknown_parameter`` by name
    or pass them through when the model's catalog entry allows it.
    """

    model_config = ConfigDict(extra="allow", strict=True, hide_input_in_errors=True)

    prompt: str = Field(min_length=1, max_length=32000, description="What to draw, or how to change the images.")
    model: str | None = Field(default=None, max_length=256)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = Field(default=None, max_length=32, description="WIDTHxHEIGHT or auto.")
    quality: Literal["auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"] | None = Field(
        default=None, description="auto or one of the model's qualities (another is a 400 listing them)."
    )
    output_format: RequestedFormat | None = Field(
        default=None,
        description="png, jpeg or webp; gif and svg are refused (unsupported_value): no model here produces them.",
    )
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Background | None = None
    moderation: Literal["low", "auto"] | None = None
    complexity: Literal["low", "medium", "high"] | None = Field(
        default=None,
        description="Planning effort: passed to models whose catalog entry lists it in passthrough, "
        "otherwise accepted with no effect.",
    )
    frame_count: int | None = Field(default=None, ge=2, le=16, description="GIF only (refused: no GIF output).")
    frame_duration_ms: int | None = Field(default=None, ge=0, description="GIF only (refused: no GIF output).")
    svg: SvgOptions | None = Field(default=None, description="SVG only (refused: no SVG output).")
    safety_identifier: str | None = Field(
        default=None, max_length=256, description="Your end user's stable id: recorded only as a salted hash."
    )
    user: str | None = Field(
        default=None, max_length=256, description="Deprecated for safety_identifier; used when that is empty."
    )
    response_format: ResponseFormat | None = None
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)


class ImageGenerateRequest(ImageOptions):
    """The body of ``POST /v1/images/generations``."""

    style: Literal["vivid", "natural"] | None = None


class ImageEditRequest(ImageOptions):
    """``POST /v1/images/edits``: the JSON form carries ``images``/``mask`` references; the multipart form
    carries them as file parts and its scalar fields arrive as strings (converted by type before validation)."""

    input_fidelity: Literal["high", "low"] | None = None
    images: list[dict[str, Any]] | None = Field(default=None, description="[{image_url | file_id}], JSON form only.")
    mask: dict[str, Any] | None = Field(default=None, description="{image_url | file_id}, JSON form only.")
    markup: dict[str, Any] | None = Field(
        default=None,
        description="A guide overlay (multipart: a file part). No model here supports it: refused (unsupported_value).",
    )


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class InputTokensDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class ImagesUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails


class ImagesResponse(BaseModel):
    """``ImagesResponse``: the images plus the settings they were actually produced with."""

    created: int
    data: list[ImageData]
    size: str | None = None
    quality: str | None = None
    output_format: OutputFormat | None = None
    background: Literal["transparent", "opaque"] | None = None
    usage: ImagesUsage | None = None
