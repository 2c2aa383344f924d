"""Images API wire models (``POST /v1/images/generations``), per the OpenAI spec.

JSON ``null`` means "use the default" everywhere, as the OpenAI SDK sends explicit ``None`` values.
Model-specific limits (sizes, ``n``, prompt length) are checked against the catalog in the use case.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OutputFormat = Literal["png", "jpeg", "webp"]
Background = Literal["transparent", "opaque", "auto"]
ResponseFormat = Literal["url", "b64_json"]


class ImageOptions(BaseModel):
    """What generate and edit requests share.

    Extra keys are kept (``model_extra``) so the use case can answer ``unknown_parameter`` by name
    or pass them through when the model's catalog entry allows it.
    """

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    prompt: str = Field(min_length=1, max_length=32000, description="What to draw, or how to change the images.")
    model: str | None = Field(default=None, max_length=256)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = Field(default=None, max_length=32, description="WIDTHxHEIGHT or auto.")
    quality: Literal["auto", "low", "medium", "high", "standard", "hd"] | None = None
    output_format: OutputFormat | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Background | None = None
    moderation: Literal["low", "auto"] | None = None
    user: str | None = Field(default=None, max_length=256)
    response_format: ResponseFormat | None = None
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)


class ImageGenerateRequest(ImageOptions):
    """The body of ``POST /v1/images/generations``."""

    style: Literal["vivid", "natural"] | None = None


class ImageEditRequest(ImageOptions):
    """``POST /v1/images/edits``: the JSON form carries ``images``/``mask`` references; the multipart form
    carries them as file parts and its scalar fields arrive as strings (coerced here)."""

    input_fidelity: Literal["high", "low"] | None = None
    images: list[dict] | None = Field(default=None, description="[{image_url | file_id}], JSON form only.")
    mask: dict | None = Field(default=None, description="{image_url | file_id}, JSON form only.")


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
