"""The one thread all model work runs on (loading, warm-up, every job), in order."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class GpuWorker:
    """One daemon thread running jobs in order: all model work (loading, warm-up, every job) happens on it. Not a
    ThreadPoolExecutor, whose threads are joined at exit: a SIGTERM during a long load would wait for it to end."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        threading.Thread(target=self._loop, name="darkroom-gpu", daemon=True).start()

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        """Queue ``function(*args)``; a future cancelled before its turn never runs."""
        if self._closed:
            raise RuntimeError("the GPU worker is closed")
        future: Future = Future()
        self._jobs.put((future, function, args))
        return future

    def close(self) -> None:
        """Cancel what is queued and stop after the running job (which cannot be interrupted)."""
        self._closed = True
        with contextlib.suppress(queue.Empty):  # the worker may take the last job meanwhile
            while (item := self._jobs.get_nowait()) is not None:
                item[0].cancel()
        self._jobs.put(None)

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, function, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request, which answers for it
                future.set_exception(exc)
