"""The Responses API through the real openai SDK: analysis, the image tool, threading, streaming, storage."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

RED = Image.new("RGB", (40, 30), (220, 20, 20))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ask(text: str, **image) -> list[dict]:
    return [{"role": "user", "content": [{"type": "input_text", "text": text}, {"type": "input_image", **image}]}]


def test_analysis_with_a_data_url_a_file_id_and_an_http_url(client, image_origin):
    data_url = "data:image/png;base64," + base64.b64encode(_png(RED)).decode()
    uploaded = client.files.create(file=("red.png", _png(RED), "image/png"), purpose="vision")
    for image in ({"image_url": data_url}, {"file_id": uploaded.id}, {"image_url": image_origin.url("/red.png")}):
        response = client.responses.create(model="local-vision", input=_ask("what is this?", **image))
        assert "PNG, 40x30" in response.output_text and "#dc1414" in response.output_text, image


def test_refused_urls_never_reach_the_canary(client, canary, image_origin):
    refused = [
        canary.url("/x.png"),
        image_origin.url("/redirect"),
        f"http://localhost:{canary.origin.split(':')[1]}/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ]
    for url in refused:
        with pytest.raises(openai.BadRequestError) as error:
            client.responses.create(model="local-vision", input=_ask("x", image_url=url))
        assert error.value.body["param"] == "input[0].content[1].image_url"
        assert "127.0.0.1" not in error.value.body["message"] and "169.254" not in error.value.body["message"]
    assert canary.requests == []


def test_generation_and_editing_through_the_tool_with_threading(client):
    first = client.responses.create(
        model="local-text", input="a lighthouse at dusk", tools=[{"type": "image_generation", "size": "256x256"}]
    )
    (call,) = first.output
    assert call.type == "image_generation_call" and call.status == "completed"
    assert Image.open(io.BytesIO(base64.b64decode(call.result))).size == (256, 256)
    second = client.responses.create(
        model="local-text",
        input="now make it stormy",
        previous_response_id=first.id,
        tools=[{"type": "image_generation"}],
    )
    assert second.output[0].type == "image_generation_call" and second.output[0].action == "edit"
    edited = client.responses.create(
        model="local-text",
        input=_ask("add a hat", image_url="data:image/png;base64," + base64.b64encode(_png(RED)).decode()),
        tools=[{"type": "image_generation", "action": "edit"}],
    )
    assert edited.output[0].action == "edit" and edited.output[0].size == "40x30"


def test_threading_does_not_cross_tenants(client, make_tenant):
    first = client.responses.create(model="local-text", input="hello")
    other = make_tenant().client()
    with pytest.raises(openai.BadRequestError) as error:
        other.responses.create(model="local-text", input="hi", previous_response_id=first.id)
    assert error.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(first.id)


def test_stream_helper_and_final_response(client):
    with client.responses.stream(model="local-text", input="tell me about lighthouses") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "lighthouses" in final.output_text
    with client.responses.stream(model="local-text", input="draw", tools=[{"type": "image_generation"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.image_generation_call.completed" in kinds and final.output[0].result


def test_retrieve_and_delete(client):
    created = client.responses.create(model="local-text", input="keep this", metadata={"ticket": "7"})
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.metadata == {"ticket": "7"} and fetched.output_text
    deleted = client.responses.delete(created.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


@pytest.mark.parametrize("asked", [None, 0, 2, 3])
def test_partial_images_exactly_as_asked_each_a_picture_of_the_final_size(client, asked):
    tool = {"type": "image_generation", "size": "256x256"} | ({} if asked is None else {"partial_images": asked})
    events = list(client.responses.create(model="local-text", input="a lighthouse at dusk", stream=True, tools=[tool]))
    partials = [e for e in events if e.type == "response.image_generation_call.partial_image"]
    assert [p.partial_image_index for p in partials] == list(range(asked or 0))
    (call,) = events[-1].response.output
    final = Image.open(io.BytesIO(base64.b64decode(call.result)))
    for partial in partials:
        image = Image.open(io.BytesIO(base64.b64decode(partial.partial_image_b64)))
        assert (image.size, image.format) == (final.size, final.format) == ((256, 256), "PNG")
        assert partial.item_id == call.id


def test_partial_images_out_of_range_is_a_400_naming_the_tool_option(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="local-text",
            input="a lighthouse",
            stream=True,
            tools=[{"type": "image_generation", "partial_images": 4}],
        )
    assert refused.value.body["param"] == "tools[0].partial_images"
