"""End-to-end fixtures: one `darkroom serve` subprocess for the session, the CLI against it, fresh tenants.

The stack is started exactly as a developer would (``python -m darkroom.cli serve --port 0``) and is
reached only over loopback: the openai SDK and httpx for the API, ``python -m darkroom.cli`` for admin.
Nothing here uses the in-process ``aws`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import openai_conformance
from local_stack_process import clean_environment, serve

CLI_TIMEOUT_SECONDS = 60
KEY_CACHE_SECONDS = 1
REPO = Path(__file__).resolve().parents[2]


class ImageOrigin:
    """A loopback HTTP server for image URL tests: serves PNGs, redirects, and counts every request."""

    def __init__(self, files: dict[str, bytes], redirect_to: str | None = None) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        origin = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.requests.append(self.path)
                if self.path == "/redirect" and origin.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", origin.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = files.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args) -> None:
                pass

        self.redirect_to = redirect_to
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.origin}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _red_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (220, 20, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def canary():
    """Must never be reached: it is not on the fetch allowlist."""
    origin = ImageOrigin({"/x.png": _red_png()})
    yield origin
    origin.close()


@pytest.fixture(scope="session")
def image_origin(canary):
    """Allowlisted for the stack's fetcher (DARKROOM_FETCH_TEST_ALLOWLIST); /redirect points at the canary."""
    origin = ImageOrigin({"/red.png": _red_png()}, redirect_to=canary.url("/x.png"))
    yield origin
    origin.close()


