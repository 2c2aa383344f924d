"""The conformance check on streams (tests/openai_conformance.py): each route's stream events against its own
union (the Images API's image_generation.* / image_edit.*, the Responses API's ResponseStreamEvent), the image
stream deviations (sizes, the terminal error event), and ``install()`` handing a ``text/event-stream`` answer on
chunk by chunk while it keeps a copy that is checked once, when the response is closed. Socket-free: every
client runs on a ``MockTransport`` whose body is a generator."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

import openai_conformance as conformance
from darkroom.api.errors import ModelNotFound, UpstreamError
from darkroom.api.image_events import error_event, sse_event
from darkroom.api.responses import ImageGenerationCall, OutputMessage, OutputText, ResponseObject, ResponseUsage
from darkroom.streaming import response_events, sse

SSE = "text/event-stream; charset=utf-8"
BASE = "http://darkroom.test/v1"
USAGE = {
    "input_tokens": 3,
    "output_tokens": 5,
    "total_tokens": 8,
    "input_tokens_details": {"text_tokens": 3, "image_tokens": 0},
}


def response() -> ResponseObject:
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(png, format="PNG")
    return ResponseObject(
        id="resp_1",
        created_at=1_700_000_000,
        model="local-text",
        output=[
            OutputMessage(id="msg_1", content=[OutputText(text="hello there")]),
            ImageGenerationCall(
                id="ig_1", result=base64.b64encode(png.getvalue()).decode(), size="256x256", output_format="png"
            ),
        ],
        tools=[{"type": "image_generation", "partial_images": 1}],
        usage=ResponseUsage(input_tokens=3, output_tokens=4, total_tokens=7),
    )


def partial(kind: str = "image_generation", index: int = 0, **changes) -> dict:
    return {
        "type": f"{kind}.partial_image",
        "b64_json": "eA==",
        "created_at": 1_700_000_000,
        "size": "auto",
        "quality": "auto",
        "background": "auto",
        "output_format": "png",
        "partial_image_index": index,
    } | changes


def completed(kind: str = "image_generation", **changes) -> dict:
    return {
        "type": f"{kind}.completed",
        "b64_json": "eA==",
        "created_at": 1_700_000_000,
        "size": "256x256",
        "quality": "low",
        "background": "opaque",
        "output_format": "png",
        "usage": USAGE,
    } | changes


def body(*events: dict | bytes) -> bytes:
    """darkroom's own wire form (image_events.sse_event), with a heartbeat comment first."""
    return b": keep-alive\n\n" + b"".join(e if isinstance(e, bytes) else sse_event(e) for e in events)


def check(path: str, raw: bytes, complete: bool = True, stats: Counter | None = None):
    return conformance.check("POST", path, 200, SSE, raw, stats, complete)


def pointers(found) -> set[str]:
    return {item.pointer for item in found}


# -- the Images API's stream events ------------------------------------------------------------------------------


def test_image_streams_conform():
    stats = Counter()
    generation = body(partial(), partial(index=1, size="256x256", quality="low"), b": keep-alive\n\n", completed())
    assert check("/images/generations", generation, stats=stats) == []
    assert stats["streams"] == 1 and stats["stream events"] == 3
    edit = body(partial("image_edit", size="1024x1024"), completed("image_edit", size="1024x1024", quality="high"))
    assert check("/images/edits", edit) == []


def test_a_failed_image_stream_ends_with_the_error_event_a_deviation_allows():
    stats = Counter()
    failed = body(partial(), error_event(UpstreamError("the model failed")))
    assert check("/images/generations", failed, stats=stats) == []
    assert stats["deviation images.json#/$defs/ImageGenStreamEvent (whole)"] == 1
    assert check("/images/edits", body(error_event(RuntimeError("internal")))) == []  # internals never leave
    assert check("/images/edits", body(error_event(ModelNotFound("nope")))) == []
    # the error object must still be errors.json's: a missing code is reported
    broken = {"type": "error", "error": {"message": "x", "type": "server_error", "param": None}}
    assert check("/images/generations", body(broken))
    # a Responses-style error event is not an image stream's
    responses_style = {"type": "error", "code": "server_error", "message": "x", "param": None, "sequence_number": 1}
    assert check("/images/generations", body(responses_style))


