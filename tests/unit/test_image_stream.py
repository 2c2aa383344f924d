"""A streamed generate on in-memory ports: partials leave while the model works, refusals before the model runs are
raised (an ordinary HTTP error), a failure after is a terminal event with the admission given back, and a client
that goes away stops the backend and is billed nothing for an image never finished."""

import json
import threading

import pytest
from PIL import Image

from darkroom.api.errors import ClientGone, RateLimited, UpstreamError
from darkroom.api.image_events import error_event
from darkroom.api.images import ImageGenerateRequest
from darkroom.deadline import RequestDeadline
from darkroom.generation import ImagesResult, generate_images
from darkroom.image_stream import HEARTBEAT, StreamRun
from darkroom.inference import GeneratedImage
from darkroom.ports import RequestContext
from darkroom.tenancy import Limits, Tenant
from fakes import MemoryAdmitter, MemoryMeter, MemoryStore, image_ports

TENANT = Tenant("tnt_0123456789abcdef", "acme", "active", Limits(images_per_minute=5))


class _SteppingBackend:
    """Delivers each partial, then waits for the test to let it go on; fails or finishes as told."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.go = threading.Event()
        self.stopped_seen = False

    def generate(self, model, job):
        sink = job.partials
        for index in range(sink.count if sink else 0):
            sink.deliver(index, Image.new("RGB", (job.width, job.height), (index * 60, 0, 0)))
        while not self.go.wait(0.01):
            if sink is not None and sink.stopped.is_set():
                self.stopped_seen = True
                raise ClientGone()
        if self.fail is not None:
            raise self.fail
        return [GeneratedImage(Image.new("RGB", (job.width, job.height), (0, 200, 0)))]


def _run(backend, partials, admitter=None, meter=None):
    ports = image_ports(
        admission=admitter or MemoryAdmitter(),
        meter=meter or MemoryMeter(),
        store=MemoryStore(),
        backends=lambda m: backend,
    )
    request = ImageGenerateRequest.model_validate({"prompt": "a lighthouse", "size": "256x256", "stream": True})
    context = RequestContext(TENANT, "req-stream", RequestDeadline.for_stream(60_000))
    run: StreamRun[ImagesResult] = StreamRun(partials)
    run.start(lambda: generate_images(context, request, ports, stream=run))
    events = run.events(
        lambda index, image: f"partial {index} {image.getpixel((0, 0))[0]}".encode(),
        lambda result: f"done {len(result.images[0].data)}".encode(),
        error_event,
    )
    assert next(events) == HEARTBEAT  # the first byte goes out as soon as the model starts
    return events


def test_partials_arrive_before_the_model_has_finished():
    backend = _SteppingBackend()
    events = _run(backend, 2)
    assert next(events) == b"partial 0 0" and next(events) == b"partial 1 60"  # the model is still working
    assert not backend.go.is_set()
    backend.go.set()
    (done,) = list(events)
    assert done.startswith(b"done ") and int(done.split()[1]) > 0  # the image inline, whatever response_format


def test_a_refusal_before_the_model_runs_is_raised_not_streamed():
    admitter = MemoryAdmitter()
    for _ in range(5):
        admitter.admit(TENANT, 1)
    with pytest.raises(RateLimited):
        _run(_SteppingBackend(), 1, admitter=admitter)


def test_a_failure_after_the_stream_opened_is_an_error_event_and_refunds():
    admitter, meter = MemoryAdmitter(), MemoryMeter()
    backend = _SteppingBackend(fail=UpstreamError("The model failed."))
    events = _run(backend, 1, admitter, meter)
    assert next(events).startswith(b"partial 0")
    backend.go.set()
    (failed,) = list(events)
    assert failed.startswith(b"event: error\n")
    data = json.loads(failed.split(b"data: ", 1)[1])
    assert data["type"] == "error" and data["error"]["code"] == "upstream_error"
    assert data["error"]["message"] == "The model failed." and set(data["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert admitter.used == 0 and meter.events == {}


def test_an_unexpected_failure_leaks_nothing():
    backend = _SteppingBackend(fail=RuntimeError("secret internals /var/task/x.py"))
    events = _run(backend, 0)
    backend.go.set()
    (failed,) = list(events)
    assert b"secret" not in failed and b"internal_error" in failed


def test_a_client_that_goes_away_stops_the_backend_and_is_not_billed():
    admitter, meter = MemoryAdmitter(), MemoryMeter()
    backend = _SteppingBackend()
    events = _run(backend, 1, admitter, meter)
    assert next(events).startswith(b"partial 0")
    events.close()  # the transport closes the iterator when the client disconnects
    assert backend.stopped_seen  # close() returned only after the work ended
    assert admitter.used == 0 and meter.events == {}


def test_heartbeats_while_nothing_else_happens(monkeypatch):
    monkeypatch.setattr("darkroom.image_stream.HEARTBEAT_SECONDS", 0.05)
    backend = _SteppingBackend()
    events = _run(backend, 0)
    assert next(events) == HEARTBEAT
    backend.go.set()
    assert list(events)[-1].startswith(b"done ")


def test_text_pieces_leave_as_the_model_writes_them():
    go = threading.Event()
    run: StreamRun[str] = StreamRun(0)

    def work() -> str:
        run.inference_started()
        run.text.deliver("Hello, ")
        run.text.deliver("")  # nothing to send
        go.wait(5)
        run.text.deliver("world")
        return "Hello, world"

    run.start(work)
    events = run.events(lambda i, image: b"", lambda text: f"done {text}".encode(), error_event, lambda d: d.encode())
    assert next(events) == HEARTBEAT
    assert next(events) == b"Hello, "  # before the model has finished
    go.set()
    assert list(events) == [b"world", b"done Hello, world"]
