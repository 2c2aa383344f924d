"""darkroom.streaming against the REAL openai SDK: the buffered SSE body is served through httpx.MockTransport."""

import asyncio
import base64
import io
import json

import httpx
import openai
import pytest
from PIL import Image

from darkroom.api.responses import ImageGenerationCall, OutputMessage, OutputText, ResponseObject, ResponseUsage
from darkroom.streaming import failed_events, response_events, sse

TEXT = "Here is your picture of a red fox sitting in fresh snow at dawn."


def tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG = tiny_png()


def message() -> OutputMessage:
    return OutputMessage(id="msg_0001", content=[OutputText(text=TEXT)])


def image_call() -> ImageGenerationCall:
    return ImageGenerationCall(
        id="ig_0001",
        result=PNG,
        revised_prompt="a red fox in snow",
        action="generate",
        size="1024x1024",
        quality="low",
        output_format="png",
        background="opaque",
    )


def response(*output, partial_images: int | None = None) -> ResponseObject:
    tool = {"type": "image_generation"} | ({} if partial_images is None else {"partial_images": partial_images})
    return ResponseObject(
        id="resp_0001",
        created_at=1_700_000_000,
        model="gpt-image-1",
        output=list(output),
        tools=[tool],
        usage=ResponseUsage(input_tokens=12, output_tokens=34, total_tokens=46, images=1),
    )


MESSAGE_ONLY = response(message())
IMAGE_ONLY = response(image_call())
BOTH = response(image_call(), message())

MESSAGE_TYPES = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
IMAGE_TYPES = [
    "response.output_item.added",
    "response.image_generation_call.in_progress",
    "response.image_generation_call.generating",
    "response.image_generation_call.completed",
    "response.output_item.done",
]  # no partial_image: the tool does not ask for any


def expected_types(resp: ResponseObject) -> list[str]:
    types = ["response.created", "response.in_progress"]
    for item in resp.output:
        types += MESSAGE_TYPES if item.type == "message" else IMAGE_TYPES
    return types + ["response.completed"]


