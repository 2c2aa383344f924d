"""Lambda execution environments for the local stack: worker processes that import a function's handler
(the init phase) and then run one event at a time, and a pool of them per function.

The init phase follows Lambda's rules (Lambda developer guide, "Understanding the Lambda execution environment
lifecycle", Init phase: https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html):
an on-demand environment's init is limited to 10 s, and one that takes longer is retried at the first
invocation within the function's configured timeout; environments prepared ahead of traffic (provisioned
concurrency) get 130 s or the function's timeout, whichever is higher. Here the containers ``darkroom serve``
starts before it announces itself are the prepared ones, and an init past 10 s carries on, on the invocation's
clock, instead of starting over (a loaded machine would only repeat the same slow imports). A failed or timed-out
init is logged with its reason, for the operator; the caller gets the gateway's generic 5xx.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from darkroom.api.event_stream import StreamingTransport
from darkroom.local.events import Event, Result
from darkroom.local.template import PROJECT_ROOT, Function

logger = logging.getLogger("darkroom.local")
# Containers start clean (spawn, not fork): no inherited threads, locks or moto state.
_SPAWN = multiprocessing.get_context("spawn")
_READY = "ready"
_FAILED = "failed"
INIT_SECONDS = 10  # an on-demand environment's init phase
# A streamed invocation (a STREAM route): the parent sends (_STREAM, event); the worker answers the head (the result,
# and whether a stream follows), then each chunk as the function makes it, then _END. _CLOSE (the client went away)
# has the worker close the stream before its next chunk.
_STREAM = "stream"
_CLOSE = "close"
_END = "end"
PREPARED_INIT_SECONDS = 130  # a prepared one's (provisioned concurrency), or the function's timeout if higher


class InitFailed(Exception):
    """The handler module could not be imported (or the process died); ``reason`` is for the operator's log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Container:
    """One Lambda execution environment: a process that imported the handler and runs one event at a time.

    Processes, not threads: Powertools keeps the current event in class state, and Lambda itself
    never runs two events in one environment.
    """

    def __init__(self, function: Function, environment: dict[str, str]) -> None:
        parent, child = _SPAWN.Pipe()
        self.function = function
        # Events go in; the init's message, then one result per event, come back (unpickled, so untyped).
        self._conn: Connection[object, Any] = parent
        self.process = _SPAWN.Process(
            target=_container_main,
            args=(function, environment, child),
            daemon=True,
            name=f"darkroom-{function.logical_id}",
        )
        self.process.start()
        child.close()
        self._init_deadline = time.monotonic() + INIT_SECONDS
        self._ready = False

    def prepare(self) -> bool:
        """Wait for the init as Lambda does for provisioned concurrency; False (reason logged) when it failed."""
        name = self.function.logical_id
        limit = max(PREPARED_INIT_SECONDS, self.function.timeout_seconds)
        try:
            if self._await_init(limit):
                return True
            logger.error("darkroom: %s did not start: its init took over %ss", name, limit)
        except InitFailed as failed:
            logger.error("darkroom: %s did not start: %s", name, failed.reason)
        self.stop()
        return False

    def invoke(self, event: Event, timeout: float) -> Result | None:
        """The handler's result; None when the init failed or the handler crashed (the reason is logged);
        raises TimeoutError past ``timeout``, which counts from the invocation, or from the end of the init's own
        ``INIT_SECONDS`` when the init is still running then."""
        result: Result | None = self._call(event, timeout)
        return result

    def open_stream(self, event: Event, timeout: float) -> tuple[Result | None, bool]:
        """Invoke a STREAM route's handler: its result (for a stream, only the head) and whether a stream
        follows (read it with :meth:`next_chunk` to its end, before the next invocation); as :meth:`invoke`
        otherwise."""
        head = self._call((_STREAM, event), timeout)
        return (None, False) if head is None else (head[0], bool(head[1]))

    def next_chunk(self, timeout: float) -> bytes | None:
        """The stream's next chunk, or None at its end (or when the process died); raises TimeoutError, the
        environment discarded, when none comes within ``timeout``."""
        try:
            if not self._conn.poll(max(timeout, 0.0)):
                logger.error("darkroom: %s's stream timed out", self.function.logical_id)
                self.stop()
                raise TimeoutError
            message = self._conn.recv()
        except (EOFError, OSError):
            self.stop()
            return None
        return None if message == _END else bytes(message)

    def close_stream(self) -> None:
        """Have the worker close the stream before its next chunk (its end still follows)."""
        try:
            self._conn.send(_CLOSE)
        except OSError:  # the process is gone: so is its stream
            pass

    def _call(self, message: object, timeout: float) -> Any:
        name = self.function.logical_id
        try:
            if not self._await_init(self._init_deadline - time.monotonic()):
                logger.warning(
                    "darkroom: %s: init is taking over %ss; it continues within the function's %ss "
                    "timeout, as Lambda retries it",
                    name,
                    INIT_SECONDS,
                    timeout,
                )
                started = time.monotonic()
                if not self._await_init(timeout):
                    logger.error(
                        "darkroom: %s timed out: its init did not finish within %ss + the function's %ss timeout",
                        name,
                        INIT_SECONDS,
                        timeout,
                    )
                    self.stop()
                    raise TimeoutError
                timeout -= time.monotonic() - started
        except InitFailed as failed:
            logger.error("darkroom: %s did not start: %s", name, failed.reason)
            self.stop()
            return None
        self._conn.send(message)
        if not self._conn.poll(max(timeout, 0.0)):
            logger.error("darkroom: %s timed out after its %ss timeout", name, self.function.timeout_seconds)
            self.stop()  # a timed-out environment is discarded, as Lambda does
            raise TimeoutError
        try:
            return self._conn.recv()
        except (EOFError, OSError):  # the process died mid-invocation (e.g. out of memory)
            self.stop()
            logger.error(
                "darkroom: %s's process exited during an invocation (exit code %s)", name, self.process.exitcode
            )
            return None

    def _await_init(self, seconds: float) -> bool:
        """Whether the handler is imported within ``seconds``; raises :class:`InitFailed` when its import failed."""
        if self._ready:
            return True
        message: object
        try:
            if not self._conn.poll(max(seconds, 0.0)):
                return False
            message = self._conn.recv()
        except (EOFError, OSError):
            message = None
        if message == _READY:
            self._ready = True
            return True
        if isinstance(message, tuple) and message[0] == _FAILED:
            raise InitFailed(message[1])
        self.process.join(timeout=5)
        raise InitFailed(f"its process exited during the init (exit code {self.process.exitcode})")

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


