"""Idempotency-Key through the functions' handlers with moto: retries of generate, edit and the file POSTs.

Every invocation gets its own API Gateway request id, as a real retry does: without Idempotency-Key
it would store its images under new S3 keys and be admitted and billed again.
"""

import base64
import binascii
import io
import json
import threading
import uuid

import httpx
import pytest
from PIL import Image

from darkroom import config
from darkroom.api.http import HttpRequest
from darkroom.generation import generate_images
from darkroom.idempotency import images_outcome, images_replay, request_fingerprint, run_once
from darkroom.ports import RequestContext
from lambda_harness import EVENT_KEY, EVENT_UPLOAD_ID, Context, invoke, load_event

ROUTE = "POST /v1/images/generations"


def _keyed(event: dict, key: str | None, api_key: str = EVENT_KEY) -> dict:
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    for name, value in (("Idempotency-Key", key), ("authorization", f"Bearer {api_key}")):
        if value is not None:
            event["headers"][name] = value
            event["multiValueHeaders"][name] = [value]
    return event


def _generate(key: str | None, body: dict | None = None, api_key: str = EVENT_KEY) -> dict:
    event = load_event("generate")
    if body is not None:
        event["body"] = json.dumps(body)
    return _keyed(event, key, api_key)


def _edit(key: str, image: bytes, prompt: str = "make it blue") -> dict:
    # httpx picks a new random boundary for every request, as the openai SDK does for every attempt.
    request = httpx.Request(
        "POST",
        "http://x/v1/images/edits",
        files=[("image", ("photo.png", image, "image/png"))],
        data={"prompt": prompt, "response_format": "b64_json"},
    )
    event = load_event("edit")
    event["headers"]["content-type"] = request.headers["content-type"]
    event["multiValueHeaders"]["content-type"] = [request.headers["content-type"]]
    event["body"], event["isBase64Encoded"] = base64.b64encode(request.read()).decode(), True
    return _keyed(event, key)


