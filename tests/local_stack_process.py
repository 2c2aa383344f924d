"""Running ``darkroom serve`` as a subprocess on loopback, for the end-to-end and reliability suites.

The stack is started exactly as a developer would (``python -m darkroom.cli serve --port 0``); its
function containers are worker processes of the server, and they must end with it.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `darkroom serve` prints its lines once every function's container has imported its handler: about 5 s on an idle
# machine, 25 s or more on a loaded one (all of them import at once), more under coverage.
STARTUP_DEADLINE_SECONDS = 180


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
            name, _, value = line[len("export ") :].partition("=")
            exported[name.strip()] = "".join(shlex.split(value))  # the shell's reading of the quoted value
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


def clean_environment() -> dict[str, str]:
    """This process's environment minus what points at some other stack.

    A shell that sourced an earlier `darkroom serve`'s exports (or has DARKROOM_STACK set) would
    otherwise send the new stack and the CLI to that endpoint and those tables.
    """
    kept = {"DARKROOM_DEV_CREDENTIALS_DIR"}  # the run's Content Credentials key (tests/conftest.py), not ~/.darkroom
    return {k: v for k, v in os.environ.items() if k in kept or not k.startswith(("AWS_ENDPOINT_URL", "DARKROOM_"))}


@contextmanager
def serve(
    extra_env: dict[str, str], *, args: tuple[str, ...] = (), startup_seconds: float = STARTUP_DEADLINE_SECONDS
) -> Iterator[dict[str, str]]:
    """Start ONE local stack with ``extra_env`` (and ``args``, e.g. ``--model-server``); yield its exported
    environment; stop it and everything it started (function containers, a model server)."""
    env = clean_environment() | {"PYTHONUNBUFFERED": "1"} | extra_env
    process = subprocess.Popen(
        [sys.executable, "-m", "darkroom.cli", "serve", *args, "--host", "127.0.0.1", "--port", "0"],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )
    output = _Output(process.stdout)
    descendants: set[int] = set()
    try:
        if not output.wait_for("export OPENAI_BASE_URL=", time.monotonic() + startup_seconds):
            state = f"exited with {process.poll()}" if process.poll() is not None else "still running"
            pytest.fail(
                f"`darkroom serve {' '.join(args)} --port 0` printed no OPENAI_BASE_URL export within "
                f"{startup_seconds}s ({state}). Its output:\n{output.text()}",
                pytrace=False,
            )
        exported = _parse_exports(output.head)
        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AWS_ENDPOINT_URL", "DARKROOM_TENANTS_TABLE"):
            assert exported.get(name), f"serve did not export {name}; output:\n{output.text()}"
        yield exported
        descendants = _children(process.pid)
    finally:
        descendants |= _children(process.pid)
        _stop(process)
    # The function containers and a model server are the server's: they must be gone with it (a model
    # server gets 15 s for a graceful stop).
    deadline = time.monotonic() + 20
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
