"""Strict types where OpenAI is strict: on JSON bodies an integer parameter takes an integer (not a boolean, a
string or a number with a fraction) and a boolean one a boolean: 400 ``invalid_type`` naming the parameter,
never repeating the value. Multipart edits, whose fields are all text, are converted by the parameter's type."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from lambda_harness import invoke, load_event, multipart_event

PNG = io.BytesIO()
Image.new("RGB", (64, 64), (200, 40, 40)).save(PNG, format="PNG")


def _json(name: str, body: dict) -> dict:
    event = load_event(name)
    event["headers"]["content-type"] = "application/json"  # the edit event is multipart
    event["multiValueHeaders"]["content-type"] = ["application/json"]
    event["body"], event["isBase64Encoded"] = json.dumps(body), False
    return event


def _multipart(fields: dict[str, str]) -> dict:
    return multipart_event("edit", [("image", ("a.png", PNG.getvalue(), "image/png"))], fields)


def _refused(status: int, body: dict, param: str, code: str = "invalid_type") -> str:
    assert status == 400, body
    assert (body["error"]["param"], body["error"]["code"]) == (param, code), body
    return body["error"]["message"]


IMAGE_CASES = [
    ("n", True, "an integer", "a boolean"),
    ("n", "2", "an integer", "a string"),
    ("n", 1.5, "an integer", "a decimal number"),
    ("n", 1.0, "an integer", "a decimal number"),  # OpenAI: "expected an integer, but got a decimal number"
    ("stream", "true", "a boolean", "a string"),
    ("stream", 0, "a boolean", "an integer"),
    ("output_compression", "50", "an integer", "a string"),
    ("partial_images", False, "an integer", "a boolean"),
    ("frame_count", "3", "an integer", "a string"),
    ("size", 512, "a string", "an integer"),
    ("user", 7, "a string", "an integer"),
    ("safety_identifier", ["x"], "a string", "an array"),
]


@pytest.mark.parametrize(("param", "value", "expected", "got"), IMAGE_CASES)
def test_json_generate_refuses_the_wrong_type(tenant, param, value, expected, got):
    status, _, body = invoke("generate", _json("generate", {"prompt": "x", "model": "local-image", param: value}))
    message = _refused(status, body, param)
    assert message == f"Invalid type for '{param}': expected {expected}, but got {got} instead."


@pytest.mark.parametrize(
    ("param", "value"), [("n", "2"), ("n", True), ("output_compression", "50"), ("stream", "false")]
)
def test_json_edit_refuses_the_wrong_type(tenant, param, value):
    image = {"image_url": "data:image/png;base64," + base64.b64encode(PNG.getvalue()).decode()}
    body = {"prompt": "x", "model": "local-image", "images": [image], param: value}
    status, _, answer = invoke("edit", _json("edit", body))
    _refused(status, answer, param)


def test_multipart_edit_fields_are_converted_by_type(tenant):
    status, _, body = invoke(
        "edit",
        _multipart(
            {
                "prompt": "x",
                "model": "local-image",
                "n": "2",
                "stream": "false",
                "output_format": "jpeg",
                "output_compression": "50",
                "partial_images": "0",
                "response_format": "b64_json",
            }
        ),
    )
    assert status == 200, body
    assert len(body["data"]) == 2 and body["output_format"] == "jpeg"


@pytest.mark.parametrize(
    ("param", "value"),
    [("n", "2.0"), ("n", "two"), ("n", " 2"), ("n", "٢"), ("n", ""), ("stream", "yes"), ("output_compression", "5_0")],
)
def test_multipart_values_that_do_not_parse_are_invalid_type(tenant, param, value):
    status, _, body = invoke("edit", _multipart({"prompt": "x", "model": "local-image", param: value}))
    message = _refused(status, body, param)
    assert value.strip() == "" or value.strip() not in message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"store": "true"}, "store"),
        ({"stream": 1}, "stream"),
        ({"background": "false"}, "background"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"temperature": "0.5"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"max_output_tokens": 1.5}, "max_output_tokens"),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"safety_identifier": 42}, "safety_identifier"),
        ({"tools": [{"type": "image_generation", "output_compression": "50"}]}, "tools[0].output_compression"),
        ({"tools": [{"type": "image_generation", "frame_count": True}]}, "tools[0].frame_count"),
    ],
)
def test_json_responses_refuse_the_wrong_type(tenant, body, param):
    status, _, answer = invoke("responses", _json("responses-create", {"model": "local-text", "input": "hi"} | body))
    _refused(status, answer, param)


def test_a_union_names_every_type_it_takes(tenant):
    status, _, answer = invoke("responses", _json("responses-create", {"model": "local-text", "input": 5}))
    message = _refused(status, answer, "input")
    assert message == "Invalid type for 'input': expected a string or an array, but got an integer instead."


def test_query_strings_are_text_and_parse_as_before(tenant):
    event = load_event(
        "files-list", queryStringParameters={"limit": "two"}, multiValueQueryStringParameters={"limit": ["two"]}
    )
    status, _, body = invoke("files", event)
    _refused(status, body, "limit", code="invalid_value")
