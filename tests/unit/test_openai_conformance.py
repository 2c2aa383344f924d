"""The conformance check itself (tests/openai_conformance.py): it rejects known-bad bodies in every schema
family, it ignores exactly the listed deviations, and darkroom's own wire models pass it."""

import base64
import io
import json

import pytest
from PIL import Image

import openai_conformance as conformance
from darkroom.api.errors import ModelNotFound
from darkroom.api.files import FileDeleted, FileList, FileObject, Upload
from darkroom.api.images import ImageData, ImagesResponse, ImagesUsage, InputTokensDetails
from darkroom.api.responses import (
    ImageGenerationCall,
    OutputMessage,
    OutputText,
    ResponseDeleted,
    ResponseObject,
    ResponseUsage,
    response_error,
)
from darkroom.streaming import failed_events, response_events, sse

SOURCE_COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"


def png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def response(**changes) -> ResponseObject:
    fields = dict(
        id="resp_1",
        created_at=1_700_000_000,
        model="local-text",
        output=[
            OutputMessage(id="msg_1", content=[OutputText(text="hello")]),
            ImageGenerationCall(id="ig_1", result=png_b64(), size="256x256", output_format="png"),
        ],
        tools=[{"type": "image_generation", "partial_images": 2}],
        usage=ResponseUsage(input_tokens=3, output_tokens=4, total_tokens=7),
    )
    return ResponseObject(**(fields | changes))


def check(method: str, path: str, body, status: int = 200, content_type: str = "application/json"):
    raw = body if isinstance(body, str) else json.dumps(body)
    return conformance.check(method, path, status, content_type, raw.encode())


def pointers(found) -> set[str]:
    return {item.pointer for item in found}


# -- every schema file names its source and license ----------------------------------------------------------


@pytest.mark.parametrize("path", sorted(conformance.SCHEMAS.glob("*.json")), ids=lambda p: p.name)
def test_each_schema_file_names_the_spec_commit_and_its_license(path):
    comment = json.loads(path.read_text())["$comment"]
    assert SOURCE_COMMIT in comment and "MIT" in comment and "openai-openapi" in comment


# -- darkroom's own bodies pass --------------------------------------------------------------------------------


def test_darkroom_wire_models_conform():
    bodies = [
        ("POST", "/responses", response().model_dump_json(exclude_none=True)),
        (
            "GET",
            "/responses/resp_1",
            response(
                status="failed", error={"code": "server_error", "message": "x"}, usage=None, output=[]
            ).model_dump_json(exclude_none=True),
        ),
        ("DELETE", "/responses/resp_1", ResponseDeleted(id="resp_1").model_dump_json()),
        (
            "POST",
            "/images/generations",
            ImagesResponse(
                created=1,
                data=[ImageData(b64_json="eA==")],
                size="1024x1024",
                quality="low",
                output_format="png",
                background="opaque",
                usage=ImagesUsage(
                    input_tokens=1,
                    output_tokens=2,
                    total_tokens=3,
                    input_tokens_details=InputTokensDetails(text_tokens=1, image_tokens=0),
                ),
            ).model_dump_json(exclude_none=True),
        ),
        ("GET", "/files", FileList(data=[]).model_dump_json(exclude_none=True)),
        ("DELETE", "/files/file-1", FileDeleted(id="file-1").model_dump_json()),
        (
            "POST",
            "/uploads",
            Upload(
                id="upload_1", bytes=3, created_at=1, expires_at=2, filename="a.png", purpose="vision", status="pending"
            ).model_dump_json(exclude_none=True),
        ),
    ]
    for method, path, body in bodies:
        assert check(method, path, body) == [], (method, path)
    error = ModelNotFound("nope").envelope()
    assert check("GET", "/models/nope", error, status=404) == []


def test_darkroom_streams_conform_event_by_event():
    for events in (response_events(response()), failed_events("resp_1", "m", 1, {"code": "upstream_error"})):
        assert check("POST", "/responses", sse(events), content_type="text/event-stream; charset=utf-8") == []


# -- each family rejects a known-bad body ------------------------------------------------------------------------


def test_images_response_bad_bodies_are_rejected():
    found = check(
        "POST",
        "/images/generations",
        {"data": [{"b64_json": 7}], "output_format": "gif", "usage": {"input_tokens": 1, "output_tokens": 1}},
    )
    assert {"/data/0/b64_json", "/output_format", "/usage"} <= pointers(found)
    assert any("created" in item.message for item in found)


