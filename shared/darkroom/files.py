"""Tenant files (``/v1/files``) and large-input uploads (``/v1/uploads``), in S3 only.

A file is one object at ``tenants/{tenant_id}/files/{file_id}``; what the API reports about it
(filename, purpose, format, size in pixels, creation time) rides in the object's user metadata, so
there is no table. Because the key embeds the tenant, another tenant's file id is simply a key that
does not exist: a 404 by construction, with no ownership check to forget.

Every stored file went through :func:`darkroom.intake.open_image` first: only still png, jpeg, webp
and gif images are kept, whatever the client declared. The original bytes are stored (what is
stored is only ever read back through the intake again, which re-decodes it).

Uploads replace OpenAI's parts-based Uploads API: Lambda accepts at most 6 MB per request, so the
client sends the bytes straight to S3 with a presigned ``POST`` (policy: this key, these metadata
values, at most the declared size), then calls ``complete``, which runs the same intake and turns the
staged object into a file.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote

from botocore.exceptions import ClientError

from darkroom.api.errors import InvalidRequest, NotFound, UnknownParameter
from darkroom.api.files import FileDeleted, FileList, FileObject, Upload, UploadUrl
from darkroom.api.multipart import Form
from darkroom.intake import ImageRejected, IntakeLimits, open_image
from darkroom.observability import logger

PURPOSES = frozenset({"vision", "user_data"})
# Both purposes take the same formats: gif is an input-only format (vision models read it), and edits
# re-check the format with their own limits when they read a file.
FILE_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
UPLOAD_ID = re.compile(r"^upload_[0-9a-f]{24}$")
MAX_FILENAME_CHARS = 255
# S3 allows 2 KB of user metadata in all; the percent-encoded filename gets at most half.
MAX_FILENAME_METADATA = 1024
# Characters kept as they are in the metadata value; everything else is percent-encoded to ASCII.
_FILENAME_SAFE = " ()+,-._@"
LIST_PAGE_MAX = 100
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


def file_key(tenant_id: str, file_id: str) -> str:
    return f"tenants/{tenant_id}/files/{file_id}"


def upload_key(tenant_id: str, upload_id: str) -> str:
    return f"tenants/{tenant_id}/uploads/{upload_id}"


def clean_filename(name: str | None) -> str:
    """The client's file name without directories or control characters, at most 255 characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable()).strip()[:MAX_FILENAME_CHARS]


def encode_filename(name: str) -> str:
    """``name`` as an ASCII metadata value (percent-encoded), cut at whole characters to fit the cap."""
    encoded, size = [], 0
    for ch in name:
        part = quote(ch, safe=_FILENAME_SAFE)
        if size + len(part) > MAX_FILENAME_METADATA:
            break
        encoded.append(part)
        size += len(part)
    return "".join(encoded)


def _int(metadata: Mapping[str, str], name: str, default: int = 0) -> int:
    try:
        return int(metadata.get(name, default))
    except (TypeError, ValueError):
        return default


def _missing(exc: ClientError) -> bool:
    # Without s3:ListBucket on the key, S3 answers 403 rather than 404 for a key that does not exist;
    # the functions' ListBucket is limited to the tenants/ prefix, which GetObject requests do not carry.
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") in _MISSING or status in (403, 404)


def file_not_found(param: str) -> NotFound:
    return NotFound("No file with that id exists.", param=param, code="file_not_found")


def upload_not_found() -> NotFound:
    return NotFound("No pending upload with that id exists.", param="upload_id", code="upload_not_found")


# The SDK's expires_after (files.create, uploads.create): a file cannot outlive or predate the bucket lifecycle
# (ImageRetentionDays) here, so a per-file expiry is refused rather than silently not kept.
def expiry_refused() -> InvalidRequest:
    return InvalidRequest(
        "Per-file expiry is not supported: files expire with the bucket's retention period; omit 'expires_after'.",
        param="expires_after",
        code="unsupported_value",
    )