def test_a_malformed_image_partial_event_is_a_violation():
    bad = partial()
    del bad["partial_image_index"]
    bad["quality"] = "standard"
    found = check("/images/generations", body(bad, completed()))
    assert all(item.schema == "images.json#/$defs/ImageGenStreamEvent" for item in found)
    assert all(item.pointer.startswith("event[0] image_generation.partial_image") for item in found)
    assert any("partial_image_index" in item.message for item in found)
    assert any(item.pointer.endswith("/quality") for item in found)
    assert len(found) == 2
    # an edit's events on the generations route are not its events
    assert check("/images/generations", body(partial("image_edit"), completed()))
    # the completed event carries usage (ImagesUsage)
    found = check("/images/edits", body(completed("image_edit", usage={"total_tokens": 1})))
    assert any(item.pointer.endswith("/usage") for item in found)


def test_image_stream_size_deviations_allow_only_what_they_name():
    for size in ("auto", "1024x1024", "256x256", "512x512", "640x480"):
        assert check("/images/generations", body(partial(size=size), completed(size=size))) == [], size
        assert check("/images/edits", body(partial("image_edit", size=size), completed("image_edit", size=size))) == []
    for size in ("256", "big", "0x256"):
        assert pointers(check("/images/generations", body(partial(size=size), completed()))) == {
            "event[0] image_generation.partial_image /size"
        }
    assert pointers(check("/images/edits", body(completed("image_edit", quality="standard")))) == {
        "event[0] image_edit.completed /quality"
    }


def test_event_names_and_the_end_of_an_image_stream_are_checked():
    renamed = sse_event(partial()).replace(b"event: image_generation.partial_image", b"event: partial")
    found = check("/images/generations", body(renamed, completed()))
    assert [item.message for item in found] == ["event: 'partial' names another type than the data's"]
    # read to its end without a completed (or error) event: the caller never got its image
    found = check("/images/generations", body(partial()))
    assert len(found) == 1 and "ended after 'image_generation.partial_image'" in found[0].message
    assert check("/images/generations", b"")
    # closed early: what arrived whole is checked, the missing end and a half-received event are not
    half = sse_event(completed())[:40]
    assert check("/images/generations", body(partial()) + half, complete=False) == []
    bad = partial(partial_image_index="0")
    assert pointers(check("/images/generations", body(bad) + half, complete=False)) == {
        "event[0] image_generation.partial_image /partial_image_index"
    }


# -- the Responses API's stream is still checked against ResponseStreamEvent -------------------------------------


def test_a_responses_stream_is_still_checked_against_response_stream_event():
    events = response_events(response())
    assert conformance.check("POST", "/responses", 200, SSE, sse(events).encode()) == []
    assert conformance.check("GET", "/responses/resp_1", 200, SSE, sse(events).encode()) == []
    del events[1]["sequence_number"]
    found = conformance.check("POST", "/responses", 200, SSE, sse(events).encode())
    assert [item.schema for item in found] == [conformance.STREAM_EVENT]
    assert "sequence_number" in found[0].message
    # an Images API event is no Responses event, nor is the image stream's error event
    assert conformance.check("POST", "/responses", 200, SSE, body(partial()))
    assert conformance.check("POST", "/responses", 200, SSE, body(error_event(UpstreamError("x"))))


def test_a_stream_on_a_route_that_does_not_stream_is_a_violation():
    found = conformance.check("GET", "/models", 200, SSE, body(partial()))
    assert len(found) == 1 and "does not stream" in found[0].message


# -- install(): a streamed answer passes through chunk by chunk and is checked once --------------------------------


def _modules() -> list:
    modules = [httpx]
    try:
        import httpx2

        modules.append(httpx2)
    except ImportError:
        pass
    return modules


@pytest.fixture
def recorder() -> Iterator[conformance.Recorder]:
    saved_bases, saved_stats = set(conformance.RECORDER.bases), conformance.RECORDER.stats.copy()
    earlier = conformance.RECORDER.take()
    conformance.RECORDER.bases.clear()
    conformance.RECORDER.stats.clear()
    conformance.RECORDER.watch(BASE)
    installed = conformance.install()
    try:
        yield conformance.RECORDER
    finally:
        conformance.uninstall(installed)
        conformance.RECORDER.take()
        conformance.RECORDER.bases.clear()
        conformance.RECORDER.bases.update(saved_bases)
        conformance.RECORDER.stats.clear()
        conformance.RECORDER.stats.update(saved_stats)
        conformance.RECORDER.pending += earlier


class Producer:
    """A streamed body that logs each chunk as the transport produces it."""

    def __init__(self, chunks: list[bytes], content_type: str = SSE) -> None:
        self.chunks, self.content_type, self.log = chunks, content_type, []

    def handler(self, module):
        def handle(request):
            def produce() -> Iterator[bytes]:
                for index, chunk in enumerate(self.chunks):
                    self.log.append(index)
                    yield chunk
                self.log.append("end")

            return module.Response(200, headers={"content-type": self.content_type}, content=produce())

        return handle

    def client(self, module):
        return module.Client(transport=module.MockTransport(self.handler(module)))