def _png(size=(48, 48), colour=(10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _records(svc) -> list[dict]:
    return config.client("dynamodb").scan(TableName=svc.settings.idempotency_table)["Items"]


def _admitted_requests(svc, tenant) -> int:
    """The tenant's requests-per-minute counters summed (a minute boundary splits them over two items)."""
    items = config.client("dynamodb").scan(TableName=svc.settings.rate_limits_table)["Items"]
    return sum(int(item["count"]["N"]) for item in items if item["pk"]["S"].startswith(f"{tenant.tenant_id}#requests#"))


def _path(url: str) -> str:
    return url.split("?", 1)[0]


@pytest.fixture
def other_key(svc):
    other = svc.directory.create_tenant("globex")
    return svc.directory.issue_key(other.tenant_id)[1]


def test_a_retried_generate_returns_the_same_images_admitted_and_billed_once(tenant, svc):
    status, headers, first = invoke("generate", _generate("gen-1"))
    assert status == 200 and "idempotent-replayed" not in headers
    status, headers, again = invoke("generate", _generate("gen-1"))
    assert status == 200 and headers["idempotent-replayed"] == "true"
    assert [_path(d["url"]) for d in again["data"]] == [_path(d["url"]) for d in first["data"]]  # same S3 keys
    assert [d["b64_json"] for d in again["data"]] == [d["b64_json"] for d in first["data"]]  # same bytes
    assert {k: v for k, v in again.items() if k != "data"} == {k: v for k, v in first.items() if k != "data"}
    assert len(svc.meter.records(tenant.tenant_id)) == 1
    assert _admitted_requests(svc, tenant) == 1


def test_url_answers_replay_fresh_urls_to_the_same_objects_without_b64(tenant, svc):
    body = {"prompt": "a red fox", "size": "256x256", "n": 2, "response_format": "url"}
    _, _, first = invoke("generate", _generate("gen-url", body))
    status, headers, again = invoke("generate", _generate("gen-url", body))
    assert status == 200 and headers["idempotent-replayed"] == "true"
    assert all("b64_json" not in d and "X-Amz-Signature" in d["url"] for d in again["data"])
    assert [_path(d["url"]) for d in again["data"]] == [_path(d["url"]) for d in first["data"]]
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_the_same_key_with_a_different_body_is_400_and_generates_nothing(tenant, svc):
    invoke("generate", _generate("gen-reused", {"prompt": "a lighthouse", "size": "256x256"}))
    status, _, answer = invoke("generate", _generate("gen-reused", {"prompt": "a harbour", "size": "256x256"}))
    assert status == 400 and answer["error"]["code"] == "idempotency_key_reused"
    assert answer["error"]["param"] is None and "harbour" not in json.dumps(answer)
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_the_same_key_from_another_tenant_is_unrelated(tenant, svc, other_key):
    _, _, ours = invoke("generate", _generate("shared-key"))
    status, headers, theirs = invoke("generate", _generate("shared-key", api_key=other_key))
    assert status == 200 and "idempotent-replayed" not in headers
    assert _path(theirs["data"][0]["url"]) != _path(ours["data"][0]["url"])
    assert tenant.tenant_id not in theirs["data"][0]["url"]
    assert len(_records(svc)) == 2


def test_a_failed_request_leaves_no_record_and_its_retry_generates(tenant, svc, monkeypatch):

    def explode(*args, **kwargs):
        raise RuntimeError("backend down")

    with monkeypatch.context() as patch:
        patch.setattr(svc, "backends", lambda model: type("B", (), {"generate": explode})())
        assert invoke("generate", _generate("gen-after-failure"))[0] == 500
    assert _records(svc) == []
    status, headers, _ = invoke("generate", _generate("gen-after-failure"))
    assert status == 200 and "idempotent-replayed" not in headers
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_a_refused_request_leaves_no_record_either(tenant, svc):
    body = {"prompt": "x", "size": "7x7"}  # refused by the model's catalog entry, inside the idempotent run
    for _ in range(2):
        status, _, answer = invoke("generate", _generate("gen-refused", body))
        assert status == 400 and answer["error"]["param"] == "size"
    assert _records(svc) == []


def test_the_record_is_a_small_reference_without_images_prompts_urls_or_the_key(tenant, svc, capsys, caplog):
    caplog.set_level("INFO")
    key = "client-chosen-key-0123456789"
    _, _, first = invoke("generate", _generate(key))
    invoke("generate", _generate(key))
    [record] = _records(svc)
    text = json.dumps(record)
    assert len(text) < 2048
    for leak in (first["data"][0]["b64_json"][:40], "lighthouse", key, "X-Amz-Signature", "https://", EVENT_KEY):
        assert leak not in text
    assert _path(first["data"][0]["url"]).split(".amazonaws.com/", 1)[1] in text  # the S3 key is the reference
    logs = capsys.readouterr()
    logged = logs.out + logs.err + "\n".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert "idempotent replay" in logged and key not in logged


def test_a_request_still_running_is_409_with_retry_after_then_replayed(tenant, svc):
    event = _generate("gen-slow")
    started, release = threading.Event(), threading.Event()
    first: list = []
    body = json.loads(event["body"])

    def slow():  # the first request, still generating when the retry arrives
        started.set()
        release.wait(10)
        from darkroom.api.images import ImageGenerateRequest

        return images_outcome(
            generate_images(RequestContext(tenant, "req-first"), ImageGenerateRequest.model_validate(body), svc.images)
        )

    fingerprint = request_fingerprint(HttpRequest.from_event(event))
    worker = threading.Thread(
        target=lambda: first.append(
            run_once(
                "gen-slow",
                tenant_id=tenant.tenant_id,
                route=ROUTE,
                fingerprint=lambda: fingerprint,
                produce=slow,
                render=images_replay(svc.store),
                lambda_context=Context(),
            )
        )
    )
    worker.start()
    assert started.wait(10)
    try:
        status, headers, answer = invoke("generate", _generate("gen-slow"))
    finally:
        release.set()
        worker.join(10)
    assert status == 409 and headers["retry-after"] == "5"
    assert answer["error"]["code"] == "idempotency_request_in_progress" and answer["error"]["param"] is None
    status, headers, again = invoke("generate", _generate("gen-slow"))
    assert status == 200 and headers["idempotent-replayed"] == "true"
    assert again["data"][0]["b64_json"] == json.loads(first[0].body)["data"][0]["b64_json"]
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_without_a_header_every_request_generates_and_nothing_is_recorded(tenant, svc):
    for _ in range(2):
        status, headers, _ = invoke("generate", _generate(None))
        assert status == 200 and "idempotent-replayed" not in headers
    assert _records(svc) == [] and len(svc.meter.records(tenant.tenant_id)) == 2


def test_a_malformed_key_is_400_before_any_work(tenant, svc):
    status, _, answer = invoke("generate", _generate("k" * 256))
    assert status == 400 and (answer["error"]["code"], answer["error"]["param"]) == ("invalid_idempotency_key", None)
    assert svc.meter.records(tenant.tenant_id) == [] and _admitted_requests(svc, tenant) == 0


# edits: multipart bodies differ in their boundary on every attempt


def test_a_retried_multipart_edit_is_replayed_despite_a_new_boundary(tenant, svc):
    first_event, retry_event = _edit("edit-1", _png()), _edit("edit-1", _png())
    assert first_event["headers"]["content-type"] != retry_event["headers"]["content-type"]
    status, _, first = invoke("edit", first_event)
    assert status == 200, first
    status, headers, again = invoke("edit", retry_event)
    assert status == 200 and headers["idempotent-replayed"] == "true"
    assert again["data"][0]["b64_json"] == first["data"][0]["b64_json"]
    assert len(svc.meter.records(tenant.tenant_id)) == 1
    status, _, answer = invoke("edit", _edit("edit-1", _png(colour=(200, 0, 0))))  # other image bytes
    assert status == 400 and answer["error"]["code"] == "idempotency_key_reused"


def test_a_keyed_edit_decodes_and_parses_its_body_once(tenant, svc, monkeypatch):
    """The edit and the idempotency fingerprint read the one request the entry point built: one base64
    decode of the event's body and one multipart parse, not one each."""
    from darkroom.api import form_parser

    event = _edit("edit-once", _png())
    decodes, parses = [], []
    real_decode, real_parser = binascii.a2b_base64, form_parser.MultipartParser

    def decode(data, *args, **kwargs):
        if data == event["body"]:
            decodes.append(data)
        return real_decode(data, *args, **kwargs)

    def parser(*args, **kwargs):
        parses.append(args)
        return real_parser(*args, **kwargs)

    monkeypatch.setattr(binascii, "a2b_base64", decode)
    monkeypatch.setattr(form_parser, "MultipartParser", parser)
    status, _, answer = invoke("edit", event)
    assert status == 200, answer
    assert (len(decodes), len(parses)) == (1, 1)


# files and uploads


def _file_event(key: str) -> dict:
    """The committed files-create event under a new boundary, as a retry's body would be."""
    event, boundary = load_event("files-create"), "retry-" + uuid.uuid4().hex
    data = base64.b64decode(event["body"]).replace(b"darkroom-event-boundary", boundary.encode())
    content_type = f"multipart/form-data; boundary={boundary}"
    event["headers"]["content-type"], event["multiValueHeaders"]["content-type"] = content_type, [content_type]
    event["body"] = base64.b64encode(data).decode()
    return _keyed(event, key)


def test_a_retried_file_upload_returns_the_same_file(tenant, svc):
    status, _, first = invoke("files", _file_event("file-1"))
    assert status == 200, first
    status, headers, again = invoke("files", _file_event("file-1"))
    assert status == 200 and headers["idempotent-replayed"] == "true" and again == first
    assert [f.id for f in svc.files.list(tenant.tenant_id).data] == [first["id"]]


def test_a_retried_upload_create_is_the_same_upload_signed_afresh(tenant, svc):
    status, _, first = invoke("files", _keyed(load_event("uploads-create"), "upload-1"))
    assert status == 200, first
    status, headers, again = invoke("files", _keyed(load_event("uploads-create"), "upload-1"))
    assert status == 200 and headers["idempotent-replayed"] == "true"
    fields, first_fields = again.pop("upload_url")["fields"], first.pop("upload_url")["fields"]
    assert again == first  # the same upload id, times, name and size
    pinned = [name for name in first_fields if name.startswith("x-amz-meta-") or name == "key"]
    assert [fields[name] for name in pinned] == [first_fields[name] for name in pinned] and "x-amz-signature" in fields
    text = json.dumps(_records(svc))
    assert first_fields["x-amz-signature"] not in text and first_fields["policy"][:40] not in text


def test_a_retried_upload_complete_returns_the_completed_upload(tenant, svc):
    _, _, upload = invoke("files", load_event("uploads-create"))
    fields = upload["upload_url"]["fields"]
    data = _png((20, 20))
    data += b"\0" * (2048 - len(data))  # exactly the declared size
    metadata = {k.removeprefix("x-amz-meta-"): v for k, v in fields.items() if k.startswith("x-amz-meta-")}
    svc.files._s3.put_object(Bucket=svc.settings.images_bucket, Key=fields["key"], Body=data, Metadata=metadata)

    def complete() -> dict:
        event = json.loads(json.dumps(load_event("uploads-complete")).replace(EVENT_UPLOAD_ID, upload["id"]))
        return _keyed(event, "complete-1")

    status, _, done = invoke("files", complete())
    assert status == 200 and done["status"] == "completed"
    status, headers, again = invoke("files", complete())  # the staged object is gone: a second run would 404
    assert status == 200 and headers["idempotent-replayed"] == "true" and again == done


@pytest.mark.parametrize("encoded", [False, True], ids=["text body", "base64 body (binary media type)"])
def test_a_keyed_json_request_is_parsed_once_for_validation_and_fingerprint(tenant, monkeypatch, encoded):
    from darkroom.api import jsonbody

    event = _generate("parse-once", {"prompt": "a lighthouse", "size": "256x256"})
    if encoded:
        event = {**event, "body": base64.b64encode(event["body"].encode()).decode(), "isBase64Encoded": True}
    parses = []
    real = jsonbody._check  # runs once at the end of every parse, whoever holds a reference to loads
    monkeypatch.setattr(jsonbody, "_check", lambda document: parses.append(1) or real(document))
    status, _, body = invoke("generate", event)
    assert status == 200 and body["size"] == "256x256"
    assert len(parses) == 1  # Powertools' body validation reads the request's own parse
