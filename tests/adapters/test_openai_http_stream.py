"""A streamed chat completion through the ``openai`` backend (issue 18), against a loopback server that answers as an
OpenAI-compatible server streams: ``text/event-stream``, chunked, ``data: {chat.completion.chunk}`` events written
with pauses between them, ``data: [DONE]`` last (openai-python's ``_streaming.py`` reads the same)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from darkroom.api.errors import ApiError, ClientGone, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.inference import TextJob, TextSink
from darkroom.inference import openai_stream as stream_module
from darkroom.inference.openai_http import OpenAIBackend, Upstream
from darkroom.inference.resilience import CircuitBreaker, Resilience, RetryPolicy

SECRET_DETAIL = "UPSTREAM-INTERNAL-DETAIL-93be"  # in every error the server sends; never in what darkroom raises
SSE = "text/event-stream; charset=utf-8"


def chunk(content: str | None = None, *, role: str | None = None, finish: str | None = None) -> bytes:
    delta: dict = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-chat",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
USAGE = b'data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'


class Hold:
    """A step of a script: wait (for ``event``, or ``seconds``) watching the socket; EOF means the client closed."""

    def __init__(self, seconds: float, event: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.event = event


class StreamServer:
    """Answers each POST with the next script: (status, content-type, steps), a step being bytes (one HTTP chunk),
    a float (a pause) or a :class:`Hold`. Records each request's JSON and whether the client closed mid-answer."""

    def __init__(self) -> None:
        self.scripts: list[tuple[int, str, list]] = []
        self.requests: list[dict] = []
        self.closed = threading.Event()  # the client closed the connection before the script ended
        self.finished = threading.Event()  # a script ran to its end
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                server.requests.append({"path": self.path, "json": json.loads(raw)})
                status, ctype, steps = server.scripts.pop(0)
                try:
                    self.send_response(status)
                    self.send_header("content-type", ctype)
                    self.send_header("transfer-encoding", "chunked")
                    self.send_header("connection", "close")  # one answer a connection: no stale keep-alive reuse
                    self.end_headers()
                    self.wfile.flush()
                    for step in steps:
                        if isinstance(step, bytes):
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step))
                            self.wfile.flush()
                        elif isinstance(step, Hold):
                            if server.hold(self.connection, step):
                                return
                        else:
                            time.sleep(step)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    server.finished.set()
                except OSError:
                    server.closed.set()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def hold(self, connection: socket.socket, step: Hold) -> bool:
        """Wait out ``step``; True when the client closed the connection meanwhile."""
        end = time.monotonic() + step.seconds
        while time.monotonic() < end and not (step.event is not None and step.event.is_set()):
            connection.settimeout(0.02)
            try:
                if connection.recv(1) == b"":
                    self.closed.set()
                    return True
            except TimeoutError:
                continue
            except OSError:
                self.closed.set()
                return True
        return False

    def stream(self, *steps, status: int = 200, ctype: str = SSE) -> None:
        self.scripts.append((status, ctype, list(steps)))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    s = StreamServer()
    yield s
    s.close()


def entry(base_url: str) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "remote-chat",
            "backend": "openai",
            "endpoint": {"base_url": base_url, "upstream_model": "upstream-chat", "timeout_seconds": 20},
            "capabilities": ["generate", "analyze"],
            "sizes": ["64x48"],
            "default_size": "64x48",
            "max_n": 1,
            "qualities": ["medium"],
            "default_quality": "medium",
        }
    )


class Recorder:
    """A sink: each piece with the moment it came."""

    def __init__(self, on_piece: Callable[[Recorder], None] | None = None) -> None:
        self.pieces: list[str] = []
        self.on_piece = on_piece
        self.sink = TextSink(deliver=self.deliver)

    def deliver(self, piece: str) -> None:
        self.pieces.append(piece)
        if self.on_piece is not None:
            self.on_piece(self)


