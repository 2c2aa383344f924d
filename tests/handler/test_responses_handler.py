"""ResponsesFunction in-process with moto: routing by capability, the image tool, threading, storage."""

import base64
import io
import json

import pytest
from PIL import Image, ImageChops

from lambda_harness import invoke, load_event


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(image)).decode()


RED = Image.new("RGB", (64, 48), (220, 20, 20))


def _create(body: dict) -> tuple[int, dict, dict]:
    event = load_event("responses-create")
    event["body"] = json.dumps(body)
    status, headers, raw = invoke("responses", event, raw=True)
    return status, headers, json.loads(raw) if headers.get("content-type", "").startswith("application/json") else raw


def _get(response_id: str, method: str = "GET") -> tuple[int, dict]:
    event = load_event(
        "responses-retrieve",
        path=f"/v1/responses/{response_id}",
        httpMethod=method,
        pathParameters={"response_id": response_id},
    )
    status, _, body = invoke("responses", event)
    return status, body


def _image_input(text: str, *images: Image.Image) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": text},
                *({"type": "input_image", "image_url": _data_url(i)} for i in images),
            ],
        }
    ]


def test_replayed_event_answers_in_text(tenant):
    status, _, body = invoke("responses", load_event("responses-create"))
    assert status == 200, body
    (message,) = body["output"]
    assert message["type"] == "message" and "not a model" in message["content"][0]["text"]
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + body["usage"]["output_tokens"]


def test_a_vision_model_describes_measured_facts(tenant):
    status, _, body = _create({"model": "local-vision", "input": _image_input("what is this?", RED)})
    assert status == 200, body
    text = body["output"][0]["content"][0]["text"]
    assert "PNG, 64x48" in text and "#dc1414" in text  # size and the dominant colour, measured
    assert body["usage"]["input_tokens"] > 85  # image tokens counted


def test_a_text_model_gets_images_described_by_its_fallback(tenant):
    status, _, body = _create({"model": "local-text", "input": _image_input("describe", RED)})
    assert status == 200, body
    text = body["output"][0]["content"][0]["text"]
    assert "described by local-vision" in text and "PNG, 64x48" in text


def test_the_image_tool_generates_and_stores(tenant, svc):
    status, _, body = _create(
        {
            "model": "local-text",
            "input": "a lighthouse at dusk",
            "tools": [{"type": "image_generation", "size": "256x256", "output_format": "webp"}],
        }
    )
    assert status == 200, body
    (call,) = body["output"]
    assert call["type"] == "image_generation_call" and call["status"] == "completed" and call["action"] == "generate"
    image = Image.open(io.BytesIO(base64.b64decode(call["result"])))
    assert (image.format, image.size) == ("WEBP", (256, 256)) and call["url"]
    assert body["usage"]["images"] == 1
    (record,) = svc.meter.records(tenant.tenant_id)
    assert record["operation"] == "generate"


def test_the_image_tool_edits_an_input_image_and_threading_edits_the_last_image(tenant):
    photo = Image.effect_noise((96, 64), 50).convert("RGB")
    status, _, first = _create(
        {"model": "local-text", "input": _image_input("add a hat", photo), "tools": [{"type": "image_generation"}]}
    )
    assert status == 200, first
    assert first["output"][0]["action"] == "edit" and first["output"][0]["size"] == "96x64"
    status, _, second = _create(
        {
            "model": "local-text",
            "input": "now make it blue",
            "previous_response_id": first["id"],
            "tools": [{"type": "image_generation"}],
        }
    )
    assert status == 200, second
    call = second["output"][0]
    assert call["action"] == "edit" and call["size"] == "96x64"
    previous = Image.open(io.BytesIO(base64.b64decode(first["output"][0]["result"]))).convert("RGB")
    latest = Image.open(io.BytesIO(base64.b64decode(call["result"]))).convert("RGB")
    assert ImageChops.difference(previous, latest).getbbox() is not None


def test_threading_carries_images_to_analysis(tenant):
    status, _, first = _create({"model": "local-vision", "input": _image_input("remember this", RED)})
    status, _, second = _create(
        {"model": "local-vision", "input": "and what was it?", "previous_response_id": first["id"]}
    )
    assert status == 200 and "PNG, 64x48" in second["output"][0]["content"][0]["text"]
    assert "3 message(s)" in second["output"][0]["content"][0]["text"]


