"""End-to-end fixtures: one `darkroom serve` subprocess for the session, the CLI against it, fresh tenants.

The stack is started exactly as a developer would (``python -m darkroom.cli serve --port 0``) and is
reached only over loopback: the openai SDK and httpx for the API, ``python -m darkroom.cli`` for admin.
Nothing here uses the in-process ``aws`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_DEADLINE_SECONDS = 60
CLI_TIMEOUT_SECONDS = 60
KEY_CACHE_SECONDS = 1
REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    """All live descendants of ``pid`` (from /proc; Linux)."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[ppid].append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class _Output:
    """Drains the server's merged stdout/stderr (so the pipe never fills) and keeps head and tail."""

    def __init__(self, stream) -> None:
        self.head: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=100)
        self.count = 0
        self.closed = False
        self._cond = threading.Condition()
        threading.Thread(target=self._drain, args=(stream,), daemon=True).start()

    def _drain(self, stream) -> None:
        for raw in iter(stream.readline, ""):
            with self._cond:
                line = raw.rstrip("\n")
                self.count += 1
                if len(self.head) < 100:
                    self.head.append(line)
                else:
                    self.tail.append(line)
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, prefix: str, deadline: float) -> bool:
        with self._cond:
            while True:
                if any(line.startswith(prefix) for line in self.head):
                    return True
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))

    def text(self) -> str:
        with self._cond:
            skipped = self.count - len(self.head) - len(self.tail)
            return "\n".join([*self.head, *([f"... ({skipped} lines)"] if skipped > 0 else []), *self.tail])


def _parse_exports(lines: list[str]) -> dict[str, str]:
    exported: dict[str, str] = {}
    for line in lines:
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export "):].partition("=")
            exported[name.strip()] = value.strip()
    return exported


def _ignores_sigint(pid: int) -> bool:
    """True when SIGINT is ignored (inherited SIG_IGN, e.g. under a non-interactive shell's `&`)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except OSError:
        pass
    return False


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (the server's own clean shutdown), then SIGTERM, then SIGKILL to its process group."""
    if process.poll() is None and not _ignores_sigint(process.pid):
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)  # our own session/process group, by id
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def _clean_environment() -> dict[str, str]:
    """This process's environment minus what points at some other stack.

    A shell that sourced an earlier `darkroom serve`'s exports (or has DARKROOM_STACK set) would
    otherwise send the new stack and the CLI to that endpoint and those tables.
    """
    return {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL" and not k.startswith("DARKROOM_")}


class ImageOrigin:
    """A loopback HTTP server for image URL tests: serves PNGs, redirects, and counts every request."""

    def __init__(self, files: dict[str, bytes], redirect_to: str | None = None) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        origin = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
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
    env = _clean_environment() | {"DARKROOM_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS), "PYTHONUNBUFFERED": "1",
                                  "DARKROOM_FETCH_TEST_ALLOWLIST": image_origin.origin}
    process = subprocess.Popen(
        [sys.executable, "-m", "darkroom.cli", "serve", "--port", "0"],
        env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", bufsize=1, start_new_session=True,
    )
    output = _Output(process.stdout)
    descendants: set[int] = set()
    try:
        if not output.wait_for("export OPENAI_BASE_URL=", time.monotonic() + STARTUP_DEADLINE_SECONDS):
            state = f"exited with {process.poll()}" if process.poll() is not None else "still running"
            pytest.fail(
                f"`darkroom serve --port 0` printed no OPENAI_BASE_URL export within "
                f"{STARTUP_DEADLINE_SECONDS}s ({state}). Its output:\n{output.text()}",
                pytrace=False,
            )
        exported = _parse_exports(output.head)
        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AWS_ENDPOINT_URL", "DARKROOM_TENANTS_TABLE"):
            assert exported.get(name), f"serve did not export {name}; output:\n{output.text()}"
        assert exported["DARKROOM_KEY_CACHE_SECONDS"] == str(KEY_CACHE_SECONDS), (
            "the caller's DARKROOM_KEY_CACHE_SECONDS must win over the template's")
        yield exported
        descendants = _children(process.pid)
    finally:
        descendants |= _children(process.pid)
        _stop(process)
    # The function containers are daemons of the server: they must be gone with it.
    deadline = time.monotonic() + 10
    while (stray := {p for p in descendants if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    if stray:
        for pid in stray:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"processes of the local stack outlived it: {sorted(stray)}\n{output.text()}", pytrace=False)
    assert process.returncode is not None


@pytest.fixture(scope="session")
def base_url(stack) -> str:
    return stack["OPENAI_BASE_URL"]


@pytest.fixture(scope="session")
def cli(stack):
    """``cli("tenants", "create", "x", "--json")``: run the darkroom CLI against the stack.

    Returns the parsed JSON when ``--json`` is among the arguments, else the CompletedProcess.
    ``check=False`` returns the CompletedProcess whatever the exit status.
    """
    env = _clean_environment() | stack

    def run(*args: str, check: bool = True):
        done = subprocess.run(  # noqa: S603 - this interpreter, the darkroom CLI
            [sys.executable, "-m", "darkroom.cli", *map(str, args)], env=env, cwd=REPO,
            capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL,
        )
        if not check:
            return done
        assert done.returncode == 0, (
            f"darkroom {' '.join(map(str, args))} exited {done.returncode}\nstdout:\n{done.stdout}\n"
            f"stderr:\n{done.stderr}")
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
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed code
            [sys.executable, "-c", _ADMIN_LOOP], env=env, cwd=REPO, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
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
    runner = _Admin(_clean_environment() | stack)
    yield runner
    runner.close()


@pytest.fixture
def make_tenant(admin, base_url):
    """``make_tenant(images_per_minute=5)``: a fresh tenant with one newly issued key (via the CLI's commands)."""

    def make(images_per_minute: int | None = None, images_per_day: int | None = None,
             requests_per_minute: int | None = None) -> TenantKey:
        args = ["tenants", "create", f"e2e-{uuid.uuid4().hex[:8]}"]
        for flag, value in (("--images-per-minute", images_per_minute), ("--images-per-day", images_per_day),
                            ("--requests-per-minute", requests_per_minute)):
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
