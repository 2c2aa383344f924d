"""Malformed JSON bodies are a 400 ``invalid_json`` in the OpenAI envelope on every JSON route, never a 500.

Each body is sent twice: as text (how a committed event or a text media type arrives) and base64-encoded
(how API Gateway delivers it, ``application/json`` being a binary media type), so invalid UTF-8 reaches
the handler as the client sent it.
"""

import base64
import json

import pytest

from lambda_harness import invoke, load_event

ENVELOPE_KEYS = {"message", "type", "param", "code"}
DEEP = "[" * 100_000 + "]" * 100_000
MALFORMED = {
    "nested 100,000 deep": DEEP.encode(),
    "nested 65 deep": ('{"prompt": "x", "metadata": ' + "[" * 64 + "]" * 64 + "}").encode(),
    "a 5,000-digit integer": b'{"prompt": "x", "n": ' + b"7" * 5000 + b"}",
    "a 33-digit integer": b'{"prompt": "x", "n": ' + b"1" * 33 + b"}",
    "invalid UTF-8": b'{"prompt": "a zebra \xff\xfe on a mat"}',
    "a duplicate key": b'{"prompt": "x", "n": 1, "n": 2}',
    "NaN": b'{"prompt": "x", "n": NaN}',
    "Infinity": b'{"prompt": "x", "n": -Infinity}',
    "an overflowing float": b'{"prompt": "x", "n": 1e999}',
    "a lone surrogate": b'{"prompt": "x \\ud800 y"}',
    "not JSON": b"{not json",
}
ROUTES = {
    "generate": ("generate", None),
    "responses": ("responses-create", None),
    "edit": ("edit", "application/json"),
    "uploads": ("uploads-create", None),
}


def _event(name: str, raw: bytes, encoded: bool, content_type: str | None) -> dict:
    event = load_event(name)
    event["body"] = base64.b64encode(raw).decode() if encoded else raw.decode("utf-8", "replace")
    event["isBase64Encoded"] = encoded
    for headers in (event["headers"], event["multiValueHeaders"]):
        for key in [k for k in headers if k.lower() == "content-type"]:
            del headers[key]
    event["headers"]["Content-Type"] = content_type or "application/json"
    event["multiValueHeaders"]["Content-Type"] = [content_type or "application/json"]
    return event


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_body_is_400_invalid_json(tenant, route, case):
    name, content_type = ROUTES[route]
    raw = MALFORMED[case]
    for encoded in (True, False):
        if case == "invalid UTF-8" and not encoded:
            continue  # as text the bytes are already U+FFFD, which is a valid character (see the next test)
        status, _, body = invoke(route if route != "uploads" else "files", _event(name, raw, encoded, content_type))
        assert status == 400, (case, encoded, body)
        assert set(body["error"]) == ENVELOPE_KEYS
        assert body["error"]["code"] == "invalid_json", (case, body)
        assert "7777" not in body["error"]["message"] and "zebra" not in body["error"]["message"]


def test_duplicate_key_names_its_param(tenant):
    status, _, body = invoke("generate", _event("generate", b'{"prompt": "x", "size": "a", "size": "b"}', True, None))
    assert status == 400 and body["error"]["param"] == "size"


def test_u_fffd_sent_as_text_is_an_ordinary_character(tenant):
    raw = json.dumps({"model": "local-image", "prompt": "a \ufffd sign", "size": "256x256"}).encode()
    status, _, body = invoke("generate", _event("generate", raw, True, None))
    assert status == 200, body


def test_well_formed_base64_json_is_served(tenant):
    raw = json.dumps(json.loads(load_event("generate")["body"])).encode()
    status, _, body = invoke("generate", _event("generate", raw, True, None))
    assert status == 200 and body["data"]
