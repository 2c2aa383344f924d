"""Errors as clients see them: OpenAI envelopes, the SDK's exception classes, nothing leaked."""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.e2e

MODEL = "local-image"
SECRET = "S3CR3T"


def _envelope(exc: openai.APIStatusError, error_body) -> dict:
    """The checked ``error`` object of an SDK exception's response; the SDK must have parsed the same."""
    error = error_body(exc.response)
    assert exc.body == error, "the SDK should expose the envelope's error object"
    assert exc.code == error["code"]
    assert exc.param == error["param"]
    return error


def test_wrong_key_is_authentication_error(base_url, error_body):
    for key in ("dk-" + "A" * 43, "sk-not-a-darkroom-key"):
        client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.images.generate(model=MODEL, prompt="a cat", size="256x256")
        assert caught.value.status_code == 401
        error = _envelope(caught.value, error_body)
        assert error["code"] == "invalid_api_key"
        assert key not in caught.value.response.text
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_missing_key_is_401(base_url, error_body):
    import httpx

    response = httpx.post(f"{base_url}/images/generations", json={"model": MODEL, "prompt": "a cat"}, timeout=60)
    assert response.status_code == 401
    assert error_body(response)["code"] == "invalid_api_key"


def test_unknown_model_is_not_found(client, error_body):
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="no-such-model", prompt="a cat", size="256x256")
    error = _envelope(caught.value, error_body)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


def test_bad_size_is_bad_request(client, error_body):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=MODEL, prompt="a cat", size="123x456")
    error = _envelope(caught.value, error_body)
    assert error["param"] == "size"
    assert error["type"] == "invalid_request_error"


def test_unknown_parameter_is_named(client, error_body):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=MODEL, prompt="a cat", size="256x256", extra_body={"foo": 1})
    error = _envelope(caught.value, error_body)
    assert error["code"] == "unknown_parameter"
    assert error["param"] == "foo"


def test_model_without_generation_capability(client, error_body):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="local-vision", prompt="a cat", size="256x256")
    assert caught.value.status_code == 400
    error = _envelope(caught.value, error_body)
    assert error["param"] == "model"


def test_body_over_10_mb_is_413(base_url, tenant, error_body):
    import httpx

    body = b'{"model":"local-image","prompt":"' + b"a" * (11 * 1024 * 1024) + b'"}'
    response = httpx.post(
        f"{base_url}/images/generations",
        content=body,
        timeout=60,
        headers={**tenant.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 413
    error = error_body(response)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("route", ["/images/generations", "/responses"])
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'["a", "list"]',
        b'"just a string"',
        b"",
        b"null",
        # Through the local stack as API Gateway would pass them: not UTF-8, too deep, too long, ambiguous.
        b'{"model": "local-image", "prompt": "a \xff\xfe cat"}',
        b'{"model": "local-image", "prompt": "a cat", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "local-image", "prompt": "a cat", "n": 1' + b"0" * 5000 + b"}",
        b'{"model": "local-image", "prompt": "a cat", "prompt": "a dog"}',
        b'{"model": "local-image", "prompt": "a cat", "n": NaN}',
    ],
    ids=["syntax", "list", "string", "empty", "null", "not-utf8", "deep", "huge-int", "duplicate", "nan"],
)
def test_invalid_json_body_is_400(base_url, tenant, error_body, body, route):
    import httpx

    response = httpx.post(
        f"{base_url}{route}", content=body, timeout=60, headers={**tenant.headers(), "content-type": "application/json"}
    )
    assert response.status_code == 400
    error = error_body(response)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json", error
    assert "None" not in error["message"]


def test_non_json_content_type_is_a_client_error(base_url, tenant, error_body):
    import httpx

    response = httpx.post(
        f"{base_url}/images/generations",
        timeout=60,
        content=b'{"model":"local-image","prompt":"a cat","size":"256x256"}',
        headers={**tenant.headers(), "content-type": "text/plain"},
    )
    assert "Traceback" not in response.text
    assert response.status_code in (400, 415), response.text
    error_body(response)


def test_validation_errors_never_echo_values(client, error_body):
    cases = [
        {"size": SECRET * 1000},  # fails the length constraint
        {"size": SECRET + "-0123456789"},  # short enough, but not a supported size
        {"quality": SECRET * 50},  # not one of the literals
        {"output_format": SECRET},
        {"n": SECRET * 20},  # not an integer
        {"user": SECRET * 100},  # over max_length
    ]
    for case in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(model=MODEL, prompt="a cat", **case)
        error = _envelope(caught.value, error_body)
        assert SECRET not in caught.value.response.text, (case, caught.value.response.text[:500])
        assert SECRET not in str(caught.value)
        assert error["param"] in ("size", "quality", "output_format", "n", "user"), error


def test_unknown_route_is_404_envelope(base_url, tenant, error_body):
    import httpx

    for method, path in (("GET", "/nope"), ("POST", "/images/nope"), ("DELETE", "/models")):
        response = httpx.request(method, base_url + path, headers=tenant.headers(), timeout=60)
        assert response.status_code == 404, (method, path, response.status_code)
        assert error_body(response)["type"] == "invalid_request_error"
