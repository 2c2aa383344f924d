"""Reliability suite fixtures.

The in-process fixtures (``aws``, ``svc``, ``tenant``) come from ``tests/conftest.py``. This file adds
one ``darkroom serve`` subprocess on loopback for the schema fuzzing (a trimmed copy of what
``tests/e2e/conftest.py`` does; the e2e folder is a sibling, not a package, so it is not imported),
a fuzzing tenant created through the real CLI, and the tenant's rate-limit counts read from the table.
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
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_SECONDS = 60
CLI_TIMEOUT_SECONDS = 60


# -- the local stack (subprocess, loopback only) -------------------------------------------------------


def _clean_environment() -> dict[str, str]:
    """This process's environment minus anything pointing at another stack (see tests/e2e/conftest.py)."""
    return {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL" and not k.startswith("DARKROOM_")}


class _Output:
    """Drains the server's merged output so the pipe never fills; keeps the last lines for failures."""

    def __init__(self, stream) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.head: list[str] = []
        self._cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._drain, args=(stream,), daemon=True).start()

    def _drain(self, stream) -> None:
        for raw in iter(stream.readline, ""):
            with self._cond:
                line = raw.rstrip("\n")
                if len(self.head) < 100:
                    self.head.append(line)
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, prefix: str, deadline: float) -> bool:
        with self._cond:
            while True:
                if any(line.startswith(prefix) for line in self.head):
                    return True
                if self.closed or time.monotonic() >= deadline:
                    return False
                self._cond.wait(0.5)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (the server's clean shutdown), then SIGTERM/SIGKILL to its own process group, by id."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(scope="session")
def local_stack():
    """``darkroom serve --port 0`` on 127.0.0.1; yields its exported environment (OPENAI_*, AWS_*, DARKROOM_*)."""
    env = _clean_environment() | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "darkroom.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
        env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", bufsize=1, start_new_session=True,
    )
    output = _Output(process.stdout)
    try:
        if not output.wait_for("export OPENAI_BASE_URL=", time.monotonic() + STARTUP_DEADLINE_SECONDS):
            pytest.fail(f"`darkroom serve --port 0` did not start:\n{output.text()}", pytrace=False)
        exported = {}
        for line in output.head:
            if line.startswith("export ") and "=" in line:
                name, _, value = line[len("export "):].partition("=")
                exported[name.strip()] = value.strip()
        assert exported["OPENAI_BASE_URL"].startswith("http://127.0.0.1:"), exported["OPENAI_BASE_URL"]
        exported["_output"] = output  # for failure messages
        yield exported
    finally:
        _stop(process)


def run_cli(stack: dict, *args: str):
    """``python -m darkroom.cli ARGS --json`` against the stack -> parsed JSON."""
    env = _clean_environment() | {k: v for k, v in stack.items() if not k.startswith("_")}
    done = subprocess.run(  # this interpreter, the darkroom CLI
        [sys.executable, "-m", "darkroom.cli", *args, "--json"], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=CLI_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"darkroom {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def fuzz_tenant(local_stack) -> dict:
    """A tenant with limits far above what the fuzzing can use, and its key: {tenant_id, key, origin}."""
    tenant = run_cli(local_stack, "tenants", "create", f"fuzz-{uuid.uuid4().hex[:8]}",
                     "--images-per-minute", "100000", "--images-per-day", "1000000",
                     "--requests-per-minute", "100000")
    issued = run_cli(local_stack, "keys", "issue", tenant["tenant_id"])
    origin = local_stack["OPENAI_BASE_URL"].removesuffix("/").removesuffix("/v1")
    return {"tenant_id": tenant["tenant_id"], "key": issued["key"], "origin": origin}


# -- rate-limit windows, read from the table -------------------------------------------------------------


def window_counts(dynamodb, table: str, tenant_id: str) -> dict[str, int]:
    """The tenant's rate-limit counts read from the table: {"requests#60": n, "images#60": n, "images#86400": n},
    summed over window starts (a test that crosses a minute boundary still sees every count)."""
    counts: dict[str, int] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            key = item["pk"]["S"]
            if key.startswith(f"{tenant_id}#"):
                _, name, seconds, _start = key.split("#")
                counts[f"{name}#{seconds}"] = counts.get(f"{name}#{seconds}", 0) + int(item["count"]["N"])
    return counts


@pytest.fixture
def counts(svc):
    """``counts(tenant_id)`` -> the tenant's rate-limit window counts (see :func:`window_counts`)."""
    return lambda tenant_id: window_counts(svc.limiter._db, svc.settings.rate_limits_table, tenant_id)
