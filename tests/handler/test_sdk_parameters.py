"""Every parameter of the installed openai SDK, sent by the SDK itself, has a decision (README "Parameters of the
current SDK"): supported, accepted (no effect, documented why), recorded (hashed), or refused with
``unsupported_value``. None may be ``unknown_parameter``.

The parameter lists come from the SDK's own TypedDicts, so an SDK upgrade that adds a parameter fails
``test_every_sdk_parameter_has_a_decision`` until the parameter is decided here and in the README.
The SDK talks to the handlers in-process: an ``httpx.MockTransport`` turns each request into an API Gateway
proxy event (as the gateway would: bodies base64, binary media types) and invokes the function's handler.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import uuid

import httpx
import openai
import pytest
from openai.types import (
    file_create_params,
    file_list_params,
    image_edit_params,
    image_generate_params,
    upload_complete_params,
    upload_create_params,
)
from openai.types.responses import response_create_params, response_retrieve_params, tool_param
from PIL import Image

from emf_capture import powertools_log_stream
from lambda_harness import EVENT_KEY, invoke, load_event

SAFETY_ID = "alice.liddell+wonderland@example.org"  # what a careless client sends raw
LEGACY_USER = "bob-the-legacy-user-7731"

SUPPORTED, ACCEPTED, RECORDED, REFUSED = "supported", "accepted", "recorded", "refused"

# (method, path regex) -> (function, event template, path parameter names)
_ROUTES = [
    ("POST", r"/v1/images/generations", "generate", "generate", ()),
    ("POST", r"/v1/images/edits", "edit", "edit", ()),
    ("POST", r"/v1/responses", "responses", "responses-create", ()),
    ("GET", r"/v1/responses/(?P<response_id>[^/]+)", "responses", "responses-retrieve", ("response_id",)),
    ("POST", r"/v1/files", "files", "files-create", ()),
    ("GET", r"/v1/files", "files", "files-list", ()),
    ("POST", r"/v1/uploads", "files", "uploads-create", ()),
    ("POST", r"/v1/uploads/(?P<upload_id>[^/]+)/complete", "files", "uploads-complete", ("upload_id",)),
]


def _handle(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    found = [(route, re.fullmatch(route[1], path)) for route in _ROUTES if route[0] == request.method]
    found = [(route, match) for route, match in found if match]
    assert found, f"no darkroom route for {request.method} {path}"
    (_, _, function, template, names), match = found[0]
    headers = {k.lower(): v for k, v in request.headers.items()} | {"authorization": f"Bearer {EVENT_KEY}"}
    query: dict[str, list[str]] = {}
    for key, value in request.url.params.multi_items():
        query.setdefault(key, []).append(value)
    body = request.read()
    event = load_event(template)
    event.update(
        path=path,
        httpMethod=request.method,
        headers=headers,
        multiValueHeaders={k: [v] for k, v in headers.items()},
        pathParameters={name: match.group(name) for name in names} or None,
        queryStringParameters={k: v[-1] for k, v in query.items()} or None,
        multiValueQueryStringParameters=query or None,
        body=base64.b64encode(body).decode() if body else "",
        isBase64Encoded=bool(body),
        requestContext={**event["requestContext"], "httpMethod": request.method, "requestId": str(uuid.uuid4())},
    )
    status, answer_headers, text = invoke(function, event, raw=True)
    return httpx.Response(
        status, headers={"content-type": answer_headers.get("content-type", "application/json")}, content=text.encode()
    )


@pytest.fixture
def client(tenant):
    http = httpx.Client(transport=httpx.MockTransport(_handle))
    return openai.OpenAI(api_key=EVENT_KEY, base_url="http://darkroom.test/v1", http_client=http, max_retries=0)


def _keys(typed_dict) -> set[str]:
    return set(typed_dict.__required_keys__ | typed_dict.__optional_keys__)


def _png(size=(64, 64), rgba=False) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGBA" if rgba else "RGB", size, (10, 120, 200, 255) if rgba else (10, 120, 200))
    if rgba:
        image.paste((0, 0, 0, 0), (16, 16, 48, 48))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


# ---- the decisions: parameter -> (decision, a value to send) ----------------------------------------------------

GENERATE = {
    "prompt": (SUPPORTED, "a lighthouse at dusk"),
    "model": (SUPPORTED, "local-image"),
    "n": (SUPPORTED, 2),
    "size": (SUPPORTED, "256x256"),
    "quality": (SUPPORTED, "low"),
    "output_format": (SUPPORTED, "webp"),
    "output_compression": (SUPPORTED, 80),
    "background": (SUPPORTED, "opaque"),
    "response_format": (SUPPORTED, "b64_json"),
    "stream": (SUPPORTED, False),  # true: tests/handler/test_streaming_sdk.py
    "partial_images": (SUPPORTED, 0),  # with stream (test_streaming_sdk.py)
    "moderation": (ACCEPTED, "low"),
    "style": (ACCEPTED, "natural"),
    "complexity": (ACCEPTED, "high"),  # passed to models whose catalog passthrough lists it
    "safety_identifier": (RECORDED, SAFETY_ID),
    "user": (RECORDED, LEGACY_USER),
    "frame_count": (REFUSED, 4),
    "frame_duration_ms": (REFUSED, 120),
    "svg": (REFUSED, {"model": "svg-author", "reasoning": {"effort": "low"}}),
}
EDIT = {name: decision for name, decision in GENERATE.items() if name not in ("moderation", "style")} | {
    "image": (SUPPORTED, None),  # files, set per call
    "mask": (SUPPORTED, None),
    "input_fidelity": (SUPPORTED, "high"),
    "markup": (REFUSED, None),
}
RESPONSES = {
    "model": (SUPPORTED, "local-text"),
    "input": (SUPPORTED, "a brass owl reading a timetable"),
    "instructions": (SUPPORTED, "Be brief."),
    "metadata": (SUPPORTED, {"ticket": "T-1"}),
    "store": (SUPPORTED, True),
    "stream": (SUPPORTED, False),
    "background": (SUPPORTED, False),
    "previous_response_id": (SUPPORTED, None),  # an earlier response's id, set per call
    "tools": (SUPPORTED, None),
    "tool_choice": (SUPPORTED, "auto"),
    "safety_identifier": (RECORDED, SAFETY_ID),
    "user": (RECORDED, LEGACY_USER),
    "temperature": (ACCEPTED, 0.5),
    "top_p": (ACCEPTED, 0.9),
    "top_logprobs": (ACCEPTED, 2),
    "max_output_tokens": (ACCEPTED, 256),
    "max_tool_calls": (ACCEPTED, 2),
    "parallel_tool_calls": (ACCEPTED, True),
    "truncation": (ACCEPTED, "auto"),
    "reasoning": (ACCEPTED, {"effort": "low"}),
    "text": (ACCEPTED, {"format": {"type": "text"}}),
    "include": (ACCEPTED, ["message.output_text.logprobs"]),
    "service_tier": (ACCEPTED, "auto"),
    "prompt_cache_key": (ACCEPTED, "owls"),
    "prompt_cache_retention": (ACCEPTED, "24h"),
    "prompt_cache_options": (ACCEPTED, {"mode": "implicit", "ttl": "30m"}),
    "context_management": (ACCEPTED, [{"type": "compaction", "compact_threshold": 1000}]),
    "stream_options": (ACCEPTED, {"include_obfuscation": False}),
    "access_programs": (ACCEPTED, {"cyber": "standard"}),  # other programs: unsupported_value
    "background_options": (ACCEPTED, {"completion_window": "soonest"}),  # 2h/8h: unsupported_value
    "image": (ACCEPTED, {"context_compression": "auto"}),  # enabled: unsupported_value
    "conversation": (REFUSED, "conv_123"),
    "prompt": (REFUSED, {"id": "pmpt_123"}),
    "moderation": (REFUSED, {"model": "omni-moderation-latest"}),
}
TOOL = {
    "type": (SUPPORTED, "image_generation"),
    "model": (SUPPORTED, "local-image"),
    "action": (SUPPORTED, "generate"),
    "size": (SUPPORTED, "256x256"),
    "quality": (SUPPORTED, "low"),
    "output_format": (SUPPORTED, "png"),
    "output_compression": (SUPPORTED, 100),
    "background": (SUPPORTED, "opaque"),
    "partial_images": (SUPPORTED, 1),
    "input_fidelity": (SUPPORTED, "low"),  # edits
    "input_image_mask": (SUPPORTED, None),  # a data URL, set per call
    "moderation": (ACCEPTED, "auto"),
    "complexity": (ACCEPTED, "low"),
    "frame_count": (REFUSED, 4),
    "frame_duration_ms": (REFUSED, 120),
    "svg": (REFUSED, {"model": "svg-author"}),
}
FILE_CREATE = {"file": SUPPORTED, "purpose": SUPPORTED, "expires_after": REFUSED}
UPLOAD_CREATE = {
    "bytes": SUPPORTED,
    "filename": SUPPORTED,
    "mime_type": SUPPORTED,
    "purpose": SUPPORTED,
    "expires_after": REFUSED,
}
UPLOAD_COMPLETE = {"part_ids": SUPPORTED, "md5": SUPPORTED}
FILE_LIST = {"after": SUPPORTED, "limit": SUPPORTED, "order": REFUSED, "purpose": REFUSED}
RESPONSE_RETRIEVE = {
    "stream": SUPPORTED,
    "starting_after": SUPPORTED,
    "include": ACCEPTED,
    "include_obfuscation": ACCEPTED,
}


@pytest.mark.parametrize(
    ("typed_dict", "decided"),
    [
        (image_generate_params.ImageGenerateParamsNonStreaming, GENERATE),
        (image_edit_params.ImageEditParamsNonStreaming, EDIT),
        (response_create_params.ResponseCreateParamsNonStreaming, RESPONSES),
        (tool_param.ImageGeneration, TOOL),
        (file_create_params.FileCreateParams, FILE_CREATE),
        (upload_create_params.UploadCreateParams, UPLOAD_CREATE),
        (upload_complete_params.UploadCompleteParams, UPLOAD_COMPLETE),
        (file_list_params.FileListParams, FILE_LIST),
        (response_retrieve_params.ResponseRetrieveParamsNonStreaming, RESPONSE_RETRIEVE),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_every_sdk_parameter_has_a_decision(typed_dict, decided):
    sdk = _keys(typed_dict)
    assert sdk - set(decided) == set(), "a parameter of the installed SDK has no decision: add it here and to README"
    assert set(decided) - sdk == set(), "a decided parameter the SDK no longer has"


def _sendable(table: dict, *decisions: str) -> dict:
    return {name: value for name, (decision, value) in table.items() if decision in decisions and value is not None}


def _unsupported(error: openai.BadRequestError, param: str, model: str | None = "local-image") -> None:
    body = error.body
    assert error.status_code == 400 and body["code"] == "unsupported_value", body
    assert body["param"] == param, body
    if model:
        assert model in body["message"], body


# ---- images.generate -------------------------------------------------------------------------------------------


def test_generate_takes_every_parameter_it_does_not_refuse(client, svc, tenant):
    result = client.images.generate(**_sendable(GENERATE, SUPPORTED, ACCEPTED, RECORDED))
    assert len(result.data) == 2 and result.output_format == "webp" and result.size == "256x256"
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).format == "WEBP"


@pytest.mark.parametrize("name", [name for name, (decision, _) in GENERATE.items() if decision == REFUSED])
def test_generate_refuses_gif_and_svg_options_naming_the_model(client, name):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", model="local-image", **{name: GENERATE[name][1]})
    _unsupported(raised.value, name)


@pytest.mark.parametrize("output_format", ["gif", "svg"])
def test_gif_and_svg_output_is_unsupported_value_naming_the_model(client, output_format):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", model="local-image", output_format=output_format)
    _unsupported(raised.value, "output_format")
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.edit(
            image=("a.png", _png(), "image/png"), prompt="x", model="local-image", output_format=output_format
        )
    _unsupported(raised.value, "output_format")


def test_new_qualities_are_checked_against_the_catalog_not_unknown(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", model="local-image", quality="xhigh")
    body = raised.value.body
    assert (body["param"], body["code"]) == ("quality", "invalid_value") and "local-image" in body["message"]


# ---- images.edit (multipart, as the SDK sends it) ---------------------------------------------------------------


def test_edit_takes_every_parameter_it_does_not_refuse(client):
    options = _sendable(EDIT, SUPPORTED, ACCEPTED, RECORDED)
    result = client.images.edit(
        image=("a.png", _png(), "image/png"), mask=("m.png", _png(rgba=True), "image/png"), **options
    )
    assert len(result.data) == 2 and result.output_format == "webp"


@pytest.mark.parametrize("name", [name for name, (decision, _) in EDIT.items() if decision == REFUSED])
def test_edit_refuses_gif_svg_and_markup_naming_the_model(client, name):
    value = ("markup.png", _png(rgba=True), "image/png") if name == "markup" else EDIT[name][1]
    with pytest.raises(openai.BadRequestError) as raised:  # svg goes as svg[model] and svg[reasoning][effort]
        client.images.edit(image=("a.png", _png(), "image/png"), prompt="x", model="local-image", **{name: value})
    _unsupported(raised.value, name)


# ---- responses.create and its image_generation tool ---------------------------------------------------------------


def test_responses_take_every_parameter_they_do_not_refuse(client):
    first = client.responses.create(model="local-text", input="hello")
    tool = _sendable(TOOL, SUPPORTED, ACCEPTED) | {"input_image_mask": {"image_url": _data_url(_png(rgba=True))}}
    options = _sendable(RESPONSES, SUPPORTED, ACCEPTED, RECORDED)
    response = client.responses.create(**options, previous_response_id=first.id, tools=[tool])
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["image_generation_call"]


@pytest.mark.parametrize("name", [name for name, (decision, _) in RESPONSES.items() if decision == REFUSED])
def test_responses_refuse_what_darkroom_cannot_do(client, name):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="local-text", input="hi", **{name: RESPONSES[name][1]})
    _unsupported(raised.value, name, model=None)


@pytest.mark.parametrize(
    ("name", "value", "param"),
    [
        ("access_programs", {"cyber": "daybreak_red"}, "access_programs.cyber"),
        ("background_options", {"completion_window": "8h"}, "background_options.completion_window"),
        ("image", {"context_compression": "enabled"}, "image.context_compression"),
    ],
)
def test_responses_refuse_values_darkroom_cannot_honour(client, name, value, param):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="local-text", input="hi", **{name: value})
    _unsupported(raised.value, param, model=None)


@pytest.mark.parametrize("name", [*(n for n, (d, _) in TOOL.items() if d == REFUSED), "output_format"])
def test_the_image_tool_refuses_gif_and_svg_naming_the_model(client, name):
    value = "gif" if name == "output_format" else TOOL[name][1]
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(
            model="local-text", input="a fox", tools=[{"type": "image_generation", "model": "local-image", name: value}]
        )
    _unsupported(raised.value, f"tools[0].{name}")


def test_a_completed_response_replays_as_a_stream(client):
    created = client.responses.create(model="local-text", input="hello there")
    events = list(client.responses.retrieve(created.id, stream=True, starting_after=0))
    assert events[0].sequence_number == 1 and events[-1].type == "response.completed"
    assert events[-1].response.id == created.id


# ---- files and uploads ----------------------------------------------------------------------------------------


def test_files_refuse_per_file_expiry_and_list_filters(client):
    expiry = {"anchor": "created_at", "seconds": 3600}
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(file=("a.png", _png(), "image/png"), purpose="vision", expires_after=expiry)
    _unsupported(raised.value, "expires_after", model=None)
    with pytest.raises(openai.BadRequestError) as raised:
        client.uploads.create(
            bytes=1024, filename="a.png", mime_type="image/png", purpose="vision", expires_after=expiry
        )
    _unsupported(raised.value, "expires_after", model=None)
    for name, value in (("order", "desc"), ("purpose", "vision")):
        with pytest.raises(openai.BadRequestError) as raised:
            client.files.list(**{name: value})
        _unsupported(raised.value, name, model=None)
    assert client.files.list(limit=5).data == []


# ---- safety_identifier: hashed everywhere, raw nowhere -----------------------------------------------------------


def _logged(captured, capsys, caplog) -> str:
    out, err = capsys.readouterr()
    return "\n".join(
        [
            captured.getvalue(),
            out,
            err,
            caplog.text,
            *(json.dumps(record.__dict__, default=str) for record in caplog.records),
        ]
    )


def test_safety_identifier_is_recorded_only_as_a_tenant_salted_hash(client, svc, tenant, capsys, caplog):
    from darkroom.end_users import end_user_id

    caplog.set_level(logging.INFO)
    with powertools_log_stream() as captured:
        client.images.generate(
            prompt="x", model="local-image", size="256x256", safety_identifier=SAFETY_ID, user=LEGACY_USER
        )
        client.images.edit(
            image=("a.png", _png(), "image/png"), prompt="x", model="local-image", user=LEGACY_USER
        )  # no safety_identifier: the deprecated user is used
        client.responses.create(model="local-text", input="hi", safety_identifier=SAFETY_ID)
        client.images.generate(prompt="x", model="local-image", size="256x256", safety_identifier="", user="")
    logged = _logged(captured, capsys, caplog)

    hashed, legacy = end_user_id(tenant.tenant_id, SAFETY_ID), end_user_id(tenant.tenant_id, LEGACY_USER)
    assert re.fullmatch(r"eu_[0-9a-f]{32}", hashed) and hashed != end_user_id("tnt_other", SAFETY_ID)
    records = svc.meter.records(tenant.tenant_id)
    assert sorted(record.get("end_user", "") for record in records) == sorted(["", hashed, hashed, legacy])
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.startswith("{")]
    assert {line.get("end_user") for line in lines if line.get("message") == "images produced"} >= {hashed, legacy}
    stored = json.dumps(svc.meter._db.scan(TableName=svc.settings.usage_table)["Items"])
    stored += json.dumps(svc.responses._db.scan(TableName=svc.settings.responses_table)["Items"])
    for raw in (SAFETY_ID, LEGACY_USER, SAFETY_ID.split("@")[0]):
        assert raw not in logged and raw not in stored


def test_a_background_job_keeps_only_the_hash(svc, tenant):
    from darkroom.api.responses import ResponseCreateRequest
    from darkroom.end_users import end_user_id
    from darkroom.jobs import run_job
    from darkroom.ports import RequestContext
    from darkroom.responses import create_response

    request = ResponseCreateRequest.model_validate(
        {
            "model": "local-image",
            "input": "a lighthouse",
            "background": True,
            "safety_identifier": SAFETY_ID,
            "tools": [{"type": "image_generation", "size": "256x256"}],
        }
    )
    queued = create_response(RequestContext(tenant, "req-background-eu"), request, svc.response_ports)
    table = json.dumps(svc.responses._db.scan(TableName=svc.settings.responses_table)["Items"])
    assert SAFETY_ID not in table and end_user_id(tenant.tenant_id, SAFETY_ID) in table
    run_job(tenant.tenant_id, queued.id, 900_000, svc.worker)
    (record,) = svc.meter.records(tenant.tenant_id)
    assert record["end_user"] == end_user_id(tenant.tenant_id, SAFETY_ID)