def test_response_bad_bodies_are_rejected():
    body = json.loads(response().model_dump_json())
    del body["top_p"]
    body["usage"]["input_tokens_details"] = {"cached_tokens": 0}
    body["output"][1]["status"] = "done"
    body["error"] = {"code": "upstream_error", "message": "x"}
    found = check("POST", "/responses", body)
    assert {"", "/usage/input_tokens_details", "/output/1/status", "/error/code"} <= pointers(found)
    assert check("POST", "/responses", {**json.loads(response().model_dump_json()), "usage": None})


def test_stream_event_bad_events_are_rejected():
    events = response_events(response())
    events[0]["response"]["usage"] = None  # what darkroom used to send
    partial = next(e for e in events if e["type"] == "response.image_generation_call.partial_image")
    del partial["partial_image_index"]
    events.append({"type": "response.made_up", "sequence_number": 99})
    found = check("POST", "/responses", sse(events), content_type="text/event-stream")
    assert len(found) == 3
    assert any(item.pointer.endswith("/response/usage") for item in found)
    assert any("partial_image_index" in item.message for item in found)
    assert any("response.made_up" in item.message for item in found)


def test_error_envelope_bad_bodies_are_rejected():
    assert pointers(check("POST", "/responses", {"error": {"message": "x", "type": "t"}}, status=400)) == {"/error"}
    assert check("GET", "/files/x", {"message": "Not Found"}, status=404)  # an API Gateway style body
    assert check("GET", "/files/x", "<html>oops</html>", status=502, content_type="text/html")


def test_model_bad_bodies_are_rejected():
    assert pointers(check("GET", "/models", {"object": "list", "data": [{"id": "m", "object": "model"}]})) == {
        "/data/0"
    }
    assert pointers(check("GET", "/models/m", {"id": "m", "object": "engine", "created": 1, "owned_by": "x"})) == {
        "/object"
    }


def test_file_bad_bodies_are_rejected():
    good = FileObject(id="file-1", bytes=3, created_at=1, filename="a.png", purpose="vision").model_dump()
    assert pointers(check("POST", "/files", {**good, "purpose": "pictures"})) == {"/purpose"}
    assert pointers(check("DELETE", "/files/file-1", {"id": "file-1", "object": "file", "deleted": "yes"})) == {
        "/deleted"
    }
    assert pointers(
        check(
            "POST",
            "/uploads/u/complete",
            {
                "id": "u",
                "object": "upload",
                "status": "done",
                "bytes": 1,
                "created_at": 1,
                "expires_at": 2,
                "filename": "a",
                "purpose": "vision",
            },
        )
    ) == {"/status"}
    assert pointers(check("GET", "/files", {"object": "list", "data": [], "has_more": False})) == {""}


# -- deviations: every one has a reason, and each is as narrow as it says --------------------------------------


def test_every_deviation_has_a_reason_a_schema_and_a_path():
    assert conformance.DEVIATIONS
    for entry in conformance.DEVIATIONS:
        assert set(entry) == {"schema", "path", "allow", "reason"}, entry
        assert len(entry["reason"].split()) >= 8, entry  # a reason, not a label
        assert entry["path"] == "" or entry["path"].startswith("/"), entry  # "": the whole body or event
        assert conformance.validator(entry["schema"]).schema


def test_deviations_allow_only_what_they_name():
    body = {"created": 1, "data": [], "size": "256x256"}
    assert check("POST", "/images/edits", body) == []
    assert pointers(check("POST", "/images/edits", body | {"size": "auto"})) == {"/size"}
    assert pointers(check("POST", "/images/edits", body | {"quality": "standard"})) == {"/quality"}
    # first_id may be null on a file list, and nowhere else
    assert (
        check("GET", "/files", {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False})
        == []
    )
    assert pointers(
        check("GET", "/files", {"object": "list", "data": [], "first_id": 1, "last_id": None, "has_more": False})
    ) == {"/first_id"}


def test_a_response_stored_before_these_fields_existed_conforms_when_read_back():
    stored = {  # as _record() kept responses before cache_write_tokens and the required nulls were sent
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "background": False,
        "model": "local-text",
        "output": [{"type": "image_generation_call", "id": "ig_1", "status": "completed", "size": "256x256"}],
        "metadata": {},
        "store": True,
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}},
        "usage": {
            "input_tokens": 1,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 2,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 3,
            "images": 1,
        },
    }
    read_back = ResponseObject.model_validate(stored)
    assert check("GET", "/responses/resp_1", read_back.model_dump_json(exclude_none=True)) == []
    read_back.error = response_error({"code": "upstream_timeout", "message": "slow"})  # darkroom's own code
    assert read_back.error == {"code": "server_error", "message": "slow"}
    assert check("GET", "/responses/resp_1", read_back.model_dump_json(exclude_none=True)) == []
    assert response_error({"code": "content_policy_violation"})["code"] == "invalid_prompt"