def parse_file_form(form: Form) -> tuple[str | None, str, bytes]:
    """(filename, purpose, bytes) of a ``POST /v1/files`` multipart form; 400 for anything else in it."""
    for name in (*form.fields, *form.files):
        if name == "expires_after" or name.startswith("expires_after["):  # the SDK sends expires_after[seconds]
            raise expiry_refused()
        if name not in ("file", "purpose"):
            raise UnknownParameter(name)
    parts = form.files.get("file", [])
    if not parts:
        # A ``file`` sent as a plain field (no filename) is not a file part.
        raise InvalidRequest(
            "Missing required parameter: 'file' (a file part).", param="file", code="missing_required_parameter"
        )
    purposes = form.fields.get("purpose", [])
    if not purposes:
        raise InvalidRequest(
            "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
        )
    if len(parts) > 1 or "file" in form.fields:
        raise InvalidRequest("Send exactly one 'file'.", param="file", code="invalid_value")
    if len(purposes) > 1:
        raise InvalidRequest("Send exactly one 'purpose'.", param="purpose", code="invalid_value")
    return parts[0].filename, purposes[0], parts[0].data


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise InvalidRequest(
            "Invalid value for 'purpose': darkroom stores images for 'vision' or 'user_data'.",
            param="purpose",
            code="invalid_value",
        )


