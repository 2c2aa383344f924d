"""``stream: true`` through the openai SDK's own stream types, on the handlers in-process (the buffered path: every
event arrives in one body, in order). The incremental path through a streaming transport is tested in
tests/local/ against the local stack."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image
from test_sdk_parameters import _handle, _png  # the SDK against the handlers, as API Gateway would call them

from lambda_harness import EVENT_KEY


@pytest.fixture
def client(tenant):
    http = httpx.Client(transport=httpx.MockTransport(_handle))
    return openai.OpenAI(api_key=EVENT_KEY, base_url="http://darkroom.test/v1", http_client=http, max_retries=0)


def _frames(b64s):
    return [Image.open(io.BytesIO(base64.b64decode(b64))) for b64 in b64s]


@pytest.mark.parametrize("partials", [0, 1, 2, 3])
def test_generate_streams_the_partials_asked_then_the_completed_image(client, partials):
    stream = client.images.generate(
        prompt="a lighthouse", model="local-image", size="512x512", stream=True, partial_images=partials
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.partial_image"] * partials + [
        "image_generation.completed"
    ]
    assert [event.partial_image_index for event in events[:-1]] == list(range(partials))
    completed = events[-1]
    assert completed.usage.total_tokens > 0 and completed.size == "512x512" and completed.output_format == "png"
    frames = _frames(event.b64_json for event in events)
    assert all(frame.size == (512, 512) and frame.format == "PNG" for frame in frames)
    # Each partial is an earlier stage of the stand-in's drawing, not the final image again.
    final = frames[-1].convert("RGBA").tobytes()
    assert all(frame.convert("RGBA").tobytes() != final for frame in frames[:-1])


def test_a_streamed_request_makes_one_image(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", model="local-image", stream=True, n=2)
    assert (raised.value.body["param"], raised.value.body["code"]) == ("n", "unsupported_value")


def test_edit_streams_image_edit_events(client):
    stream = client.images.edit(
        image=("a.png", _png((256, 256)), "image/png"),
        mask=("m.png", _png((256, 256), rgba=True), "image/png"),
        prompt="paint a door",
        model="local-image",
        stream=True,
        partial_images=2,
        output_format="jpeg",
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert all(frame.format == "JPEG" and frame.size == (256, 256) for frame in _frames(e.b64_json for e in events))


def test_responses_stream_helper_sees_partials_and_the_final_response(client):
    tool = {"type": "image_generation", "partial_images": 2, "size": "256x256"}
    with client.responses.stream(model="local-image", input="a brass owl", tools=[tool]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    partials = [event for event in events if event.type == "response.image_generation_call.partial_image"]
    assert [event.partial_image_index for event in partials] == [0, 1]
    assert types[-1] == "response.completed" and [e.sequence_number for e in events] == list(range(len(events)))
    (call,) = final.output
    assert call.type == "image_generation_call" and all(event.item_id == call.id for event in partials)
    assert _frames([call.result])[0].size == (256, 256)


def test_an_idempotency_key_on_an_image_stream_is_refused(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", model="local-image", stream=True, extra_headers={"Idempotency-Key": "k-1"})
    assert raised.value.body["param"] == "stream"


def test_a_failure_mid_stream_raises_in_the_sdk_and_fails_the_response(client, monkeypatch):
    from darkroom.api.errors import UpstreamError
    from darkroom.inference.local import LocalBackend

    def failing(self, model, job):
        if job.partials is not None:
            job.partials.deliver(0, Image.new("RGB", (job.width, job.height)))
        raise UpstreamError("The model failed.")

    monkeypatch.setattr(LocalBackend, "generate", failing)
    stream = client.images.generate(prompt="x", model="local-image", size="256x256", stream=True, partial_images=1)
    seen = []
    with pytest.raises(openai.APIError) as raised:
        for event in stream:
            seen.append(event.type)
    assert seen == ["image_generation.partial_image"] and raised.value.body["code"] == "upstream_error"

    tool = {"type": "image_generation", "partial_images": 1, "size": "256x256"}
    with client.responses.stream(model="local-image", input="an owl", tools=[tool]) as responses:
        events = list(responses)
        with pytest.raises(RuntimeError):
            responses.get_final_response()  # no response.completed
    assert events[-1].type == "response.failed" and events[-1].response.error.code == "server_error"


def test_a_text_answer_streams_deltas_the_sdk_accumulates(client):
    with client.responses.stream(model="local-text", input="hello there\nsecond line") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == final.output_text  # the stand-in writes line by line
    assert types[-1] == "response.completed" and [e.sequence_number for e in events] == list(range(len(events)))
    assert {e.item_id for e in events if e.type == "response.output_text.delta"} == {final.output[0].id}