def test_stored_responses_are_retrieved_deleted_and_scoped_to_the_tenant(tenant, svc):
    status, _, created = _create(
        {"model": "local-text", "input": "x", "tools": [{"type": "image_generation"}], "metadata": {"ticket": "42"}}
    )
    status, fetched = _get(created["id"])
    assert status == 200 and fetched["metadata"] == {"ticket": "42"}
    assert fetched["output"][0]["result"] == created["output"][0]["result"] and fetched["output"][0]["url"]
    other = svc.directory.create_tenant("other")
    assert svc.responses.get(other.tenant_id, created["id"]) is None
    status, body = _get(created["id"], method="DELETE")
    assert status == 200 and body == {"id": created["id"], "object": "response", "deleted": True}
    assert _get(created["id"])[0] == 404
    status, _, body = _create({"model": "local-text", "input": "x", "previous_response_id": created["id"]})
    assert status == 400 and body["error"]["code"] == "previous_response_not_found"


def test_store_false_stores_nothing(tenant):
    status, _, created = _create({"model": "local-text", "input": "x", "store": False})
    assert status == 200 and created["store"] is False
    assert _get(created["id"])[0] == 404


def test_stream_returns_the_whole_event_sequence(tenant):
    status, headers, body = _create({"model": "local-text", "input": "hello", "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({"model": "nope", "input": "x"}, "model", "model_not_found"),
        ({"model": "local-text", "input": "x", "seed_of_chaos": 1}, "seed_of_chaos", "unknown_parameter"),
        (
            {"model": "local-text", "input": "x", "tools": [{"type": "web_search"}]},
            "tools[0].type",
            "unsupported_value",
        ),
        (
            {"model": "local-text", "input": "x", "tools": [{"type": "image_generation", "size": "3x3"}]},
            "tools[0].size",
            "invalid_value",
        ),
        (
            {"model": "local-text", "input": "x", "previous_response_id": "resp_missing"},
            "previous_response_id",
            "previous_response_not_found",
        ),
        (
            {
                "model": "local-vision",
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,!!"}]}
                ],
            },
            "input[0].content[0].image_url",
            "invalid_base64",
        ),
        ({"model": "local-vision", "input": [{"role": "robot", "content": "x"}]}, "input[0]", "invalid_value"),
    ],
)
def test_bad_requests_are_400s_naming_the_parameter(tenant, body, param, code):
    status, _, answer = _create(body)
    assert status in (400, 404), answer
    assert (answer["error"]["param"], answer["error"]["code"]) == (param, code)


def test_sampling_parameters_clients_always_send_are_accepted(tenant):
    status, _, body = _create(
        {"model": "local-text", "input": "x", "temperature": 0.2, "top_p": 1, "max_output_tokens": 100}
    )
    assert status == 200, body


def test_an_image_the_fallback_cannot_describe_becomes_a_note(tenant, monkeypatch):
    from darkroom.inference.local import LocalBackend

    original = LocalBackend.respond

    def flaky(self, model, job):
        if model.id == "local-vision":
            raise RuntimeError("vision backend down")
        return original(self, model, job)

    monkeypatch.setattr(LocalBackend, "respond", flaky)
    status, _, body = _create({"model": "local-text", "input": _image_input("describe", RED)})
    assert status == 200, body
    assert "[Image 1 could not be described.]" in body["output"][0]["content"][0]["text"]


def test_without_a_fallback_a_text_model_refuses_images(tenant, monkeypatch, svc):
    models = dict(svc.catalog.models)
    models["local-text"] = models["local-text"].model_copy(update={"vision_fallback": None})
    monkeypatch.setattr(svc, "catalog", svc.catalog.model_copy(update={"models": models}))
    status, _, body = _create({"model": "local-text", "input": _image_input("describe", RED)})
    assert status == 400 and (body["error"]["param"], body["error"]["code"]) == ("model", "model_not_supported")


def test_the_tool_mask_limits_the_edit(tenant):
    photo = Image.effect_noise((64, 64), 50).convert("RGB")
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))  # edit the left half only
    status, _, body = _create(
        {
            "model": "local-text",
            "input": _image_input("paint it", photo),
            "tools": [
                {"type": "image_generation", "action": "edit", "input_image_mask": {"image_url": _data_url(mask)}}
            ],
        }
    )
    assert status == 200, body
    edited = Image.open(io.BytesIO(base64.b64decode(body["output"][0]["result"]))).convert("RGB")
    difference = ImageChops.difference(edited, photo)
    assert difference.crop((32, 0, 64, 64)).getbbox() is None and difference.crop((0, 0, 32, 64)).getbbox()
