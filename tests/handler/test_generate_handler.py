"""GenerateFunction in-process with moto, replaying events/generate.json."""

import base64
import io
import json

from PIL import Image

from lambda_harness import EVENT_KEY, invoke, load_event

ENVELOPE_KEYS = {"message", "type", "param", "code"}


def _with_body(body, **headers) -> dict:
    event = load_event("generate")
    event["body"] = body if isinstance(body, str) else json.dumps(body)
    for name, value in headers.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    return event


def test_replayed_event_generates_an_image(tenant):
    status, headers, body = invoke("generate", load_event("generate"))
    assert status == 200
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert (image.format, image.size) == ("PNG", (512, 512))
    assert body["size"] == "512x512" and body["output_format"] == "png" and body["background"] == "opaque"
    assert set(body["usage"]) >= {"input_tokens", "output_tokens", "total_tokens", "input_tokens_details"}
    assert headers["x-request-id"] == load_event("generate")["requestContext"]["requestId"]
    for name in ("limit", "remaining", "reset"):
        assert f"x-ratelimit-{name}-requests" in headers and f"x-ratelimit-{name}-images" in headers
    assert headers["content-type"] == "application/json"


def test_missing_and_wrong_keys_are_401_before_validation(tenant):
    event = _with_body("{not json", authorization="Bearer dk-" + "x" * 43)
    status, headers, body = invoke("generate", event)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert set(body["error"]) == ENVELOPE_KEYS and headers["x-request-id"]
    event = load_event("generate")
    del event["headers"]["authorization"]
    assert invoke("generate", event)[0] == 401


def test_suspended_tenant_is_403(tenant, svc):
    svc.directory.set_status(tenant.tenant_id, "suspended")
    svc.authenticator._cache.clear()
    status, _, body = invoke("generate", load_event("generate"))
    assert status == 403 and body["error"]["code"] == "tenant_suspended"


def test_bad_bodies_are_400_in_the_envelope_never_500(tenant):
    cases = {
        "{not json": (None, "invalid_json"),
        "[]": (None, "invalid_json"),
        json.dumps({"model": "local-image"}): ("prompt", "missing_required_parameter"),
        json.dumps({"prompt": "x", "n": 0}): ("n", "invalid_value"),
        json.dumps({"prompt": "x", "n": "many"}): ("n", "invalid_type"),  # strict: a string is not an integer
        json.dumps({"prompt": "x", "output_compression": 101}): ("output_compression", "invalid_value"),
        json.dumps({"prompt": "x", "bogus": True}): ("bogus", "unknown_parameter"),
    }
    for body, (param, code) in cases.items():
        status, _, answer = invoke("generate", _with_body(body))
        assert status == 400, body
        assert set(answer["error"]) == ENVELOPE_KEYS
        assert (answer["error"]["param"], answer["error"]["code"]) == (param, code), body


def test_unknown_model_is_404(tenant):
    status, _, body = invoke("generate", _with_body({"prompt": "x", "model": "gpt-image-9"}))
    assert status == 404 and body["error"] == {
        "message": "The model 'gpt-image-9' does not exist.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_errors_never_echo_the_input(tenant):
    secret = "iVBORw0KGgoAAAANSUhEUgAA" * 400  # base64-looking payload in a field that rejects it
    for body in (
        {"prompt": "x", "size": secret},
        {"prompt": "x", "quality": secret},
        {"prompt": ["x", secret]},
        {"prompt": "x", "user": secret},
    ):
        status, _, answer = invoke("generate", _with_body(body))
        assert status == 400
        assert "iVBORw0KGgo" not in json.dumps(answer)


def test_unexpected_failures_are_a_plain_500_envelope(tenant, svc, monkeypatch):

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /opt/python/darkroom")

    monkeypatch.setattr(svc, "backends", lambda model: type("B", (), {"generate": explode})())
    status, _, body = invoke("generate", load_event("generate"))
    assert status == 500 and body["error"]["type"] == "server_error"
    assert "secret" not in json.dumps(body) and "Traceback" not in json.dumps(body)


def test_logs_carry_no_prompt_key_image_or_url(tenant, capsys, caplog):
    caplog.set_level("INFO")  # what Lambda ships; botocore DEBUG logs are off in production
    status, _, body = invoke("generate", load_event("generate"))
    assert status == 200
    streams = capsys.readouterr()
    records = [json.dumps(r.__dict__, default=str) for r in caplog.records]  # message and every extra key
    text = streams.out + streams.err + "\n".join(records)
    assert "images produced" in text  # the handler does log
    for leak in (
        "lighthouse",
        EVENT_KEY,
        body["data"][0]["b64_json"][:40],
        "X-Amz-Signature",
        body["data"][0]["url"].split("?")[0],
    ):
        assert leak not in text


def test_unknown_route_is_a_404_envelope(tenant):
    event = load_event("generate", path="/v1/images/nothing", resource="/v1/images/nothing")
    status, _, body = invoke("generate", event)
    assert status == 404 and body["error"]["code"] == "not_found"
