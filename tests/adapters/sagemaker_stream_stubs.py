"""A fake ``sagemaker-runtime`` on loopback for streamed calls: ``InvokeEndpointWithResponseStream`` answered with
AWS's binary event-stream framing over HTTP/1.1 chunked transfer, so a real boto3 client parses real events.

The framing (https://docs.aws.amazon.com/AmazonS3/latest/API/RESTSelectObjectAppendix.html, "Prelude", "Headers",
"Message CRC"; botocore 1.44.8 ``botocore/eventstream.py`` ``EventStreamBuffer`` decodes it): a 12-byte prelude
(total length, headers length, both big-endian uint32, then the CRC32 of those 8 bytes), the headers (name length
uint8, name, type 7 = string, value length uint16, value), the payload, and the CRC32 of everything before it.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from binascii import crc32
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.config import Config

from backend_stubs import b64, png_of
from darkroom import config
from darkroom.catalog import ModelEntry
from darkroom.inference import GenerateJob, PartialSink
from darkroom.inference.resilience import CircuitBreaker, Resilience
from darkroom.inference.sagemaker import SageMakerBackend

STREAM_PATH = "/invocations-response-stream"


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message (string headers only, as SageMaker's events carry)."""
    encoded = b"".join(
        struct.pack("!B", len(name)) + name.encode() + b"\x07" + struct.pack("!H", len(value)) + value.encode()
        for name, value in headers.items()
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded + payload
    return message + struct.pack("!I", crc32(message) & 0xFFFFFFFF)


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event: ``{"PayloadPart": {"Bytes": data}}`` once botocore has parsed it."""
    headers = {":message-type": "event", ":event-type": "PayloadPart", ":content-type": "application/octet-stream"}
    return frame(headers, data)


def exception_event(kind: str, message: str = "stream failed", error_code: str | None = None) -> bytes:
    """An exception event (``ModelStreamError``, ``InternalStreamFailure``): botocore raises ``EventStreamError``."""
    body = {"Message": message, **({"ErrorCode": error_code} if error_code else {})}
    headers = {":message-type": "exception", ":exception-type": kind, ":content-type": "application/json"}
    return frame(headers, json.dumps(body).encode())


def ndjson(*documents: dict) -> bytes:
    return b"".join(json.dumps(document).encode() + b"\n" for document in documents)


def split_parts(data: bytes, size: int) -> list[bytes]:
    """``data`` as PayloadPart events of ``size`` bytes: lines cut anywhere, as SageMaker may."""
    return [payload_part(data[i : i + size]) for i in range(0, len(data), size)]


class StreamEndpoint(BaseHTTPRequestHandler):
    """``script``, played in order: bytes are written (one HTTP chunk each, or cut to ``chunk``), a float is a pause,
    ``Beats`` are heartbeats, a callable is called, None ends the answer without the last chunk (a cut connection)."""

    protocol_version = "HTTP/1.1"
    script: list = []
    chunk: int | None = None  # cut the framed bytes into HTTP chunks of this size (frames cross chunk edges)
    error: tuple[int, dict[str, str], dict] | None = None  # answer this error instead of a stream
    requests: list[tuple[str, dict]] = []
    disconnected = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).requests.append((self.path, json.loads(body)))
        if self.error is not None:
            status, headers, document = self.error
            data = json.dumps(document).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("X-Amzn-SageMaker-Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._play()
        except (BrokenPipeError, ConnectionResetError):
            type(self).disconnected.set()
        self.close_connection = True

    def _play(self) -> None:
        for step in self.script:
            if step is None:
                return
            if isinstance(step, float):
                time.sleep(step)
            elif isinstance(step, Beats):
                beat = payload_part(ndjson({"type": "progress", "step": 1, "steps": 30}))
                ends = time.monotonic() + step.limit
                while time.monotonic() < ends:
                    self._write(beat)
                    time.sleep(step.interval)
            elif callable(step):
                step()
            else:
                size = self.chunk or len(step)
                for i in range(0, len(step), size):
                    self._write(step[i : i + size])
        self.wfile.write(b"0\r\n\r\n")

    def _write(self, piece: bytes) -> None:
        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")

    def log_message(self, *args) -> None:
        pass


@dataclass(frozen=True)
class Beats:
    """A step: progress lines every ``interval`` seconds for ``limit`` seconds, or until the client goes away."""

    interval: float = 0.05
    limit: float = 10.0


@contextmanager
def stream_endpoint(service: str = "sagemaker-runtime") -> Iterator[type[StreamEndpoint]]:
    """A fresh ``StreamEndpoint`` class on its own loopback server; ``.client()`` is a runtime boto3 client of
    ``service`` for it (``bedrock-runtime`` for ConverseStream: the framing is the same)."""
    handler = type("Endpoint", (StreamEndpoint,), {"script": [], "requests": [], "disconnected": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def client():
        built = boto3.client(
            service,
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(connect_timeout=1, retries={"mode": "standard", "total_max_attempts": 1}),
        )
        built.meta.events.register("before-parameter-build", config._set_attempt_read_timeout)  # as a runtime client
        return built

    handler.client = staticmethod(client)
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


# -- what the tests share -----------------------------------------------------------------------------

ENDPOINT_NAME = "darkroom-stream-endpoint"
COLOURS = [(10, 0, 0), (20, 0, 0), (30, 0, 0)]


def entry(**endpoint) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "sm-stream",
            "backend": "sagemaker",
            "endpoint": {"endpoint_name": ENDPOINT_NAME, "timeout_seconds": 20, **endpoint},
            "capabilities": ["generate", "edit"],
            "sizes": ["64x48"],
            "default_size": "64x48",
            "max_n": 4,
            "passthrough": ["seed"],
        }
    )


class Sink:
    """A PartialSink that records what it was given (and can ask to stop after ``stop_after`` partials)."""

    def __init__(self, count: int = 3, stop_after: int | None = None) -> None:
        self.got: list[tuple[int, tuple[int, int], tuple]] = []
        self.stop_after = stop_after
        self.sink = PartialSink(count=count, deliver=self.deliver, stopped=threading.Event())

    def deliver(self, index, image) -> None:
        self.got.append((index, image.size, image.getpixel((0, 0))))
        if self.stop_after is not None and len(self.got) >= self.stop_after:
            self.sink.stopped.set()


def gen_job(sink: Sink | None, n: int = 1, deadline: float = 10) -> GenerateJob:
    return GenerateJob(
        prompt="a lighthouse",
        width=64,
        height=48,
        n=n,
        quality="high",
        transparent=False,
        deadline_seconds=deadline,
        partials=sink.sink if sink else None,
    )


def partial(index: int, width: int = 64, height: int = 48) -> dict:
    return {"type": "partial", "index": index, "image": b64(png_of(width, height, COLOURS[index % 3]))}


def result(n: int = 1) -> dict:
    return {"type": "result", "body": {"images": [b64(png_of(64, 48, (0, 0, 200))) for _ in range(n)]}}


PROGRESS = {"type": "progress", "step": 3, "steps": 30}


def backend_for(fake, threshold: int = 100, resilience: Resilience | None = None, **endpoint):
    model = entry(**endpoint)
    breaker = CircuitBreaker(threshold=threshold)
    resilience = resilience or Resilience(sleep=lambda _s: None)
    return model, SageMakerBackend(model, client=fake.client(), breaker=breaker, resilience=resilience)