def make_backend(server: StreamServer, *, threshold: int = 5) -> tuple[OpenAIBackend, list[float], CircuitBreaker]:
    sleeps: list[float] = []
    breaker = CircuitBreaker(threshold=threshold, cooldown_seconds=30)
    resilience = Resilience(RetryPolicy(max_attempts=3), sleep=sleeps.append, random=lambda: 0.5)
    backend = OpenAIBackend(Upstream(server.url, breaker=breaker), resilience=resilience, key=lambda *_: None)
    return backend, sleeps, breaker


def job(sink: TextSink | None, deadline: float = 10.0) -> TextJob:
    return TextJob(
        instructions="Be brief.", messages=[("user", "Say hello.")], images=[], deadline_seconds=deadline, deltas=sink
    )


def assert_neutral(exc: ApiError, server: StreamServer) -> None:
    text = json.dumps(exc.envelope()) + str(exc) + json.dumps(exc.headers)
    for leak in (server.url, "127.0.0.1", SECRET_DETAIL, "Hello"):
        assert leak not in text


# -- streamed answers --------------------------------------------------------------------------------------------


def test_pieces_arrive_in_order_while_the_answer_is_still_being_written(server):
    all_three = threading.Event()  # the server writes [DONE] only once the three pieces reached the sink
    recorder = Recorder(lambda r: all_three.set() if len(r.pieces) == 3 else None)
    head, tail = chunk("Hel")[:25], chunk("Hel")[25:]  # one event split across two HTTP chunks
    server.stream(
        chunk("", role="assistant"),
        head,
        0.05,
        tail,
        0.1,
        chunk("lo").replace(b"\n", b"\r\n"),  # CRLF line ends
        b": keep-alive\n\n",  # an SSE comment
        0.1,
        chunk(", world"),
        chunk(finish="stop"),
        Hold(5.0, all_three),
        USAGE,
        DONE,
    )
    backend, _, _ = make_backend(server)
    text = backend.respond(entry(server.url), job(recorder.sink))
    assert all_three.is_set() and server.finished.is_set()
    assert recorder.pieces == ["Hel", "lo", ", world"]
    assert text == "".join(recorder.pieces) == "Hello, world"


def test_the_streamed_request_adds_only_stream_true(server):
    server.stream(chunk("Hi"), DONE)
    server.stream(json.dumps({"choices": [{"message": {"content": "Hi"}}]}).encode(), ctype="application/json")
    backend, _, _ = make_backend(server)
    assert backend.respond(entry(server.url), job(Recorder().sink)) == "Hi"
    assert backend.respond(entry(server.url), job(None)) == "Hi"
    streamed, whole = (request["json"] for request in server.requests)
    assert streamed.pop("stream") is True
    assert "stream" not in whole and streamed == whole
    assert [request["path"] for request in server.requests] == ["/v1/chat/completions"] * 2


def test_a_server_that_ignores_stream_answers_whole_and_sends_no_pieces(server):
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once."}}]}
    server.stream(json.dumps(body).encode(), ctype="application/json")
    recorder = Recorder()
    backend, _, _ = make_backend(server)
    assert backend.respond(entry(server.url), job(recorder.sink)) == "All at once."
    assert recorder.pieces == []


# -- errors before the stream: as a non-streamed answer's ------------------------------------------------------


def error_body(code: str | None) -> bytes:
    error = {"message": SECRET_DETAIL, "type": "invalid_request_error", "param": None, "code": code}
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    "status,code,raised,expected",
    [
        (400, "content_policy_violation", InvalidRequest, (400, "content_policy_violation")),
        (400, "invalid_value", UpstreamError, (502, "upstream_error")),
        (404, None, UpstreamError, (502, "upstream_error")),
        (401, None, UpstreamError, (502, "upstream_auth")),
    ],
)
def test_an_error_before_the_stream_is_mapped_as_today(server, status, code, raised, expected):
    server.stream(error_body(code), status=status, ctype="application/json")
    recorder = Recorder()
    backend, sleeps, _ = make_backend(server)
    with pytest.raises(raised) as caught:
        backend.respond(entry(server.url), job(recorder.sink))
    assert (caught.value.status, caught.value.code) == expected
    assert len(server.requests) == 1 and sleeps == [] and recorder.pieces == []
    assert_neutral(caught.value, server)


