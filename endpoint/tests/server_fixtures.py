"""Shared helpers for test_server.py and test_runtime.py: a fake ModelSet (no torch), settings, a real uvicorn
server on 127.0.0.1 in a thread, and small PNGs."""

from __future__ import annotations

import base64
import dataclasses
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from PIL import Image

from darkroom_endpoint.contract import AnalyzeTask, ImageTask
from darkroom_endpoint.settings import Settings


class FakeModels:
    """loading.ModelSet's interface without models: answers images of the asked count and size, or text.

    ``gate``: run() blocks until it is set (``started`` says a job is running), so a test fills the queue exactly.
    ``check_error`` / ``run_error``: raised by check() / run()."""

    def __init__(
        self,
        *,
        gate: threading.Event | None = None,
        check_error: Exception | None = None,
        run_error: Exception | None = None,
        wrong_count: bool = False,
    ) -> None:
        self.gate = gate
        self.check_error = check_error
        self.run_error = run_error
        self.wrong_count = wrong_count
        self.started = threading.Event()
        self.checked: list = []
        self.ran: list = []
        self.warmed = 0
        self.threads: set[str] = set()

    def check(self, task) -> None:
        self.checked.append(task)
        if self.check_error is not None:
            raise self.check_error

    def run(self, task, sink=None):
        self.threads.add(threading.current_thread().name)
        self.ran.append(task)
        self.started.set()
        if sink is not None:  # a streamed request: the partials a pipeline would send, one grey level each
            for index in range(sink.partial_images):
                sink.partial(index, Image.new("RGB", (task.width, task.height), (40 * index,) * 3))
                sink.progress(index + 1, sink.partial_images + 1)
        if self.gate is not None and not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        if self.run_error is not None:
            raise self.run_error
        if isinstance(task, AnalyzeTask):
            return f"{len(task.images)} images, {len(task.messages)} messages"
        assert isinstance(task, ImageTask)
        count = task.num_images + (1 if self.wrong_count else 0)
        return [Image.new("RGB", (task.width, task.height), (10 * index, 20, 30)) for index in range(count)]

    def warm_up(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.warmed += 1


def make_settings(tmp_path: Path, **changes) -> Settings:
    """Settings from an environment with an empty model directory, then ``changes``."""
    settings = Settings.from_env(
        {"SM_MODEL_DIR": str(tmp_path), "DARKROOM_QUEUE_SIZE": "2", "DARKROOM_MAX_BODY_BYTES": str(1024 * 1024)}
    )
    return dataclasses.replace(settings, **changes)


def png_b64(size: tuple[int, int] = (64, 64), mode: str = "RGB", color=0) -> str:
    """A base64 PNG of ``size``."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(encoded: str) -> Image.Image:
    """A base64 PNG from an answer, decoded."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)), formats=["PNG"])
    image.load()
    return image


@contextmanager
def running_server(app) -> Iterator[str]:
    """``app`` under a real uvicorn on 127.0.0.1 and an ephemeral port, in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` until true, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_ready(client: httpx.Client | object, timeout: float = 5.0) -> None:
    """Poll ``GET /ping`` until 200."""
    wait_until(lambda: client.get("/ping").status_code == 200, timeout, "GET /ping to answer 200")
