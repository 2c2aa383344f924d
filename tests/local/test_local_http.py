"""The local stack's HTTP/1.1 server, on the wire: a real server process on loopback, raw sockets and httpx.

Each test names what a hostile or merely unusual client does (chunked uploads, ``Expect: 100-continue``,
malformed lengths, oversized bodies, idle and trickling connections) and what the server must answer.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from darkroom.local.bridge import API_GATEWAY_MAX_BODY

IDLE_TIMEOUT = 1.0

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: prod
      GatewayResponses:
        REQUEST_TOO_LARGE:
          StatusCode: "413"
          ResponseTemplates:
            application/json: '{"error":{"message":"too large","code":"request_too_large"}}'
        MISSING_AUTHENTICATION_TOKEN:
          StatusCode: "404"
          ResponseTemplates:
            application/json: '{"error":{"message":"Unknown route.","code":"not_found"}}'
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Events:
        Echo:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: "/v1/{proxy+}", Method: ANY}
"""

APP = """
import hashlib, json, time

def handler(event, context):
    body = event["body"] or ""
    if body.startswith('{"sleep"'):
        time.sleep(json.loads(body)["sleep"])
    return {"statusCode": 200, "body": json.dumps({
        "path": event["path"], "length": len(body), "sha256": hashlib.sha256(body.encode()).hexdigest()})}
"""

# Run as a script (the containers are spawned: their parent's main module must be import-safe).
SERVE = """
import sys
from pathlib import Path

from darkroom.local.bridge import LocalApi
from darkroom.local.http_server import make_server
from darkroom.local.template import Stack


def main():
    api = LocalApi(Stack(Path(sys.argv[1]) / "template.yaml"), {}, containers_per_function=4)
    api.warm()
    server = make_server(api, "127.0.0.1", 0, idle_timeout=float(sys.argv[2]))
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        api.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    main()
"""


class Server:
    def __init__(self, root: Path) -> None:
        self.log_path = root / "stderr.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(root / "serve.py"), str(root), str(IDLE_TIMEOUT)],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.process.kill()
            pytest.fail(f"the server did not start: {line!r}\n{self.log()}")
        self.port = int(line)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return self.process.returncode, out


def _start(root: Path) -> Server:
    (root / "template.yaml").write_text(textwrap.dedent(TEMPLATE))
    (root / "fn").mkdir()
    (root / "fn" / "app.py").write_text(APP)
    (root / "serve.py").write_text(SERVE)
    return Server(root)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = _start(tmp_path_factory.mktemp("http"))
    yield running
    running.interrupt()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers, body (by Content-Length, else up to the close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            body += chunk
    else:
        while chunk := sock.recv(65536):
            body += chunk
    return int(lines[0].split()[1]), headers, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _chunked(body: bytes, pieces: int = 3) -> bytes:
    size = -(-len(body) // pieces)
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def _echo(body: bytes) -> dict:
    return {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_chunked_body_arrives_whole_and_the_connection_serves_the_next_request(server):
    first = json.dumps({"model": "m", "prompt": "a cat " * 1000}).encode()
    second = b'{"n": 2}'
    with server.connect() as sock:
        sock.sendall(
            b"POST /v1/images/edits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(first)
        )
        status, _, body = _response(sock)
        assert status == 200 and json.loads(body) == {"path": "/v1/images/edits", **_echo(first)}
        sock.sendall(b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(second), second))
        status, _, body = _response(sock)
        assert status == 200 and json.loads(body) == {"path": "/v1/models", **_echo(second)}


def test_a_streamed_multipart_upload_then_a_second_request_on_the_same_client(server):
    # openai-node sends a file stream this way: multipart, Transfer-Encoding: chunked, no Content-Length.
    boundary = b"darkroom-test"
    png = b"\x89PNG" + bytes(range(256)) * 400
    upload = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + boundary + b"--\r\n"
    )

    def stream():
        for i in range(0, len(upload), 8192):
            yield upload[i : i + 8192]

    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        response = client.post(
            "/v1/images/edits",
            content=stream(),
            headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
        )
        assert response.status_code == 200
        # Not a binary media type in this template: the event body is the bytes read as UTF-8, "replace"d.
        assert response.json()["length"] == len(upload.decode("utf-8", "replace"))
        assert client.get("/v1/models").json() == {"path": "/v1/models", **_echo(b"")}


def test_expect_100_continue_is_answered_before_the_body_is_sent(server):
    payload = b'{"prompt": "a cat"}'
    with server.connect() as sock:
        sock.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(payload)
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(payload)
        status, _, body = _response(sock)
        assert status == 200 and json.loads(body)["length"] == len(payload)


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1, 2", b"1e3"])
def test_an_invalid_content_length_is_a_400_and_the_connection_closes(server, length):
    with server.connect() as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}")
        status, headers, _ = _response(sock)  # without a Content-Length, read to the close: proof it closed
        assert status == 400 and headers["connection"].lower() == "close"
    assert "Traceback" not in server.log()