def test_a_retryable_status_before_the_stream_is_retried(server):
    server.stream(error_body(None), status=503, ctype="application/json")
    server.stream(chunk("Hi"), chunk(" there"), DONE)
    recorder = Recorder()
    backend, sleeps, _ = make_backend(server)
    assert backend.respond(entry(server.url), job(recorder.sink)) == "Hi there"
    assert recorder.pieces == ["Hi", " there"] and len(server.requests) == 2 and len(sleeps) == 1


def test_a_persistent_503_is_a_503(server):
    for _ in range(3):
        server.stream(error_body(None), status=503, ctype="application/json")
    backend, _, _ = make_backend(server)
    with pytest.raises(ServiceUnavailable):
        backend.respond(entry(server.url), job(Recorder().sink))
    assert len(server.requests) == 3


# -- errors in the stream --------------------------------------------------------------------------------------


def test_an_error_event_mid_stream_is_a_502_and_never_retried(server):
    error = {"error": {"message": SECRET_DETAIL, "type": "server_error", "code": "internal"}}
    server.stream(chunk("Hel"), 0.05, b"data: " + json.dumps(error).encode() + b"\n\n")
    recorder = Recorder()
    backend, sleeps, breaker = make_backend(server, threshold=1)
    with pytest.raises(UpstreamError) as caught:
        backend.respond(entry(server.url), job(recorder.sink))
    assert (caught.value.status, caught.value.code) == (502, "upstream_error")
    assert recorder.pieces == ["Hel"] and len(server.requests) == 1 and sleeps == []
    assert breaker.state == "open"  # the endpoint's failure
    assert_neutral(caught.value, server)


@pytest.mark.parametrize(
    "steps",
    [
        [chunk("Hel"), chunk("lo")],  # no [DONE]
        [chunk("Hel"), b'data: {"choices": [{"delta": {"content": "lo"}}\n\n', DONE],  # not JSON
        [chunk("Hel"), b"data: [1, 2]\n\n", DONE],  # not an object
        [chunk("Hel"), b'data: {"choices": [{"delta": {"content": 7}}]}\n\n', DONE],  # not text
        [chunk("Hel"), b'data: {"id": "x"}\n\n', DONE],  # no choices
        [chunk("Hel"), b"data: \xff\xfe\n\n", DONE],  # not UTF-8
        [chunk("Hel"), b"data: [DONE]"],  # [DONE] never completed by its blank line: the stream ended first
    ],
    ids=["no-done", "not-json", "not-object", "not-text", "no-choices", "not-utf8", "unfinished-done"],
)
def test_an_invalid_stream_is_a_502_invalid_response(server, steps):
    server.stream(*steps)
    recorder = Recorder()
    backend, sleeps, _ = make_backend(server)
    with pytest.raises(UpstreamError) as caught:
        backend.respond(entry(server.url), job(recorder.sink))
    assert (caught.value.status, caught.value.code) == (502, "upstream_invalid_response")
    assert recorder.pieces[0] == "Hel" and len(server.requests) == 1 and sleeps == []
    assert_neutral(caught.value, server)


def test_a_line_over_the_cap_is_a_502_before_it_is_all_read(server, monkeypatch):
    monkeypatch.setattr(stream_module, "MAX_LINE_BYTES", 1024)
    server.stream(chunk("Hel"), b"data: " + b"x" * 600, b"x" * 600, Hold(5.0))  # no newline ever comes
    backend, _, _ = make_backend(server)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        backend.respond(entry(server.url), job(Recorder().sink))
    assert caught.value.code == "upstream_invalid_response" and time.monotonic() - started < 3
    assert server.closed.wait(3)


