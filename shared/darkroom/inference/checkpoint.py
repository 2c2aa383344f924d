"""Upstream work that outlives one Lambda invocation: a background job's checkpoint.

An asynchronous endpoint (SageMaker async inference) may need longer than a worker invocation has. In a
background job the adapter keeps its submission's handle here; when the invocation's deadline comes
first it raises :class:`StillRunning`, the worker stores the handle on the job and runs the job again
later, and the adapter then collects the same submission instead of submitting (and paying) again.
Outside a background job nothing is resumable and the adapter's deadline is final.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any


class StillRunning(Exception):
    """The upstream is still working on ``handle``: collect it in a later invocation."""

    def __init__(self, handle: dict[str, Any]) -> None:
        super().__init__("the upstream is still working")
        self.handle = handle


class _Checkpoint:
    def __init__(self, handle: dict[str, Any] | None) -> None:
        self.handle = handle


_current: ContextVar[_Checkpoint | None] = ContextVar("darkroom_checkpoint", default=None)


@contextmanager
def resumable(handle: dict[str, Any] | None) -> Iterator[None]:
    """Inside the block, upstream work may be left running and resumed from ``handle`` (None: not started)."""
    token = _current.set(_Checkpoint(handle))
    try:
        yield
    finally:
        _current.reset(token)


def active() -> bool:
    return _current.get() is not None


def load() -> dict[str, Any] | None:
    """The handle of work started in an earlier invocation, if any."""
    checkpoint = _current.get()
    return checkpoint.handle if checkpoint else None


def save(handle: dict[str, Any]) -> None:
    checkpoint = _current.get()
    if checkpoint is not None:
        checkpoint.handle = handle
