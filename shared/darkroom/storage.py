"""Images in S3 under the tenant's prefix, handed out as short-lived presigned GET URLs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def image_key(tenant_id: str, request_id: str, index: int, output_format: str, now: datetime | None = None) -> str:
    """``tenants/{tenant}/images/{yyyy}/{mm}/{dd}/{request}/{index}.{ext}``: server-chosen, never client input."""
    now = now or datetime.now(UTC)
    ext = "jpg" if output_format == "jpeg" else output_format
    return f"tenants/{tenant_id}/images/{now:%Y/%m/%d}/{request_id}/{index}.{ext}"


class ImageStore:
    # ``s3``: a boto3 S3 client (untyped: only boto3-stubs' base package is installed).
    def __init__(self, s3: Any, bucket: str, presign_seconds: int) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._presign_seconds = presign_seconds

    def put(self, key: str, data: bytes, output_format: str) -> None:
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=data,
            ContentType=CONTENT_TYPES[output_format],
            ServerSideEncryption="AES256",
        )

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self._bucket, Key=key)

    def get(self, key: str) -> bytes:
        data: bytes = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        return data

    def presign(self, key: str, output_format: str) -> str:
        """A SigV4 GET URL that serves the object with a fixed type, inline, for ``presign_seconds``."""
        filename = key.rsplit("/", 1)[-1]
        url: str = self._s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "ResponseContentType": CONTENT_TYPES[output_format],
                "ResponseContentDisposition": f'inline; filename="{filename}"',
            },
            ExpiresIn=self._presign_seconds,
        )
        return url