class FileStore:
    """Files and uploads of every tenant in one bucket, under each tenant's prefix."""

    def __init__(
        self,
        s3: Any,  # a boto3 S3 client (untyped: only boto3-stubs' base package is installed)
        bucket: str,
        presign_seconds: int,
        max_bytes: int = 50 * 1024 * 1024,
        max_pixels: int = IntakeLimits.max_pixels,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._presign_seconds = presign_seconds
        self.max_bytes = max_bytes
        # The edit intake's pixel bound too: a file no edit could decode is not worth storing.
        self.limits = IntakeLimits(
            max_image_bytes=max_bytes, max_total_bytes=max_bytes, max_pixels=max_pixels, formats=FILE_FORMATS
        )

    # files

    def create(self, tenant_id: str, filename: str | None, purpose: str, data: bytes) -> FileObject:
        """Validate ``data`` as an image (400 otherwise, nothing stored) and store it as a new file."""
        _check_purpose(purpose)
        file_id = "file-" + secrets.token_hex(12)
        return self._store(tenant_id, file_id, filename, purpose, data, int(time.time()))

    def get(self, tenant_id: str, file_id: str, *, param: str = "file_id") -> FileObject:
        """The tenant's file; 404 ``file_not_found`` for a malformed id, another tenant's id or none at all."""
        if not FILE_ID.fullmatch(file_id):
            raise file_not_found(param)  # before any S3 call: nothing to look up
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=file_key(tenant_id, file_id))
        except ClientError as exc:
            if _missing(exc):
                raise file_not_found(param) from None
            raise
        return self._file_object(file_id, head)

    def read(self, tenant_id: str, file_id: str, *, param: str) -> bytes:
        """The file's bytes (the :class:`darkroom.intake.FileReader` protocol): 404 naming ``param`` when the
        tenant has no such file, 400 ``image_too_large`` past the size cap (read with that bound)."""
        if not FILE_ID.fullmatch(file_id):
            raise file_not_found(param)
        data = self._bounded_get(file_key(tenant_id, file_id), missing=lambda: file_not_found(param))
        if len(data) > self.max_bytes:
            raise ImageRejected(
                f"The file in '{param}' is larger than {self.max_bytes} bytes.", param=param, code="image_too_large"
            )
        return data

    def delete(self, tenant_id: str, file_id: str) -> dict[str, Any]:
        """Delete the tenant's file: ``{"id", "object": "file", "deleted": true}``; 404 when there is none."""
        self.get(tenant_id, file_id)  # S3 deletes are idempotent; the API answers 404 for unknown ids
        self._s3.delete_object(Bucket=self._bucket, Key=file_key(tenant_id, file_id))
        logger.info("file deleted", extra={"file_id": file_id})
        return FileDeleted(id=file_id).model_dump()

    def list(self, tenant_id: str, *, limit: int = 20, after: str | None = None) -> FileList:
        """One page of the tenant's files ordered by id (S3 key order); ``after`` is the previous page's
        last id. Pages hold at most 100 files (each needs a HEAD for its metadata)."""
        if after is not None and not FILE_ID.fullmatch(after):
            raise InvalidRequest("Invalid value for 'after': expected a file id.", param="after", code="invalid_value")
        prefix = file_key(tenant_id, "")
        args = {"Bucket": self._bucket, "Prefix": prefix, "MaxKeys": max(1, min(limit, LIST_PAGE_MAX))}
        if after:
            args["StartAfter"] = prefix + after
        page = self._s3.list_objects_v2(**args)
        files = []
        for item in page.get("Contents", []):
            file_id = item["Key"][len(prefix) :]
            if not FILE_ID.fullmatch(file_id):
                continue
            try:
                files.append(self._file_object(file_id, self._s3.head_object(Bucket=self._bucket, Key=item["Key"])))
            except ClientError as exc:
                if not _missing(exc):  # deleted between the listing and the HEAD: leave it out
                    raise
        return FileList(
            data=files,
            first_id=files[0].id if files else None,
            last_id=files[-1].id if files else None,
            has_more=bool(page.get("IsTruncated")),
        )

    # uploads

    def create_upload(self, tenant_id: str, *, filename: str, purpose: str, size: int, mime_type: str) -> Upload:
        """A pending upload with a presigned ``POST`` for at most ``size`` bytes to its staging key.

        Purpose, filename, size and times are form fields the signed policy pins to these values, so
        S3 refuses the upload if the client changes them and ``complete`` needs no table.
        """
        _check_purpose(purpose)
        if size > self.max_bytes:
            raise InvalidRequest(
                f"Uploads are limited to {self.max_bytes} bytes.", param="bytes", code="file_too_large"
            )
        upload_id = "upload_" + secrets.token_hex(12)
        created_at = int(time.time())
        upload = Upload(
            id=upload_id,
            bytes=size,
            created_at=created_at,
            expires_at=created_at + self._presign_seconds,
            filename=clean_filename(filename) or upload_id,
            purpose=purpose,
            status="pending",
        )
        logger.info("upload created", extra={"upload_id": upload_id, "bytes": size})
        return self.sign_upload(tenant_id, upload, mime_type)

    def sign_upload(self, tenant_id: str, upload: Upload, mime_type: str) -> Upload:
        """``upload`` with a presigned ``POST`` to its staging key, valid until its ``expires_at``.

        Signing the same pending upload again (an ``Idempotency-Key`` replay) gives a fresh signature
        for the same key and the same pinned values, so nothing signed has to be stored.
        """
        fields = {
            "x-amz-meta-filename": encode_filename(upload.filename),
            "x-amz-meta-purpose": upload.purpose,
            "x-amz-meta-bytes": str(upload.bytes),
            "x-amz-meta-mime-type": mime_type,
            "x-amz-meta-created-at": str(upload.created_at),
            "x-amz-meta-expires-at": str(upload.expires_at),
            "x-amz-server-side-encryption": "AES256",
        }
        post = self._s3.generate_presigned_post(
            Bucket=self._bucket,
            Key=upload_key(tenant_id, upload.id),
            Fields=fields,
            Conditions=[{name: value} for name, value in fields.items()] + [["content-length-range", 1, upload.bytes]],
            ExpiresIn=max(1, upload.expires_at - int(time.time())),
        )
        return upload.model_copy(update={"upload_url": UploadUrl(url=post["url"], fields=post["fields"])})

    def complete_upload(self, tenant_id: str, upload_id: str, *, md5: str | None = None) -> Upload:
        """Turn the staged bytes into a file (same intake as :meth:`create`) and drop the staged object.

        The file id is derived from the upload id, so a repeated or racing ``complete`` writes the same
        file rather than two. On any 400 the staged object stays (the client may POST it again while
        the URL is valid); the bucket lifecycle removes abandoned uploads.
        """
        if not UPLOAD_ID.fullmatch(upload_id):
            raise upload_not_found()
        key = upload_key(tenant_id, upload_id)
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                raise upload_not_found() from None
            raise
        metadata = head.get("Metadata", {})
        declared = _int(metadata, "bytes")
        if head["ContentLength"] > self.max_bytes:
            raise InvalidRequest(
                f"Uploads are limited to {self.max_bytes} bytes.", param="bytes", code="file_too_large"
            )
        if head["ContentLength"] != declared:
            raise InvalidRequest(
                "The uploaded bytes do not match the size declared when the upload was created.",
                param="bytes",
                code="upload_size_mismatch",
            )
        purpose = metadata.get("purpose", "")
        _check_purpose(purpose)
        # The object can be replaced while the POST URL is valid: read with the bound, check again.
        data = self._bounded_get(key, missing=upload_not_found)
        if len(data) != declared:
            raise InvalidRequest(
                "The uploaded bytes do not match the size declared when the upload was created.",
                param="bytes",
                code="upload_size_mismatch",
            )
        if md5 is not None and hashlib.md5(data, usedforsecurity=False).hexdigest() != md5.lower():
            raise InvalidRequest("The uploaded bytes do not match 'md5'.", param="md5", code="md5_mismatch")
        file_id = "file-" + upload_id.removeprefix("upload_")
        created_at = _int(metadata, "created-at", int(time.time()))
        file = self._store(tenant_id, file_id, unquote(metadata.get("filename", "")), purpose, data, int(time.time()))
        self._s3.delete_object(Bucket=self._bucket, Key=key)
        return Upload(
            id=upload_id,
            bytes=declared,
            created_at=created_at,
            expires_at=_int(metadata, "expires-at", created_at + self._presign_seconds),
            filename=file.filename,
            purpose=purpose,
            status="completed",
            file=file,
        )

    # internals

    def _store(
        self, tenant_id: str, file_id: str, filename: str | None, purpose: str, data: bytes, created_at: int
    ) -> FileObject:
        image = open_image(data, param="file", limits=self.limits)  # raises before anything is stored
        width, height = image.size
        name = clean_filename(filename) or f"{file_id}.{EXTENSIONS[image.format]}"
        self._s3.put_object(
            Bucket=self._bucket,
            Key=file_key(tenant_id, file_id),
            Body=data,
            ContentType=CONTENT_TYPES[image.format],  # server-chosen from the bytes, never the client's
            ServerSideEncryption="AES256",
            Metadata={
                "filename": encode_filename(name),
                "purpose": purpose,
                "format": image.format,
                "width": str(width),
                "height": str(height),
                "created-at": str(created_at),
            },
        )
        logger.info("file stored", extra={"file_id": file_id, "bytes": len(data), "format": image.format})
        return FileObject(
            id=file_id,
            bytes=len(data),
            created_at=created_at,
            filename=unquote(encode_filename(name)),
            purpose=purpose,
            format=image.format,
            width=width,
            height=height,
        )

    def _bounded_get(self, key: str, *, missing: Callable[[], NotFound]) -> bytes:
        # One byte past the cap is enough to know the object is too large, without reading all of it.
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key, Range=f"bytes=0-{self.max_bytes}")
        except ClientError as exc:
            if _missing(exc):
                raise missing() from None
            raise
        with response["Body"] as body:
            data: bytes = body.read(self.max_bytes + 1)
        return data

    @staticmethod
    def _file_object(file_id: str, head: Mapping[str, Any]) -> FileObject:  # a HeadObject response
        metadata = head.get("Metadata", {})
        created = head.get("LastModified")
        return FileObject(
            id=file_id,
            bytes=head["ContentLength"],
            created_at=_int(metadata, "created-at", int(created.timestamp()) if created else 0),
            filename=unquote(metadata.get("filename", "")) or file_id,
            purpose=metadata.get("purpose", ""),
            format=metadata.get("format") or None,
            width=_int(metadata, "width") or None,
            height=_int(metadata, "height") or None,
        )