def test_a_declared_body_over_10_mb_is_refused_from_the_headers_alone(server):
    with server.connect() as sock:
        sock.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (API_GATEWAY_MAX_BODY + 1)
        )  # and not one byte of it
        status, headers, body = _response(sock)
        assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
        assert headers["connection"] == "close"
        assert _closed(sock)  # no leftover body can become a request


def test_an_over_10_mb_body_sent_whole_still_gets_its_413(server):
    # The server answers without reading, then drains: a client still writing must read the 413, not a reset.
    body = b'{"prompt": "' + b"a" * (11 * 1024 * 1024) + b'"}'
    for _ in range(3):
        response = httpx.post(f"{server.base_url}/v1/images/generations", content=body, timeout=30)
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_a_chunked_body_past_10_mb_is_cut_off_with_a_413(server):
    def stream():
        for _ in range(200):  # 200 MB offered; the server stops reading at 10 MB
            yield b"a" * (1024 * 1024)

    response = httpx.post(f"{server.base_url}/v1/images/edits", content=stream(), timeout=30)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert response.headers["connection"] == "close"


def test_the_header_block_is_bounded(server):
    with server.connect() as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (1024 * 1024) + b"\r\n\r\n")
        status, headers, _ = _response(sock)  # read to the close
        assert status == 400 and headers["connection"].lower() == "close"


@pytest.mark.parametrize(
    "opening",
    [
        b"",  # connects and says nothing
        b"GET /v1/models HTTP/1.1\r\n",  # slowloris: headers, one byte at a time, never finished
        b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",  # a body that stops
    ],
)
def test_idle_and_trickling_connections_are_closed_after_the_timeout(server, opening):
    with server.connect() as sock:
        started = time.monotonic()
        sock.sendall(opening)
        trickle = opening.endswith(b"HTTP/1.1\r\n")
        while time.monotonic() - started < IDLE_TIMEOUT * 5:
            if trickle:
                try:
                    sock.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    break
            sock.settimeout(0.2)
            if _closed(sock):
                break
        assert time.monotonic() - started < IDLE_TIMEOUT * 4, "the connection was never closed"


def test_a_keep_alive_connection_outlives_short_pauses_between_requests(server):
    with server.connect() as sock:
        for _ in range(2):
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _response(sock)[0] == 200
            time.sleep(IDLE_TIMEOUT / 3)


def test_access_lines_carry_method_path_and_status_only(server):
    assert httpx.get(f"{server.base_url}/v1/models?secret=1", timeout=30).status_code == 200
    assert httpx.get(f"{server.base_url}/nowhere", timeout=30).status_code == 404
    deadline = time.monotonic() + 10  # a line is written once its answer has gone: it may trail the client a little
    while "GET /nowhere 404" not in (lines := server.log().splitlines()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "GET /v1/models 200" in lines and "GET /nowhere 404" in lines
    assert "secret" not in server.log()


def test_ctrl_c_lets_a_request_in_flight_finish_closes_the_rest_and_stops(tmp_path):
    import threading

    running = _start(tmp_path)
    answers = []
    request = threading.Thread(
        target=lambda: answers.append(httpx.post(f"{running.base_url}/v1/slow", content=b'{"sleep": 1}', timeout=30))
    )
    request.start()
    idle, refused = running.connect(), running.connect()  # open, and open after a 413 (lingering)
    refused.sendall(b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (API_GATEWAY_MAX_BODY + 1))
    assert _response(refused)[0] == 413
    time.sleep(0.4)
    code, out = running.interrupt()
    request.join(timeout=30)
    assert code == 0 and "stopped" in out
    assert _closed(idle) and _closed(refused)
    idle.close()
    refused.close()
    assert answers and answers[0].status_code == 200
    assert "Traceback" not in running.log()