def test_text_over_the_cap_is_a_502(server, monkeypatch):
    monkeypatch.setattr(stream_module, "MAX_TEXT_BYTES", 10)
    server.stream(chunk("123456"), chunk("789012"), DONE)
    recorder = Recorder()
    backend, _, _ = make_backend(server)
    with pytest.raises(UpstreamError) as caught:
        backend.respond(entry(server.url), job(recorder.sink))
    assert caught.value.code == "upstream_invalid_response" and recorder.pieces == ["123456"]


def test_a_stream_over_the_total_cap_is_a_502(server, monkeypatch):
    monkeypatch.setattr(stream_module, "MAX_STREAM_BYTES", 2048)
    server.stream(*[b": padding " + b"." * 500 + b"\n"] * 5, DONE)
    backend, _, _ = make_backend(server)
    with pytest.raises(UpstreamError) as caught:
        backend.respond(entry(server.url), job(Recorder().sink))
    assert caught.value.code == "upstream_invalid_response"


def test_a_silent_stream_ends_at_the_deadline_and_is_not_retried_once_pieces_were_sent(server):
    server.stream(chunk("Hel"), Hold(10.0))
    server.stream(chunk("Hel"), DONE)  # a retry would get this: it must not happen
    recorder = Recorder()
    backend, _, _ = make_backend(server)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        backend.respond(entry(server.url), job(recorder.sink, deadline=1.0))
    assert time.monotonic() - started < 2.5
    assert recorder.pieces == ["Hel"] and len(server.requests) == 1
    assert server.closed.wait(3)


# -- the client goes away --------------------------------------------------------------------------------------


def test_a_stop_while_the_upstream_is_silent_closes_the_connection_at_once(server):
    def stop_soon(recorder: Recorder) -> None:  # the client goes while the read waits for the next piece
        threading.Timer(0.2, recorder.sink.stopped.set).start()

    server.stream(chunk("Hel"), Hold(10.0), chunk("lo"), DONE)
    recorder = Recorder(stop_soon)
    backend, sleeps, breaker = make_backend(server, threshold=1)
    started = time.monotonic()
    with pytest.raises(ClientGone):
        backend.respond(entry(server.url), job(recorder.sink))
    assert time.monotonic() - started < 2
    assert server.closed.wait(3) and not server.finished.is_set()
    assert recorder.pieces == ["Hel"] and len(server.requests) == 1 and sleeps == []
    assert breaker.state == "closed"  # not the endpoint's ill health


def test_a_stop_between_pieces_ends_the_read(server):
    server.stream(*[part for i in range(50) for part in (chunk(f"w{i} "), 0.02)], DONE)
    recorder = Recorder(lambda r: r.sink.stopped.set() if len(r.pieces) == 2 else None)
    backend, _, _ = make_backend(server)
    with pytest.raises(ClientGone):
        backend.respond(entry(server.url), job(recorder.sink))
    assert recorder.pieces == ["w0 ", "w1 "]
    assert server.closed.wait(3) and not server.finished.is_set()


def test_a_client_gone_before_the_call_sends_nothing(server):
    recorder = Recorder()
    recorder.sink.stopped.set()
    backend, _, _ = make_backend(server)
    with pytest.raises(ClientGone):
        backend.respond(entry(server.url), job(recorder.sink))
    assert server.requests == []


# -- the SSE reading, piece by piece ---------------------------------------------------------------------------


def test_lines_split_on_crlf_lf_and_cr_across_chunks():
    lines = stream_module.Lines(1024, 4096, ValueError)
    got = lines.feed(b"a\r") + lines.feed(b"\nb\rc") + lines.feed(b"\n\n") + lines.feed(b"d\r\n")
    assert got == [b"a", b"b", b"c", b"", b"d"]


def test_events_join_data_lines_and_skip_other_fields():
    events = stream_module.Events()
    out = [events.line(line) for line in [b": hi", b"event: x", b"id: 1", b"data: a", b"data:b", b"", b"retry: 5", b""]]
    assert out == [None, None, None, None, None, "a\nb", None, None]