GENERATION = [sse_event(partial()), sse_event(partial(index=1)), sse_event(completed())]


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_a_streamed_body_reaches_the_caller_chunk_by_chunk(recorder, module):
    producer = Producer(GENERATION)
    with producer.client(module) as client, client.stream("POST", BASE + "/images/generations", json={}) as answer:
        chunks = answer.iter_raw()
        assert next(chunks) == GENERATION[0]
        assert producer.log == [0]  # the first chunk came before the transport made the second
        assert recorder.stats["streams"] == 0  # nothing checked while the stream is open
        assert next(chunks) == GENERATION[1] and producer.log == [0, 1]
        assert b"".join(chunks) == GENERATION[2] and producer.log == [0, 1, 2, "end"]
        assert recorder.stats["streams"] == 1  # read to its end: checked
    assert recorder.take() == []
    assert recorder.stats["streams"] == 1 and recorder.stats["stream events"] == 3
    assert recorder.stats["streams closed early"] == 0


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_a_streamed_body_read_in_full_is_checked_once(recorder, module):
    bad = partial()
    del bad["b64_json"]
    producer = Producer([sse_event(bad), sse_event(completed())])
    with producer.client(module) as client:
        answer = client.send(client.build_request("POST", BASE + "/images/generations"), stream=True)
        assert producer.log == []  # handed back unread
        assert json.loads(answer.read().split(b"data: ")[2]) == completed()
        answer.close()
        answer.close()
        found = recorder.take()
        assert len(found) == 1 and "b64_json" in found[0].message
        assert recorder.stats["streams"] == 1
        # sent without stream=True, httpx reads it before send returns: checked then, as a whole body
        assert client.post(BASE + "/images/generations").status_code == 200
        assert len(recorder.take()) == 1 and recorder.stats["streams"] == 2


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_a_stream_closed_early_is_checked_for_what_arrived(recorder, module):
    bad = partial(size="huge")
    half = sse_event(partial(index=1))[:30]
    producer = Producer([sse_event(bad), half, sse_event(completed())])
    with producer.client(module) as client, client.stream("POST", BASE + "/images/generations") as answer:
        chunks = answer.iter_raw()
        next(chunks), next(chunks)
    assert producer.log == [0, 1]  # never read to its end
    found = recorder.take()
    assert pointers(found) == {"event[0] image_generation.partial_image /size"}  # no complaint about the end
    assert recorder.stats["streams closed early"] == 1 and recorder.stats["stream events"] == 1
    # closed before anything was read: checked, and nothing to report
    with producer.client(module) as client, client.stream("POST", BASE + "/images/edits"):
        pass
    assert recorder.take() == [] and recorder.stats["streams closed early"] == 2


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_answers_that_are_not_streams_are_read_and_checked_in_send(recorder, module):
    producer = Producer([b'{"created": 1, "data": [{"b64_json": 7}]}'], content_type="application/json")
    with producer.client(module) as client:
        answer = client.send(client.build_request("POST", BASE + "/images/generations"), stream=True)
        assert producer.log == [0, "end"]  # read before send returned, as before
        assert pointers(recorder.take()) == {"/data/0/b64_json"}
        assert answer.json()["created"] == 1
        # an unwatched URL is left alone
        other = client.send(client.build_request("POST", "http://elsewhere.test/v1/images/generations"), stream=True)
        assert not isinstance(other.stream, conformance._Recording)
        other.close()
    assert recorder.take() == []


def test_the_openai_sdk_gets_each_image_event_as_it_arrives(recorder):
    openai = pytest.importorskip("openai")
    httpx2 = pytest.importorskip("httpx2")
    producer = Producer(GENERATION)
    sdk = openai.OpenAI(base_url=BASE, api_key="sk-test", http_client=producer.client(httpx2), max_retries=0)
    stream = sdk.images.generate(model="m", prompt="a fox", stream=True, partial_images=2)
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image" and producer.log == [0]
    assert [event.type for event in stream] == ["image_generation.partial_image", "image_generation.completed"]
    assert recorder.take() == [] and recorder.stats["streams"] == 1
    # a failure after the stream started: the SDK raises, the checker accepts the error event
    producer = Producer([sse_event(partial()), error_event(UpstreamError("the model failed"))])
    sdk = openai.OpenAI(base_url=BASE, api_key="sk-test", http_client=producer.client(httpx2), max_retries=0)
    with pytest.raises(openai.APIError, match="the model failed"):
        for _ in sdk.images.generate(model="m", prompt="a fox", stream=True, partial_images=1):
            pass
    assert recorder.take() == [] and recorder.stats["streams"] == 2
