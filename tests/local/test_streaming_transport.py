"""The local stack's STREAM routes (ResponseTransferMode: RESPONSE_STREAM): the function's worker process runs the
handler inside darkroom.api.event_stream's StreamingTransport, and each chunk reaches the HTTP client as the
producer makes it; a client that goes away has the producer closed. A tiny template and function here; the
producer and the test meet through files, since the producer runs in another process.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from darkroom.local.bridge import LocalApi
from darkroom.local.http_server import make_server
from darkroom.local.template import Stack

WAIT = 20.0
TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 60
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: prod
      AccessLogSetting:
        DestinationArn: arn:aws:logs:us-east-1:123456789012:log-group:x
        Format: >-
          {"route":"$context.httpMethod $context.resourcePath","status":"$context.status",
          "responseLength":"$context.responseLength"}
      GatewayResponses:
        DEFAULT_4XX:
          ResponseTemplates:
            application/json: '{"error":{"message":"gateway","code":"gateway_error"}}'
        DEFAULT_5XX:
          ResponseTemplates:
            application/json: '{"error":{"message":"gateway","code":"gateway_error"}}'
  StreamFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: run.sh
      Timeout: 900
      Events:
        Stream:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /v1/stream
            Method: POST
            ResponseTransferMode: RESPONSE_STREAM
            TimeoutInMillis: 900000
        Plain:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /v1/plain, Method: POST}
"""
RUN_SH = "#!/bin/sh\nexec python3 -m darkroom.api.lwa app.lambda_handler\n"
APP = """
import json, time
from pathlib import Path
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from darkroom.api.event_stream import open_stream

app = APIGatewayRestResolver()


def wait_for(path):
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def chunks(folder, forever):
    try:
        yield b"data: first\\n\\n"
        if forever:
            while True:
                time.sleep(0.02)
                yield b"data: tick\\n\\n"
        wait_for(folder / "go")
        (folder / "last-made").touch()
        yield b"data: last\\n\\n"
    finally:
        (folder / "closed").touch()


@app.post("/v1/stream")
def stream():
    body = app.current_event.json_body
    if body.get("refuse"):
        return Response(400, "application/json", json.dumps({"error": {"message": "no", "code": "refused"}}))
    return open_stream(chunks(Path(body["dir"]), body.get("forever", False)))


@app.post("/v1/plain")
def plain():
    return open_stream(iter([b"data: a\\n\\n", b"data: b\\n\\n"]))


def lambda_handler(event, context):
    return app.resolve(event, context)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LocalApi]]:
    root = tmp_path_factory.mktemp("streaming")
    (root / "template.yaml").write_text(textwrap.dedent(TEMPLATE))
    (root / "fn").mkdir()
    (root / "fn" / "app.py").write_text(APP)
    (root / "fn" / "run.sh").write_text(RUN_SH)
    api = LocalApi(Stack(root / "template.yaml"), {}, containers_per_function=2)
    api.warm()
    local = make_server(api, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=local.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{local.server_address[1]}", api
    local.shutdown()
    local.server_close()
    api.stop()


def wait_for(path: Path) -> bool:
    deadline = time.monotonic() + WAIT
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return path.exists()


def post(url: str, body: dict[str, Any]) -> Any:
    return httpx.stream(
        "POST", url, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=WAIT
    )


def test_the_template_reads_stream_routes_and_the_handler_run_sh_serves(server):
    _, api = server
    routes = {route.path: route for route in api.stack.routes()}
    assert routes["/v1/stream"].streaming and routes["/v1/stream"].timeout_seconds == 900
    assert not routes["/v1/plain"].streaming and routes["/v1/plain"].timeout_seconds == 29
    (function,) = api.stack.functions()
    assert (function.module, function.attribute) == ("app", "lambda_handler")


def test_the_first_chunk_arrives_before_the_last_is_made(server, tmp_path):
    url, _ = server
    with post(f"{url}/v1/stream", {"dir": str(tmp_path)}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        chunks = response.iter_raw()
        assert next(chunks) == b"data: first\n\n"
        assert not (tmp_path / "last-made").exists()
        (tmp_path / "go").touch()
        assert b"".join(chunks) == b"data: last\n\n"
    assert (tmp_path / "closed").exists()


def test_a_client_that_goes_away_closes_the_producer(server, tmp_path):
    url, _ = server
    with post(f"{url}/v1/stream", {"dir": str(tmp_path), "forever": True}) as response:
        assert next(response.iter_raw()).startswith(b"data: first")
    assert wait_for(tmp_path / "closed")
    # The container serves the next request (its pipe is clean).
    again = tmp_path / "again"
    again.mkdir()
    with post(f"{url}/v1/stream", {"dir": str(again)}) as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"data: first\n\n"
        (again / "go").touch()
        assert b"".join(chunks) == b"data: last\n\n"


def test_an_answer_that_is_not_streamed_on_a_stream_route_is_whole(server):
    url, _ = server
    response = httpx.post(f"{url}/v1/stream", json={"refuse": True}, timeout=WAIT)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "refused"
    assert response.headers["content-length"] == str(len(response.content))


def test_a_buffered_route_drains_the_stream_into_one_body(server):
    url, _ = server
    response = httpx.post(f"{url}/v1/plain", json={}, timeout=WAIT)
    assert response.status_code == 200
    assert response.content == b"data: a\n\ndata: b\n\n"
    assert response.headers["content-length"] == str(len(response.content))


def test_the_access_log_line_is_written_once_when_the_stream_ends(server, tmp_path):
    _, api = server
    body = json.dumps({"dir": str(tmp_path)}).encode()
    (tmp_path / "go").touch()
    response = api.handle("POST", "/v1/stream", [("content-type", "application/json")], body)
    assert response.stream is not None and response.access_log == ""
    chunks = []
    while (chunk := response.stream.read()) is not None:
        chunks.append(chunk)
    assert b"".join(chunks) == b"data: first\n\ndata: last\n\n"
    line = json.loads(response.access_log)
    assert line == {"route": "POST /v1/stream", "status": "200", "responseLength": str(len(b"".join(chunks)))}
