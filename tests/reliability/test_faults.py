"""Faults on darkroom's side, in-process (moto + the committed events through the real handlers).

Each DynamoDB access of a generate request fails in turn (key lookup, each rate-limit window update,
the usage transaction), then S3's put, then the backend (timeout, upstream 5xx). Every one must end
in a clean OpenAI error envelope with a 5xx status (never a stack trace), write no usage record, and
leave the tenant's rate-limit windows exactly as they were (the admission refunded).
"""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from darkroom.api.errors import UpstreamError, UpstreamTimeout
from darkroom.inference.local import LocalBackend
from lambda_harness import invoke, load_event

pytestmark = pytest.mark.reliability

THROTTLED = "ProvisionedThroughputExceededException"
INTERNAL = "InternalServerError"
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def client_error(code: str, operation: str, status: int = 500) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "injected by the reliability suite"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


class FaultyClient:
    """A boto3 client proxy raising ``error`` on the ``nth`` call (1-based) of ``operation`` (None: every call)."""

    def __init__(self, inner, operation: str, error: Exception, nth: int | None = 1) -> None:
        self._inner, self._operation, self._error, self._nth = inner, operation, error, nth
        self.calls = 0

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if name != self._operation:
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self._nth is None or self.calls == self._nth:
                raise self._error
            return attr(*args, **kwargs)

        return call


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _assert_clean_error(status: int, headers: dict, body, expected_status: int, code: str | None = None) -> dict:
    assert status == expected_status, (status, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == ENVELOPE_KEYS, body
    assert "Traceback" not in json.dumps(body) and "injected" not in json.dumps(body), body
    assert body["error"]["type"] == "server_error" or status == 500, body
    assert headers.get("x-request-id"), headers
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def _nothing_billed(svc, tenant_id: str) -> None:
    assert svc.meter.records(tenant_id) == [], "a usage record was written for failed work"
    assert svc.meter.daily(tenant_id) == [], "the day's aggregate counted failed work"


def _json_event(name: str, body: dict, **changes) -> dict:
    event = load_event(name, **changes)
    event["body"], event["isBase64Encoded"] = json.dumps(body), False
    return event


def _generate_event() -> dict:
    return _json_event("generate", {"model": "local-image", "prompt": "a lighthouse", "size": "256x256", "n": 2})


# -- DynamoDB ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [THROTTLED, INTERNAL])
def test_tenants_lookup_failure_is_a_500_envelope_and_admits_nothing(tenant, svc, counts, monkeypatch, code):
    faulty = FaultyClient(svc.directory._db, "get_item", client_error(code, "GetItem"))
    monkeypatch.setattr(svc.directory, "_db", faulty)
    status, headers, body = invoke("generate", _generate_event())
    _assert_clean_error(status, headers, body, 500, "internal_error")
    assert faulty.calls == 1
    assert counts(tenant.tenant_id) == {}
    _nothing_billed(svc, tenant.tenant_id)


@pytest.mark.parametrize("code", [THROTTLED, INTERNAL])
@pytest.mark.parametrize("nth", [1, 2, 3], ids=["requests-minute", "images-minute", "images-day"])
def test_rate_limit_update_failure_gives_back_every_window(tenant, svc, counts, monkeypatch, nth, code):
    faulty = FaultyClient(svc.limiter._db, "update_item", client_error(code, "UpdateItem"), nth=nth)
    monkeypatch.setattr(svc.limiter, "_db", faulty)
    status, headers, body = invoke("generate", _generate_event())
    assert 500 <= status < 600, (status, body)
    _assert_clean_error(status, headers, body, status)
    assert set(counts(tenant.tenant_id).values()) <= {0}, counts(tenant.tenant_id)
    _nothing_billed(svc, tenant.tenant_id)


@pytest.mark.parametrize("code", [THROTTLED, INTERNAL, "TransactionCanceledException"])
def test_usage_transaction_failure_is_a_503_refunded_and_unbilled(tenant, svc, counts, monkeypatch, code):
    error = client_error(code, "TransactWriteItems", 400 if code == "TransactionCanceledException" else 500)
    if code == "TransactionCanceledException":  # cancelled for a reason other than the duplicate guard
        error.response["CancellationReasons"] = [{"Code": "TransactionConflict"}, {"Code": "None"}]
    monkeypatch.setattr(svc.meter, "_db", FaultyClient(svc.meter._db, "transact_write_items", error))
    status, headers, body = invoke("generate", _generate_event())
    _assert_clean_error(status, headers, body, 503, "service_unavailable")
    assert set(counts(tenant.tenant_id).values()) <= {0}, counts(tenant.tenant_id)
    _nothing_billed(svc, tenant.tenant_id)


# -- S3 and the backend ------------------------------------------------------------------------------------


def test_s3_put_failure_is_a_5xx_refunded_and_unbilled(tenant, svc, counts, monkeypatch):
    monkeypatch.setattr(
        svc.store,
        "_s3",
        FaultyClient(svc.store._s3, "put_object", client_error("InternalError", "PutObject"), nth=None),
    )
    status, headers, body = invoke("generate", _generate_event())
    _assert_clean_error(status, headers, body, 500)
    assert set(counts(tenant.tenant_id).values()) <= {0}, counts(tenant.tenant_id)
    _nothing_billed(svc, tenant.tenant_id)


BACKEND_FAULTS = [
    (UpstreamTimeout("The model did not answer in time."), 504, "upstream_timeout"),
    (UpstreamError("The model failed."), 502, "upstream_error"),
]


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize(("error", "status_", "code"), BACKEND_FAULTS, ids=["timeout", "upstream-5xx"])
def test_backend_failure_on_generate_is_refunded_and_unbilled(tenant, svc, counts, monkeypatch, error, status_, code):
    monkeypatch.setattr(LocalBackend, "generate", _raise(error))
    status, headers, body = invoke("generate", _generate_event())
    _assert_clean_error(status, headers, body, status_, code)
    assert set(counts(tenant.tenant_id).values()) <= {0}, counts(tenant.tenant_id)
    _nothing_billed(svc, tenant.tenant_id)


@pytest.mark.parametrize(("error", "status_", "code"), BACKEND_FAULTS, ids=["timeout", "upstream-5xx"])
def test_backend_failure_on_edit_is_refunded_and_unbilled(tenant, svc, counts, monkeypatch, error, status_, code):
    monkeypatch.setattr(LocalBackend, "edit", _raise(error))
    status, headers, body = invoke("edit", load_event("edit"))
    _assert_clean_error(status, headers, body, status_, code)
    assert set(counts(tenant.tenant_id).values()) <= {0}, counts(tenant.tenant_id)
    _nothing_billed(svc, tenant.tenant_id)


@pytest.mark.parametrize(("error", "status_", "code"), BACKEND_FAULTS, ids=["timeout", "upstream-5xx"])
def test_backend_failure_in_responses_is_refunded_and_unbilled(tenant, svc, counts, monkeypatch, error, status_, code):
    monkeypatch.setattr(LocalBackend, "generate", _raise(error))
    monkeypatch.setattr(LocalBackend, "respond", _raise(error))
    for body in (
        {"model": "local-text", "input": "a lighthouse", "tools": [{"type": "image_generation", "size": "256x256"}]},
        {"model": "local-text", "input": "say something"},
    ):
        status, headers, answer = invoke("responses", _json_event("responses-create", body))
        _assert_clean_error(status, headers, answer, status_, code)
    assert set(counts(tenant.tenant_id).values()) <= {0}, counts(tenant.tenant_id)
    _nothing_billed(svc, tenant.tenant_id)


def test_a_client_error_keeps_counting(tenant, svc, counts):
    """The control: a 4xx after admission is the client's, so it is not refunded (as at OpenAI)."""
    files = [
        ("image", ("a.png", _png(Image.new("RGB", (32, 32))), "image/png")),
        ("mask", ("m.png", _png(Image.new("RGBA", (16, 16))), "image/png")),
    ]  # wrong mask size: 400
    request = httpx.Request("POST", "http://x/v1/images/edits", files=files, data={"prompt": "x"})
    event = load_event("edit")
    event["headers"]["content-type"] = event["multiValueHeaders"]["content-type"] = request.headers["content-type"]
    event["multiValueHeaders"]["content-type"] = [request.headers["content-type"]]
    event["body"] = base64.b64encode(request.read()).decode()
    status, _, body = invoke("edit", event)
    assert status == 400 and body["error"]["code"] == "invalid_mask", body
    assert counts(tenant.tenant_id)["images#60"] == 1
    _nothing_billed(svc, tenant.tenant_id)


# -- found by this suite (fixed) -----------------------------------------------------------------------------------


# Found by this suite: the inputs were decoded before the refund scope began.
def test_s3_failure_reading_a_file_input_refunds_the_admission(tenant, svc, counts, monkeypatch):
    stored = svc.files.create(tenant.tenant_id, "in.png", "vision", _png(Image.new("RGB", (32, 32), (9, 9, 9))))
    monkeypatch.setattr(
        svc.files,
        "_s3",
        FaultyClient(svc.files._s3, "get_object", client_error("InternalError", "GetObject"), nth=None),
    )
    event = _json_event(
        "generate",
        {"prompt": "x", "images": [{"file_id": stored.id}]},
        path="/v1/images/edits",
        resource="/v1/images/edits",
    )
    status, headers, body = invoke("edit", event)
    _assert_clean_error(status, headers, body, 500)  # this part holds: a clean 500
    _nothing_billed(svc, tenant.tenant_id)
    assert set(counts(tenant.tenant_id).values()) <= {0}, counts(tenant.tenant_id)  # this does not
