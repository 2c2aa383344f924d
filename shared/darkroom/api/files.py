"""Files and Uploads API wire models (``/v1/files``, ``/v1/uploads``), per the OpenAI spec.

darkroom stores images only, so ``purpose`` is ``vision`` or ``user_data`` and a file also reports its
``format``, ``width`` and ``height`` (extensions; OpenAI clients ignore them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

Purpose = Literal["vision", "user_data"]
ImageMediaType = Literal["image/png", "image/jpeg", "image/webp", "image/gif"]


class FileObject(BaseModel):
    """A stored file (OpenAI ``FileObject``)."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    format: str | None = Field(default=None, description="png, jpeg, webp or gif (darkroom extension).")
    width: int | None = Field(default=None, description="Pixels, orientation applied (darkroom extension).")
    height: int | None = Field(default=None, description="Pixels, orientation applied (darkroom extension).")


class FileList(BaseModel):
    """``GET /v1/files``: one page, ordered by file id; pass the last id as ``after`` for the next."""

    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    @model_serializer(mode="wrap")
    # Unannotated on purpose: pydantic would take a return annotation as this model's serialization schema.
    def _wire(self, handler):  # type: ignore[no-untyped-def]
        body = handler(self)
        for name in ("first_id", "last_id"):  # required by the spec's ListFilesResponse; null on an empty page
            body.setdefault(name, None)
        return body


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class ExpiresAfter(BaseModel):
    """The SDK's ``expires_after``: typed here, refused by the handler (files expire with the bucket lifecycle)."""

    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)

    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2592000)


class UploadCreateRequest(BaseModel):
    """The body of ``POST /v1/uploads``. Extra keys are kept so the handler can name them (``unknown_parameter``).
    Types are strict, as OpenAI's: ``bytes`` is an integer, not ``"1024"``."""

    model_config = ConfigDict(extra="allow", strict=True, hide_input_in_errors=True)

    filename: str = Field(min_length=1, max_length=1024)
    purpose: Purpose
    bytes: int = Field(ge=1, description="The exact size of the file; at most DARKROOM_MAX_UPLOAD_BYTES.")
    mime_type: ImageMediaType = Field(description="Informational: the format is decided by the bytes.")
    expires_after: ExpiresAfter | None = Field(
        default=None, description="Refused (unsupported_value): files expire with the bucket lifecycle."
    )


class UploadCompleteRequest(BaseModel):
    """The body of ``POST /v1/uploads/{upload_id}/complete`` (optional). darkroom has no parts: ``part_ids``
    is accepted for SDK compatibility and must be empty; ``md5``, when sent, is checked against the bytes."""

    model_config = ConfigDict(extra="allow", strict=True, hide_input_in_errors=True)

    part_ids: list[str] | None = Field(default=None, max_length=0)
    md5: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")


class UploadUrl(BaseModel):
    """Where to send the bytes: an HTML-form ``POST`` of ``fields`` followed by the ``file`` part."""

    url: str
    fields: dict[str, str]


class Upload(BaseModel):
    """OpenAI ``Upload``, plus ``upload_url`` (darkroom extension, while ``pending``)."""

    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed"]
    file: FileObject | None = None
    upload_url: UploadUrl | None = None
