"""Files and uploads through `darkroom serve`: the real openai SDK, and a real presigned POST to S3 (moto)."""

from __future__ import annotations

import hashlib
import io

import httpx
import openai
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e


def _image(path, fmt="PNG", size=(96, 64)) -> bytes:
    image = Image.new("RGB", size, (250, 180, 20))
    image.save(path, format=fmt)
    return path.read_bytes()


def test_files_with_the_openai_sdk(tenant, make_tenant, tmp_path, error_body):
    client = tenant.client()
    data = _image(tmp_path / "sunset.png")
    with open(tmp_path / "sunset.png", "rb") as handle:
        created = client.files.create(file=handle, purpose="vision")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        len(data),
        "sunset.png",
        "vision",
        "processed",
    )
    fetched = client.files.retrieve(created.id)
    assert fetched.id == created.id and fetched.bytes == len(data)
    assert [f.id for f in client.files.list()] == [created.id]

    other = make_tenant().client()
    with pytest.raises(openai.NotFoundError) as missing:
        other.files.retrieve(created.id)
    assert missing.value.body["code"] == "file_not_found"
    with pytest.raises(openai.NotFoundError):
        other.files.delete(created.id)
    assert list(other.files.list()) == []

    deleted = client.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)

    (tmp_path / "notes.png").write_bytes(b"%PDF-1.7 not an image at all")
    with open(tmp_path / "notes.png", "rb") as handle, pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=handle, purpose="vision")
    assert (refused.value.body["param"], refused.value.body["code"]) == ("file", "unsupported_image_format")
    with open(tmp_path / "sunset.png", "rb") as handle, pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=handle, purpose="fine-tune")
    assert refused.value.body["param"] == "purpose"
    assert list(client.files.list()) == []


def test_large_input_through_a_presigned_post(tenant, tmp_path, error_body):
    # Files of any size may take this path (it exists for those over Lambda's 6 MB); a small one keeps it quick.
    data = _image(tmp_path / "scan.jpg", "JPEG", (640, 480))
    with httpx.Client(base_url=tenant.base_url, headers=tenant.headers(), timeout=60) as api:
        response = api.post(
            "/uploads",
            json={"filename": "scan.jpg", "purpose": "user_data", "bytes": len(data), "mime_type": "image/jpeg"},
        )
        assert response.status_code == 200, response.text
        upload = response.json()
        assert upload["status"] == "pending" and upload["object"] == "upload"

        # The client talks to S3 (here the stack's moto server) directly: an HTML-form POST, file last.
        target = upload["upload_url"]
        posted = httpx.post(
            target["url"], data=target["fields"], files={"file": ("scan.jpg", data, "image/jpeg")}, timeout=60
        )
        assert posted.status_code in (200, 201, 204), posted.text

        response = api.post(
            f"/uploads/{upload['id']}/complete",
            json={"part_ids": [], "md5": hashlib.md5(data, usedforsecurity=False).hexdigest()},
        )
        assert response.status_code == 200, response.text
        done = response.json()
        assert done["status"] == "completed" and done["file"]["bytes"] == len(data)
        assert (done["file"]["format"], done["file"]["width"], done["file"]["height"]) == ("jpeg", 640, 480)

        again = api.post(f"/uploads/{upload['id']}/complete")
        assert again.status_code == 404 and error_body(again)["code"] == "upload_not_found"

    fetched = tenant.client().files.retrieve(done["file"]["id"])
    assert (fetched.filename, fetched.purpose, fetched.bytes) == ("scan.jpg", "user_data", len(data))


def test_upload_requests_are_checked(tenant, error_body):
    with httpx.Client(base_url=tenant.base_url, headers=tenant.headers(), timeout=60) as api:
        response = api.post(
            "/uploads", json={"filename": "a.png", "purpose": "vision", "bytes": 10**12, "mime_type": "image/png"}
        )
        assert response.status_code == 400 and error_body(response)["param"] == "bytes"
        response = api.post("/uploads/upload_0123456789abcdef01234567/complete")
        assert response.status_code == 404 and error_body(response)["code"] == "upload_not_found"
    response = httpx.post(f"{tenant.base_url}/uploads", json={"filename": "a.png"}, timeout=60)
    assert response.status_code == 401


def test_buffer_upload_is_the_same_as_a_file(tenant):
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(buffer, format="WEBP")
    created = tenant.client().files.create(file=("clear.webp", buffer.getvalue(), "image/webp"), purpose="user_data")
    assert (created.filename, created.purpose) == ("clear.webp", "user_data")