@pytest.fixture(scope="session")
def stack(image_origin):
    """Start ONE local stack; yield its exported environment (OPENAI_*, AWS_*, DARKROOM_*)."""
    # Its own embedded moto server; a 1 s key cache so revocation tests are quick; one loopback image
    # origin allowed for the URL fetcher (a test-only switch).
    with serve(
        {"DARKROOM_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS), "DARKROOM_FETCH_TEST_ALLOWLIST": image_origin.origin}
    ) as exported:
        assert exported["DARKROOM_KEY_CACHE_SECONDS"] == str(KEY_CACHE_SECONDS), (
            "the caller's DARKROOM_KEY_CACHE_SECONDS must win over the template's"
        )
        openai_conformance.RECORDER.watch(exported["OPENAI_BASE_URL"])
        yield exported


@pytest.fixture(scope="session", autouse=True)
def openai_conformance_check():
    """Every answer from a watched stack is checked against tests/schemas/openai (see openai_conformance)."""
    saved = openai_conformance.install()
    yield openai_conformance.RECORDER
    openai_conformance.uninstall(saved)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A schema violation in any answer a test received fails that test, naming the body and the place."""
    try:
        return (yield)
    finally:
        found = openai_conformance.RECORDER.take()
        if found:
            raise AssertionError(openai_conformance.report(found))  # the test's own failure stays as context


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        found = openai_conformance.RECORDER.take()
        if found:
            raise AssertionError(openai_conformance.report(found))


def pytest_terminal_summary(terminalreporter):
    stats = openai_conformance.RECORDER.stats
    if stats:
        counts = ", ".join(f"{n} {what}" for what, n in sorted(stats.items()))
        terminalreporter.write_line(f"OpenAI conformance (tests/schemas/openai): {counts}")


@pytest.fixture(scope="session")
def base_url(stack) -> str:
    return stack["OPENAI_BASE_URL"]


@pytest.fixture(scope="session")
def cli(stack):
    """``cli("tenants", "create", "x", "--json")``: run the darkroom CLI against the stack.

    Returns the parsed JSON when ``--json`` is among the arguments, else the CompletedProcess.
    ``check=False`` returns the CompletedProcess whatever the exit status.
    """
    env = clean_environment() | stack

    def run(*args: str, check: bool = True):
        done = subprocess.run(
            [sys.executable, "-m", "darkroom.cli", *map(str, args)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
        if not check:
            return done
        assert done.returncode == 0, (
            f"darkroom {' '.join(map(str, args))} exited {done.returncode}\nstdout:\n{done.stdout}\n"
            f"stderr:\n{done.stderr}"
        )
        if "--json" in args:
            try:
                return json.loads(done.stdout)
            except json.JSONDecodeError:
                pytest.fail(f"darkroom {' '.join(args)} --json printed no JSON:\n{done.stdout}\n{done.stderr}")
        return done

    return run


@dataclass
class TenantKey:
    tenant_id: str
    key_id: str
    key: str
    base_url: str

    def client(self, **kwargs):
        import openai

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 120)
        return openai.OpenAI(base_url=self.base_url, api_key=self.key, **kwargs)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


# A long-lived interpreter that runs ``darkroom.cli.main(argv)`` for each JSON line it reads: the same
# commands as ``python -m darkroom.cli`` without paying interpreter and boto3 start-up per tenant.
# Fixtures use it to set tenants up; the tests' own admin actions go through the real `cli`.
_ADMIN_LOOP = """
import contextlib, io, json, sys, traceback
from darkroom.cli import main

replies = sys.stdout
for line in sys.stdin:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(json.loads(line))
    except BaseException:
        status = 99
        err.write(traceback.format_exc())
    replies.write(json.dumps({"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\\n")
    replies.flush()
"""


class _Admin:
    def __init__(self, env: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ADMIN_LOOP],
            env=env,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def __call__(self, *args: str):
        """``darkroom ARGS --json`` -> parsed JSON (fails the test on a non-zero status)."""
        with self._lock:
            self.process.stdin.write(json.dumps([*map(str, args), "--json"]) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        assert line, f"the admin interpreter exited ({self.process.poll()})"
        reply = json.loads(line)
        assert reply["status"] == 0, f"darkroom {' '.join(args)} failed:\n{reply['stdout']}\n{reply['stderr']}"
        return json.loads(reply["stdout"])

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def admin(stack):
    runner = _Admin(clean_environment() | stack)
    yield runner
    runner.close()


@pytest.fixture
def make_tenant(admin, base_url):
    """``make_tenant(images_per_minute=5)``: a fresh tenant with one newly issued key (via the CLI's commands)."""

    def make(
        images_per_minute: int | None = None, images_per_day: int | None = None, requests_per_minute: int | None = None
    ) -> TenantKey:
        args = ["tenants", "create", f"e2e-{uuid.uuid4().hex[:8]}"]
        for flag, value in (
            ("--images-per-minute", images_per_minute),
            ("--images-per-day", images_per_day),
            ("--requests-per-minute", requests_per_minute),
        ):
            if value is not None:
                args += [flag, str(value)]
        tenant = admin(*args)
        assert tenant["status"] == "active"
        if images_per_minute is not None:
            assert tenant["images_per_minute"] == images_per_minute
        issued = admin("keys", "issue", tenant["tenant_id"])
        assert issued["tenant_id"] == tenant["tenant_id"]
        return TenantKey(tenant["tenant_id"], issued["key_id"], issued["key"], base_url)

    return make


@pytest.fixture
def tenant(make_tenant) -> TenantKey:
    """A fresh tenant with default limits."""
    return make_tenant()


@pytest.fixture
def client(tenant):
    return tenant.client()


def _error_body(response) -> dict:
    """The OpenAI error envelope of an httpx response, checked for its four keys; returns ``error``."""
    assert "Traceback" not in response.text, response.text
    assert response.headers.get("content-type", "").startswith("application/json"), dict(response.headers)
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body["error"]


@pytest.fixture(scope="session")
def error_body():
    """``error_body(httpx_response)`` -> the checked ``error`` object of an OpenAI error envelope."""
    return _error_body


@pytest.fixture(scope="session")
def usage_totals(cli):
    """``usage_totals(tenant_id)`` -> {"requests": n, "images": n, ...} summed over every day listed."""

    def totals(tenant_id: str) -> dict[str, int]:
        rows = cli("usage", tenant_id, "--json")
        assert isinstance(rows, list), rows
        summed = dict.fromkeys(("requests", "images", "input_tokens", "output_tokens"), 0)
        for row in rows:
            for name in ("requests", "images", "input_tokens", "output_tokens"):
                summed[name] += row[name]
        return summed

    return totals


def wait_for_fresh_minute(latest_second: int = 45) -> None:
    """Per-minute windows start on the minute: past ``latest_second``, wait for the next one to start."""
    second = time.time() % 60
    if second >= latest_second:
        time.sleep(60 - second + 0.25)


@pytest.fixture
def fresh_minute():
    """Call before a burst that must land in one per-minute window."""
    return wait_for_fresh_minute
