"""FilesFunction in-process with moto, replaying events/files-*.json and events/uploads-*.json."""

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from lambda_harness import EVENT_FILE_ID, EVENT_KEY, EVENT_UPLOAD_ID, invoke, load_event

ENVELOPE_KEYS = {"message", "type", "param", "code"}


def _naming(name: str, old: str, new: str) -> dict:
    """The committed event with one id swapped for another (path, pathParameters, requestContext)."""
    return json.loads(json.dumps(load_event(name)).replace(old, new))


def _multipart(files=None, data=None) -> dict:
    event = load_event("files-create")
    content_type = "multipart/form-data; boundary=test-boundary"
    body = httpx.Request(
        "POST", "http://x/v1/files", files=files, data=data, headers={"content-type": content_type}
    ).read()
    event["body"] = base64.b64encode(body).decode()
    event["headers"]["content-type"] = content_type
    event["multiValueHeaders"]["content-type"] = [content_type]
    return event


def _png(size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, (1, 2, 3, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def _with_key(event: dict, key: str) -> dict:
    event["headers"]["authorization"] = f"Bearer {key}"
    event["multiValueHeaders"]["authorization"] = [f"Bearer {key}"]
    return event


@pytest.fixture
def other_key(svc):
    other = svc.directory.create_tenant("globex")
    return svc.directory.issue_key(other.tenant_id)[1]


def test_replayed_create_then_retrieve_list_delete(tenant):
    event = load_event("files-create")
    assert event["isBase64Encoded"] is True  # multipart is a binary media type in template.yaml
    status, headers, created = invoke("files", event)
    assert status == 200, created
    assert (created["object"], created["purpose"], created["filename"], created["status"]) == (
        "file",
        "vision",
        "swatch.png",
        "processed",
    )
    assert (created["format"], created["width"], created["height"]) == ("png", 32, 32)
    assert headers["x-request-id"] == event["requestContext"]["requestId"]

    status, _, fetched = invoke("files", _naming("files-retrieve", EVENT_FILE_ID, created["id"]))
    assert status == 200 and fetched == created
    status, _, listed = invoke("files", load_event("files-list"))
    assert status == 200 and listed["object"] == "list" and [f["id"] for f in listed["data"]] == [created["id"]]
    assert listed["has_more"] is False
    status, _, deleted = invoke("files", _naming("files-delete", EVENT_FILE_ID, created["id"]))
    assert status == 200 and deleted == {"id": created["id"], "object": "file", "deleted": True}
    status, _, body = invoke("files", _naming("files-retrieve", EVENT_FILE_ID, created["id"]))
    assert status == 404 and body["error"] == {
        "message": "No file with that id exists.",
        "type": "invalid_request_error",
        "param": "file_id",
        "code": "file_not_found",
    }


def test_unknown_malformed_and_other_tenants_ids_are_404(tenant, other_key):
    for name in ("files-retrieve", "files-delete"):
        status, _, body = invoke("files", load_event(name))
        assert status == 404 and body["error"]["code"] == "file_not_found"
        status, _, body = invoke("files", _naming(name, EVENT_FILE_ID, "file-..%2F..%2Fx"))
        assert status == 404 and body["error"]["code"] == "file_not_found" and "%2F" not in json.dumps(body)
    status, _, created = invoke("files", load_event("files-create"))
    for name in ("files-retrieve", "files-delete"):
        event = _with_key(_naming(name, EVENT_FILE_ID, created["id"]), other_key)
        status, _, body = invoke("files", event)
        assert status == 404 and body["error"]["code"] == "file_not_found"
    status, _, listed = invoke("files", _with_key(load_event("files-list"), other_key))
    assert status == 200 and listed["data"] == []


@pytest.mark.parametrize(
    "files,data,param,code",
    [
        ([("purpose", (None, "vision"))], None, "file", "missing_required_parameter"),
        ([("purpose", (None, "vision")), ("file", (None, "iVBORw0KGgo"))], None, "file", "missing_required_parameter"),
        ([("file", ("a.png", _png(), "image/png"))], None, "purpose", "missing_required_parameter"),
        ([("file", ("a.png", _png(), "image/png"))], {"purpose": "fine-tune"}, "purpose", "invalid_value"),
        (
            [("file", ("a.png", _png(), "image/png"))],
            {"purpose": "vision", "expires_after[seconds]": "60"},
            "expires_after",
            "unsupported_value",
        ),  # the SDK's files.create(expires_after=...): refused, not unknown
        (
            [("file", ("a.png", _png(), "image/png")), ("file", ("b.png", _png(), "image/png"))],
            {"purpose": "vision"},
            "file",
            "invalid_value",
        ),
        (
            [("file", ("notes.png", b"just some text, honest", "image/png"))],
            {"purpose": "vision"},
            "file",
            "unsupported_image_format",
        ),
        ([("file", ("a.png", _png()[:50], "image/png"))], {"purpose": "vision"}, "file", "invalid_image"),
    ],
)
def test_bad_multipart_bodies_are_400_naming_the_field(tenant, svc, files, data, param, code):
    status, _, body = invoke("files", _multipart(files, data))
    assert status == 400, body
    assert set(body["error"]) == ENVELOPE_KEYS
    assert (body["error"]["param"], body["error"]["code"]) == (param, code)
    assert svc.files.list(tenant.tenant_id).data == []


def test_non_multipart_bodies_are_400(tenant):
    event = load_event("files-create", body=json.dumps({"purpose": "vision"}), isBase64Encoded=False)
    event["headers"]["content-type"] = "application/json"
    status, _, body = invoke("files", event)
    assert status == 400 and body["error"]["code"] == "invalid_multipart"
    truncated = load_event("files-create")
    truncated["body"] = base64.b64encode(base64.b64decode(truncated["body"])[:-40]).decode()
    status, _, body = invoke("files", truncated)
    assert status == 400 and body["error"]["code"] == "invalid_multipart"


@pytest.mark.parametrize(
    "query,param", [({"limit": "0"}, "limit"), ({"limit": "many"}, "limit"), ({"after": "../x"}, "after")]
)
def test_bad_list_queries_are_400_naming_the_parameter(tenant, query, param):
    event = load_event(
        "files-list", queryStringParameters=query, multiValueQueryStringParameters={k: [v] for k, v in query.items()}
    )
    status, _, body = invoke("files", event)
    assert status == 400 and (body["error"]["param"], body["error"]["code"]) == (param, "invalid_value"), body


def test_missing_key_is_401_before_the_body_is_read(tenant):
    event = load_event("files-create")
    del event["headers"]["authorization"]
    status, _, body = invoke("files", event)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_upload_create_then_complete(tenant, svc):
    status, _, upload = invoke("files", load_event("uploads-create"))
    assert status == 200, upload
    assert (upload["object"], upload["status"], upload["bytes"], upload["filename"], upload["purpose"]) == (
        "upload",
        "pending",
        2048,
        "lighthouse.png",
        "vision",
    )
    assert upload["expires_at"] > upload["created_at"] and "file" not in upload
    fields = upload["upload_url"]["fields"]
    assert fields["key"] == f"tenants/{tenant.tenant_id}/uploads/{upload['id']}" and upload["upload_url"]["url"]

    data = _png((20, 20))
    data += b"\0" * (2048 - len(data))  # trailing bytes after IEND: still a valid PNG, exactly the declared size
    metadata = {k.removeprefix("x-amz-meta-"): v for k, v in fields.items() if k.startswith("x-amz-meta-")}
    svc.files._s3.put_object(Bucket=svc.settings.images_bucket, Key=fields["key"], Body=data, Metadata=metadata)

    status, _, done = invoke("files", _naming("uploads-complete", EVENT_UPLOAD_ID, upload["id"]))
    assert status == 200, done
    assert done["status"] == "completed" and done["file"]["bytes"] == 2048 and done["file"]["purpose"] == "vision"
    status, _, fetched = invoke("files", _naming("files-retrieve", EVENT_FILE_ID, done["file"]["id"]))
    assert status == 200 and fetched == done["file"]
    status, _, body = invoke("files", _naming("uploads-complete", EVENT_UPLOAD_ID, upload["id"]))
    assert status == 404 and body["error"]["code"] == "upload_not_found"


def test_complete_without_a_body_and_unknown_uploads(tenant):
    status, _, body = invoke("files", load_event("uploads-complete", body=None))
    assert status == 404 and body["error"] == {
        "message": "No pending upload with that id exists.",
        "type": "invalid_request_error",
        "param": "upload_id",
        "code": "upload_not_found",
    }
    for payload, param, code in (
        ({"part_ids": ["part_1"]}, "part_ids", "invalid_value"),
        ({"md5": "nope"}, "md5", "invalid_value"),
        ({"part_ids": [], "bogus": 1}, "bogus", "unknown_parameter"),
    ):
        status, _, body = invoke("files", load_event("uploads-complete", body=json.dumps(payload)))
        assert status == 400 and (body["error"]["param"], body["error"]["code"]) == (param, code), body


@pytest.mark.parametrize(
    "change,param,code",
    [
        ({"bytes": 0}, "bytes", "invalid_value"),
        ({"bytes": 10**12}, "bytes", "file_too_large"),
        ({"purpose": "assistants"}, "purpose", "invalid_value"),
        ({"mime_type": "application/pdf"}, "mime_type", "invalid_value"),
        ({"filename": None}, "filename", "invalid_type"),
        ({"expires_after": {"anchor": "created_at", "seconds": 3600}}, "expires_after", "unsupported_value"),
        ({"expires_after": {"anchor": "created_at", "seconds": "3600"}}, "expires_after.seconds", "invalid_type"),
        ({"bytes": "1024"}, "bytes", "invalid_type"),
        ({"bytes": True}, "bytes", "invalid_type"),
    ],
)
def test_bad_upload_requests_are_400(tenant, change, param, code):
    body = json.loads(load_event("uploads-create")["body"]) | change
    status, _, answer = invoke("files", load_event("uploads-create", body=json.dumps(body)))
    assert status == 400, answer
    assert (answer["error"]["param"], answer["error"]["code"]) == (param, code)
    missing = {k: v for k, v in json.loads(load_event("uploads-create")["body"]).items() if k != "filename"}
    status, _, answer = invoke("files", load_event("uploads-create", body=json.dumps(missing)))
    assert status == 400 and answer["error"]["code"] == "missing_required_parameter"


def test_logs_carry_no_key_bytes_filename_or_presigned_fields(tenant, capsys, caplog):
    caplog.set_level("INFO")
    status, _, created = invoke("files", load_event("files-create"))
    status, _, upload = invoke("files", load_event("uploads-create"))
    assert status == 200
    streams = capsys.readouterr()
    text = streams.out + streams.err + "\n".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert "file stored" in text and "upload created" in text
    for leak in (
        EVENT_KEY,
        "swatch",
        "lighthouse",
        upload["upload_url"]["fields"]["policy"][:40],
        upload["upload_url"]["fields"]["x-amz-signature"],
        load_event("files-create")["body"][:40],
    ):
        assert leak not in text