def collapse_deltas(types: list[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        if not (t == "response.output_text.delta" and out and out[-1] == t):
            out.append(t)
    return out


def client_for(body: str, requests: list | None = None) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        if requests is not None:
            requests.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, text=body)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(api_key="x", base_url="http://test/v1", http_client=http, max_retries=0)


# ---- the event list itself -------------------------------------------------------------------------------------


@pytest.mark.parametrize("resp", [MESSAGE_ONLY, IMAGE_ONLY, BOTH], ids=["message", "image", "both"])
def test_sequence_shape(resp):
    events = response_events(resp)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert collapse_deltas([e["type"] for e in events]) == expected_types(resp)
    created, in_progress, completed = events[0], events[1], events[-1]
    for early in (created, in_progress):
        assert early["response"]["status"] == "in_progress"
        assert early["response"]["output"] == [] and "usage" not in early["response"]  # optional, not nullable
        assert early["response"]["error"] is None and early["response"]["incomplete_details"] is None
    assert completed["response"] == resp.model_dump(mode="json")
    assert not any("error" in e for e in events)  # a top-level "error" would make the SDK raise


def test_text_deltas_reassemble_and_item_events_point_at_the_item():
    events = response_events(BOTH)
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert 1 < len(deltas) <= 4
    assert "".join(d["delta"] for d in deltas) == TEXT
    for d in deltas:
        assert d["item_id"] == "msg_0001" and d["output_index"] == 1 and d["content_index"] == 0
        assert d["logprobs"] == []
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert added[0]["item"] == {
        "type": "image_generation_call",
        "id": "ig_0001",
        "status": "in_progress",
        "result": None,
    }
    assert added[1]["item"]["status"] == "in_progress" and added[1]["item"]["content"] == []
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert done[0]["item"]["result"] == PNG and done[0]["item"]["status"] == "completed"


@pytest.mark.parametrize("asked", [None, 0, 1, 2, 3])
def test_partial_image_events_are_exactly_the_number_asked_in_order_at_the_final_size(asked):
    events = response_events(response(image_call(), message(), partial_images=asked))
    partials = [e for e in events if e["type"] == "response.image_generation_call.partial_image"]
    assert [p["partial_image_index"] for p in partials] == list(range(asked or 0))
    types = [e["type"] for e in events]
    if partials:  # between generating and completed, with nothing else in between
        first = types.index("response.image_generation_call.partial_image")
        assert types[first - 1] == "response.image_generation_call.generating"
        assert types[first + len(partials)] == "response.image_generation_call.completed"
    for partial in partials:
        assert partial["item_id"] == "ig_0001" and partial["output_index"] == 0
        assert (partial["size"], partial["output_format"]) == ("1024x1024", "png")
        image = Image.open(io.BytesIO(base64.b64decode(partial["partial_image_b64"])))
        assert image.format == "PNG" and image.size == (4, 3)  # the final image's own size


def test_partials_that_would_push_the_stream_past_lambdas_6_mb_are_left_out_finest_first(monkeypatch):
    from darkroom import streaming
    from darkroom.content_credentials import Provenance
    from darkroom.partial_images import partial_images

    coarse, finer, finest = partial_images(PNG, 3, "png", Provenance("m"))
    # Room for the final image twice and the two coarsest partials, not the third. (Each partial's Content
    # Credentials are signed afresh, with their own ids: a few bytes of slack, far less than a partial.)
    slack = 256
    assert len(finest) > slack
    monkeypatch.setattr(streaming, "STREAM_BUDGET_BYTES", 2 * len(PNG) + len(coarse) + len(finer) + slack)
    events = response_events(response(image_call(), partial_images=3))
    sent = [e["partial_image_b64"] for e in events if e["type"] == "response.image_generation_call.partial_image"]
    assert [_pixels(p) for p in sent] == [_pixels(coarse), _pixels(finer)]
    assert events[-1]["response"]["output"][0]["result"] == PNG  # the final image is never what gives way


def test_empty_text_has_no_deltas_and_image_without_result_has_no_partial():
    resp = response(
        OutputMessage(id="msg_e", content=[OutputText(text="")]),
        ImageGenerationCall(id="ig_u", url="u"),
        partial_images=2,
    )
    types = [e["type"] for e in response_events(resp)]
    assert "response.output_text.delta" not in types
    assert "response.image_generation_call.partial_image" not in types
    assert types[-1] == "response.completed"


def test_sse_format():
    events = response_events(MESSAGE_ONLY)
    body = sse(events)
    blocks = body.split("\n\n")
    assert blocks[-1] == "" and len(blocks) == len(events) + 1
    for block, event in zip(blocks[:-1], events, strict=True):
        event_line, data_line = block.split("\n")
        assert event_line == f"event: {event['type']}"
        assert data_line.startswith("data: {") and ", " not in data_line[:40]
        assert json.loads(data_line[len("data: ") :]) == event
    assert "[DONE]" not in body


def test_sse_keeps_multiline_and_unicode_text_on_one_data_line():
    text = "line one\nline two \u2028 caf\u00e9 \U0001f98a"
    body = sse(response_events(response(OutputMessage(id="msg_u", content=[OutputText(text=text)]))))
    assert all(line.startswith(("event: ", "data: ")) for line in body.split("\n") if line)
    assert body.isascii()


# ---- the real SDK ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resp", [MESSAGE_ONLY, IMAGE_ONLY, BOTH], ids=["message", "image", "both"])
def test_sdk_create_stream_yields_every_event_in_order(resp):
    events = response_events(resp)
    sent: list[httpx.Request] = []
    client = client_for(sse(events), sent)
    stream = client.responses.create(model="gpt-image-1", input="a fox", stream=True)
    received = list(stream)
    assert json.loads(sent[0].content)["stream"] is True
    assert [e.type for e in received] == [e["type"] for e in events]
    numbers = [e.sequence_number for e in received]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0
    assert type(received[0]).__name__ == "ResponseCreatedEvent"
    assert all(type(e).__module__.startswith("openai.types.responses") for e in received)
    final = received[-1].response
    assert final.status == "completed" and final.id == "resp_0001"
    assert final.usage.total_tokens == 46


@pytest.mark.parametrize("resp", [MESSAGE_ONLY, IMAGE_ONLY, BOTH], ids=["message", "image", "both"])
def test_sdk_stream_helper_final_response(resp):
    events = response_events(resp)
    client = client_for(sse(events))
    with client.responses.stream(model="gpt-image-1", input="a fox", tools=[{"type": "image_generation"}]) as stream:
        received = [e.type for e in stream]
        final = stream.get_final_response()
    assert received == [e["type"] for e in events]
    has_message = any(item.type == "message" for item in resp.output)
    assert final.output_text == (TEXT if has_message else "")
    assert [item.type for item in final.output] == [item.type for item in resp.output]
    calls = [item for item in final.output if item.type == "image_generation_call"]
    for call in calls:
        assert call.result == PNG and call.status == "completed" and call.id == "ig_0001"
        assert base64.b64decode(call.result).startswith(b"\x89PNG")
        assert getattr(call, "revised_prompt", None) == "a red fox in snow"  # extra fields survive


def test_sdk_stream_helper_text_delta_snapshots():
    client = client_for(sse(response_events(BOTH)))
    with client.responses.stream(model="gpt-image-1", input="a fox") as stream:
        snapshots = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
        done = stream.get_final_response()
    assert snapshots[-1] == TEXT and all(TEXT.startswith(s) for s in snapshots)
    assert done.output_text == TEXT


def test_sdk_accepts_event_stream_content_type_for_stream_and_async():
    body = sse(response_events(BOTH))

    async def run():
        async def handler(request):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = openai.AsyncOpenAI(api_key="x", base_url="http://test/v1", http_client=http, max_retries=0)
            async with client.responses.stream(model="gpt-image-1", input="a fox") as stream:
                return await stream.get_final_response()

    final = asyncio.run(run())
    assert final.output_text == TEXT
    assert final.output[0].result == PNG


# ---- failures -------------------------------------------------------------------------------------------------------

FAILURE = {"code": "server_error", "message": "The image backend crashed.", "type": "server_error", "param": None}


def test_failed_events_shape():
    events = failed_events("resp_f", "gpt-image-1", 1_700_000_000, FAILURE)
    assert [e["type"] for e in events] == ["response.created", "response.failed"]
    assert [e["sequence_number"] for e in events] == [0, 1]
    assert events[0]["response"]["status"] == "in_progress"
    failed = events[1]["response"]
    assert failed["status"] == "failed" and failed["id"] == "resp_f" and failed["output"] == []
    assert failed["error"] == {"code": "server_error", "message": "The image backend crashed."}
    assert "error" not in events[1]  # nested in the response, as the real API does: the SDK yields, not raises
    assert failed_events("r", "m", 1, {})[1]["response"]["error"]["code"] == "server_error"


def test_sdk_create_stream_yields_response_failed_without_raising():
    client = client_for(sse(failed_events("resp_f", "gpt-image-1", 1_700_000_000, FAILURE)))
    received = list(client.responses.create(model="gpt-image-1", input="a fox", stream=True))
    assert [e.type for e in received] == ["response.created", "response.failed"]
    failed = received[-1].response
    assert failed.status == "failed"
    assert failed.error.code == "server_error" and failed.error.message == "The image backend crashed."


def test_sdk_stream_helper_passes_failure_and_has_no_final_response():
    client = client_for(sse(failed_events("resp_f", "gpt-image-1", 1_700_000_000, FAILURE)))
    with client.responses.stream(model="gpt-image-1", input="a fox") as stream:
        received = list(stream)
        assert received[-1].type == "response.failed"
        assert received[-1].response.error.message == "The image backend crashed."
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()


def test_a_top_level_error_key_is_what_would_make_the_sdk_raise():
    """The contrast case, pinning the SDK behaviour failed_events() relies on."""
    bad = 'event: error\ndata: {"type":"error","error":{"message":"boom","code":"server_error"}}\n\n'
    client = client_for(sse(failed_events("resp_f", "m", 1, FAILURE)) + bad)
    with pytest.raises(openai.APIError, match="boom"):
        list(client.responses.create(model="gpt-image-1", input="a fox", stream=True))


def _pixels(b64: str) -> bytes:
    import base64
    import io

    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGBA").tobytes()
