"""darkroom.api.http.HttpRequest: one request read from an API Gateway event, its body decoded and parsed once."""

import base64
import binascii

import httpx
import pytest

from darkroom.api import form_parser
from darkroom.api.errors import InvalidRequest
from darkroom.api.http import HttpRequest
from darkroom.api.jsonbody import MalformedJson
from darkroom.api.resolver import routed_event


def _event(body: bytes, content_type: str, *, encoded: bool = True) -> dict:
    return {
        "headers": {"Content-Type": content_type, "Idempotency-Key": "k-1"},
        "isBase64Encoded": encoded,
        "body": base64.b64encode(body).decode() if encoded else body.decode(),
        "pathParameters": {"id": "x"},
    }


def test_headers_are_lower_cased_and_the_body_is_decoded_once(monkeypatch):
    request = HttpRequest.from_event(_event(b'{"a": 1}', "application/json; charset=utf-8"))
    assert (request.media_type, request.idempotency_key, request.path_parameters) == (
        "application/json",
        "k-1",
        {"id": "x"},
    )
    calls = []
    real = binascii.a2b_base64
    monkeypatch.setattr(binascii, "a2b_base64", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert (request.body, request.size, request.json, request.json) == (b'{"a": 1}', 8, {"a": 1}, {"a": 1})
    assert len(calls) == 1


def test_a_form_is_parsed_once(monkeypatch):
    sent = httpx.Request("POST", "http://x/", files=[("image", ("a.png", b"bytes", "image/png"))], data={"prompt": "p"})
    request = HttpRequest.from_event(_event(sent.read(), sent.headers["content-type"]))
    parses = []
    real = form_parser.MultipartParser
    monkeypatch.setattr(form_parser, "MultipartParser", lambda *a, **k: parses.append(a) or real(*a, **k))
    assert request.form is request.form and len(parses) == 1
    assert request.form.fields == {"prompt": ["p"]} and request.form.files["image"][0].data == b"bytes"


def test_a_body_that_is_not_base64_is_a_400():
    for content_type, code in (
        ("application/json", "invalid_json"),
        ("multipart/form-data; boundary=x", "invalid_body"),
    ):
        request = HttpRequest.from_event({**_event(b"", content_type), "body": "not base64!"})
        with pytest.raises(InvalidRequest) as raised:
            _ = request.body
        assert (raised.value.status, raised.value.code) == (400, code)


def test_the_routed_event_decodes_only_base64_json():
    event = _event(b'{"a": 1}', "application/json; charset=utf-8")
    routed = routed_event(event, HttpRequest.from_event(event))
    assert routed["body"] == '{"a": 1}' and routed["isBase64Encoded"] is False
    form = _event(b"--x--", "multipart/form-data; boundary=x")
    assert routed_event(form, HttpRequest.from_event(form)) is form
    with pytest.raises(MalformedJson):
        bad = {**event, "body": "not base64!"}
        routed_event(bad, HttpRequest.from_event(bad))
    with pytest.raises(MalformedJson):
        latin = _event("é".encode("latin-1"), "application/json")
        routed_event(latin, HttpRequest.from_event(latin))
