"""darkroom.api.lwa: the ASGI app the Lambda Web Adapter forwards invocations to, served by a real uvicorn on
127.0.0.1 and read with httpx as LWA reads it (in tests/adapters, not tests/unit: the unit suite opens no socket).

The headers LWA adds are built here as LWA 1.x serializes them (x-amzn-request-context: API Gateway's
requestContext; x-amzn-lambda-context: lambda_runtime's Context): see darkroom.api.lwa's docstring.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from darkroom.api import lwa
from darkroom.api.event_stream import EVENT_STREAM, open_stream
from darkroom.local.template import Stack

WAIT = 10.0


def lwa_headers(resource: str, method: str = "POST", **context: Any) -> dict[str, str]:
    request_context = {
        "resourcePath": resource,
        "httpMethod": method,
        "stage": "v1",
        "requestId": "req-gw",
        "extendedRequestId": "ext-1",
        "requestTimeEpoch": int(time.time() * 1000),
        "identity": {"sourceIp": "203.0.113.9", "userAgent": "test"},
        "authorizer": {"principalId": "tenant-1", "tenant": "tenant-1", "integrationLatency": 3},
    }
    lambda_context = {
        "request_id": "req-lambda",
        "deadline": int(time.time() * 1000) + 60_000,
        "invoked_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:fn:live",
        "xray_trace_id": None,
        "client_context": None,
        "identity": None,
        "env_config": {"function_name": "fn", "memory": 512, "version": "7", "log_stream": "s", "log_group": "g"},
        **context,
    }
    return {"x-amzn-request-context": json.dumps(request_context), "x-amzn-lambda-context": json.dumps(lambda_context)}


class Served:
    def __init__(self, handler: lwa.Handler) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(lwa.config(handler, port=0))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(WAIT)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Served] = []

    def start(handler: lwa.Handler) -> str:
        started.append(Served(handler))
        return started[-1].url

    yield start
    for served in started:
        served.stop()


def resolver_handler(app: APIGatewayRestResolver) -> lwa.Handler:
    return lambda event, context: app.resolve(event, context)


def test_a_streamed_answer_sends_each_chunk_as_it_is_made(serve):
    app = APIGatewayRestResolver()
    gate, finished = threading.Event(), threading.Event()

    def chunks() -> Iterator[bytes]:
        yield b"data: 1\n\n"
        assert gate.wait(WAIT)
        yield b"data: 2\n\n"
        finished.set()

    @app.post("/v1/stream")
    def stream():  # type: ignore[no-untyped-def]
        return open_stream(chunks())

    url = serve(resolver_handler(app))
    with httpx.stream("POST", f"{url}/v1/stream", headers=lwa_headers("/v1/stream"), timeout=WAIT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == EVENT_STREAM
        assert response.headers["cache-control"] == "no-cache"
        assert "content-length" not in response.headers
        parts = response.iter_raw()
        assert next(parts) == b"data: 1\n\n"
        assert not finished.is_set()  # the first chunk came before the producer finished
        gate.set()
        assert b"".join(parts) == b"data: 2\n\n"
    assert finished.is_set()


def test_a_client_that_goes_away_closes_the_producer(serve):
    app = APIGatewayRestResolver()
    closed = threading.Event()

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                yield b"data: tick\n\n"
                time.sleep(0.02)
        finally:
            closed.set()

    @app.post("/v1/stream")
    def stream():  # type: ignore[no-untyped-def]
        return open_stream(chunks())

    url = serve(resolver_handler(app))
    with httpx.stream("POST", f"{url}/v1/stream", headers=lwa_headers("/v1/stream"), timeout=WAIT) as response:
        assert next(response.iter_raw()).startswith(b"data: tick")
    assert closed.wait(WAIT)
    # The process serves the next invocation.
    with httpx.stream("POST", f"{url}/v1/stream", headers=lwa_headers("/v1/stream"), timeout=WAIT) as response:
        assert next(response.iter_raw()).startswith(b"data: tick")


def test_a_non_streamed_answer_is_passed_through_exactly(serve):
    png = b"\x89PNG\r\n\x1a\n\x00\xff binary"

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event["path"] == "/v1/png":
            return {
                "statusCode": 200,
                "headers": {"Content-Type": "image/png", "X-One": "dropped"},
                "multiValueHeaders": {"x-one": ["a", "b"], "x-request-id": ["ext-1"]},
                "body": base64.b64encode(png).decode(),
                "isBase64Encoded": True,
            }
        envelope = {"error": {"message": "Bad.", "type": "invalid_request_error", "param": "n", "code": None}}
        return {"statusCode": 400, "headers": {"Content-Type": "application/json"}, "body": json.dumps(envelope)}

    url = serve(handler)
    response = httpx.post(f"{url}/v1/png", headers=lwa_headers("/v1/png"), timeout=WAIT)
    assert response.status_code == 200
    assert response.content == png
    assert response.headers["content-type"] == "image/png"
    assert response.headers.get_list("x-one") == ["a", "b"]
    assert response.headers["content-length"] == str(len(png))
    refused = httpx.post(f"{url}/v1/other", headers=lwa_headers("/v1/other"), timeout=WAIT)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "n"
    assert refused.headers["content-length"] == str(len(refused.content))


def test_the_event_and_context_are_the_ones_the_buffered_integration_would_give(serve):
    seen: list[tuple[dict[str, Any], Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append((event, context))
        return {"statusCode": 204, "body": ""}

    url = serve(handler)
    body = b'{"model": "m"}'
    headers = {**lwa_headers("/v1/responses/{response_id}"), "Content-Type": "application/json", "X-Extra": "1"}
    httpx.post(f"{url}/v1/responses/resp_1?a=1&a=2&b=", content=body, headers=headers, timeout=WAIT)
    httpx.get(f"{url}/v1/responses/resp_2", headers=lwa_headers("/v1/responses/{response_id}", "GET"), timeout=WAIT)
    (event, context), (get_event, _) = seen
    assert event["resource"] == "/v1/responses/{response_id}"
    assert event["path"] == "/v1/responses/resp_1"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"response_id": "resp_1"}
    assert event["queryStringParameters"] == {"a": "2", "b": ""}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": [""]}
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body
    assert event["headers"]["x-extra"] == "1" and event["multiValueHeaders"]["x-extra"] == ["1"]
    assert not {"x-amzn-request-context", "x-amzn-lambda-context"} & set(event["headers"])
    assert event["requestContext"]["authorizer"]["principalId"] == "tenant-1"
    assert event["requestContext"]["extendedRequestId"] == "ext-1"
    assert context.aws_request_id == "req-lambda"
    assert context.function_name == "fn" and context.function_version == "7"
    assert context.memory_limit_in_mb == 512
    assert context.invoked_function_arn.endswith(":function:fn:live")
    assert 50_000 < context.get_remaining_time_in_millis() <= 60_000
    assert get_event["body"] is None and get_event["isBase64Encoded"] is False
    assert get_event["pathParameters"] == {"response_id": "resp_2"}


def test_a_text_body_that_is_not_a_binary_media_type_stays_text(serve):
    seen: list[dict[str, Any]] = []
    url = serve(lambda event, context: seen.append(event) or {"statusCode": 200, "body": "ok"})
    headers = {**lwa_headers("/v1/x"), "content-type": "text/plain"}
    assert httpx.post(f"{url}/v1/x", content=b"hello", headers=headers, timeout=WAIT).text == "ok"
    assert seen[0]["body"] == "hello" and seen[0]["isBase64Encoded"] is False


def test_binary_media_types_are_the_templates():
    assert list(lwa.BINARY_MEDIA_TYPES) == Stack().binary_media_types()


def test_invocations_run_one_at_a_time(serve):
    running, most = [0], [0]
    lock = threading.Lock()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return {"statusCode": 200, "body": "ok"}

    url = serve(handler)
    threads = [
        threading.Thread(target=httpx.post, args=(f"{url}/v1/x",), kwargs={"headers": lwa_headers("/v1/x")})
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert most[0] == 1


def test_a_failed_invocation_gets_the_gateways_integration_failure(serve):
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    url = serve(handler)
    response = httpx.post(f"{url}/v1/x", headers=lwa_headers("/v1/x"), timeout=WAIT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "integration_failure"


def test_lwas_own_requests_readiness_and_snapstart_hooks(serve, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(lwa, "get_after_restore", lambda: [(calls.append, ("restored",), {})])
    monkeypatch.setattr(lwa, "get_before_snapshot", lambda: [(calls.append, ("primed",), {})])
    url = serve(lambda event, context: {"statusCode": 418, "body": "handler"})
    assert httpx.get(f"{url}{lwa.READY_PATH}", timeout=WAIT).status_code == 200
    assert httpx.post(f"{url}{lwa.BEFORE_CHECKPOINT_PATH}", timeout=WAIT).status_code == 204
    assert httpx.post(f"{url}{lwa.AFTER_RESTORE_PATH}", timeout=WAIT).status_code == 204
    assert calls == ["primed", "restored"]
    assert httpx.get(f"{url}/v1/x", timeout=WAIT).status_code == 404  # not LWA's, not an invocation
    # An invocation always goes to the handler, whatever its path.
    response = httpx.post(f"{url}{lwa.AFTER_RESTORE_PATH}", headers=lwa_headers("/x"), timeout=WAIT)
    assert response.status_code == 418 and calls == ["primed", "restored"]


def test_load_handler_imports_module_attribute_from_the_task_root(tmp_path: Path):
    (tmp_path / "lwa_probe_app.py").write_text("def lambda_handler(event, context):\n    return {'statusCode': 201}\n")
    try:
        handler = lwa.load_handler("lwa_probe_app.lambda_handler", root=str(tmp_path))
        assert handler({}, None) == {"statusCode": 201}
    finally:
        sys.modules.pop("lwa_probe_app", None)
        sys.path.remove(str(tmp_path))


def test_the_invocations_trace_id_is_in_the_environment_as_the_runtime_sets_it(serve, monkeypatch):
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    seen: list[str | None] = []
    url = serve(lambda event, context: seen.append(lwa.os.environ.get("_X_AMZN_TRACE_ID")) or {"statusCode": 200})
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    httpx.post(f"{url}/v1/x", headers=lwa_headers("/v1/x", xray_trace_id=trace), timeout=WAIT)
    httpx.post(f"{url}/v1/x", headers=lwa_headers("/v1/x"), timeout=WAIT)
    assert seen == [trace, None]