def _failure(exc: Exception) -> str:
    """One line for the operator: the exception's type and message, and where it was raised."""
    text = " ".join(str(exc).split())
    reason = f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        path = Path(frames[-1].filename)
        if path.is_relative_to(PROJECT_ROOT):
            path = path.relative_to(PROJECT_ROOT)
        reason += f" ({path}, line {frames[-1].lineno})"
    return reason


def _container_main(function: Function, environment: dict[str, str], conn: Connection[object, Any]) -> None:
    # Ctrl-C reaches the terminal's whole process group: the server stops its containers, which must not each
    # print a KeyboardInterrupt traceback (a container whose server is gone ends at its pipe's EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As Lambda's runtime does: the function's MemorySize (darkroom.intake sizes its decode budget from it).
    os.environ.update({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb), **environment})
    sys.path.insert(0, str(function.code_dir))
    try:
        path = function.code_dir / f"{function.module}.py"
        spec = importlib.util.spec_from_file_location(function.module, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"no module {function.module} at {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handler = getattr(module, function.attribute)
    except Exception as exc:  # noqa: BLE001 - Lambda's Runtime.ImportModuleError: reported, and the process ends
        conn.send((_FAILED, _failure(exc)))
        return
    conn.send(_READY)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message == _CLOSE:  # crossed the end of its stream: nothing left to close
            continue
        context = SimpleNamespace(
            function_name=function.logical_id,
            memory_limit_in_mb=function.memory_mb,
            invoked_function_arn=f"arn:aws:lambda:local:000000000000:function:{function.logical_id}",
            aws_request_id=str(uuid.uuid4()),
            function_version="$LATEST",
            log_group_name=f"/aws/lambda/{function.logical_id}",
            log_stream_name="local",
            get_remaining_time_in_millis=lambda: function.timeout_seconds * 1000,
        )
        if isinstance(message, tuple) and message[0] == _STREAM:
            _run_streamed(handler, message[1], context, conn, function.logical_id)
            continue
        try:
            result = handler(message, context)
        except Exception:
            logger.exception("function invocation failed", extra={"function": function.logical_id})
            result = None
        conn.send(result)


def _run_streamed(handler: Any, event: Event, context: object, conn: Connection[object, Any], name: str) -> None:
    """One STREAM route's invocation: the head, then each chunk as the producer makes it, then _END; a _CLOSE
    that arrives meanwhile closes the producer (GeneratorExit in it) before its next chunk."""
    try:
        with StreamingTransport() as transport:
            result = handler(event, context)
    except Exception:
        logger.exception("function invocation failed", extra={"function": name})
        conn.send(None)
        return
    stream = transport.stream
    conn.send((result, stream is not None))
    if stream is None:
        return
    try:
        while not conn.poll():
            chunk = next(stream, None)
            if chunk is None:
                break
            conn.send(bytes(chunk))
        else:
            conn.recv()  # the client went away
    except Exception:
        logger.exception("the function's stream failed", extra={"function": name})
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        conn.send(_END)


class Pool:
    """Idle containers of one function; a busy function gets new ones, up to ``limit``."""

    def __init__(self, function: Function, environment: dict[str, str], limit: int) -> None:
        self.function = function
        self._environment = environment
        self._idle: list[Container] = []
        self._all: list[Container] = []
        self._limit = limit
        self._cond = threading.Condition()

    def acquire(self) -> Container:
        with self._cond:
            while True:
                while self._idle:
                    container = self._idle.pop()
                    if container.alive:
                        return container
                    self._all.remove(container)
                if len(self._all) < self._limit:
                    container = Container(self.function, self._environment)
                    self._all.append(container)
                    return container
                self._cond.wait()

    def release(self, container: Container) -> None:
        with self._cond:
            if container.alive:
                self._idle.append(container)
            elif container in self._all:
                self._all.remove(container)
            self._cond.notify()

    def prepare(self) -> None:
        """One container, its init awaited (a failure is logged, and the next request starts another)."""
        container = self.acquire()
        container.prepare()
        self.release(container)

    def stop(self) -> None:
        with self._cond:
            for container in self._all:
                container.stop()
            self._all.clear()
            self._idle.clear()
