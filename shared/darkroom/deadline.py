"""One deadline per request, from what Lambda and API Gateway leave, for the upstream call to use.

The entry point records when the request must be answered: the earlier of the Lambda's remaining time
and API Gateway's integration timeout counted from when the gateway received the request, minus the
time darkroom needs to store, meter and answer. Inference gets what is left at the moment it starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

API_GATEWAY_TIMEOUT_SECONDS = 29.0
# Encoding, S3 puts, the usage transaction and the response: kept back from the upstream's share.
ANSWER_MARGIN_SECONDS = 3.0

_answer_by: ContextVar[float | None] = ContextVar("darkroom_answer_by", default=None)
_background: ContextVar[bool] = ContextVar("darkroom_background", default=False)


def start(remaining_lambda_ms: int | None, gateway_received_epoch_ms: int | None) -> None:
    """Record this request's deadline (monotonic) from the Lambda context and the API Gateway event."""
    _background.set(False)
    _set(remaining_lambda_ms, gateway_received_epoch_ms)


@contextmanager
def background_job(remaining_lambda_ms: int | None) -> Iterator[None]:
    """A background job's deadline, for the block: only the worker Lambda's remaining time bounds it."""
    token = _background.set(True)
    answer_by = _answer_by.get()
    _set(remaining_lambda_ms, None)
    try:
        yield
    finally:
        _background.reset(token)
        _answer_by.set(answer_by)


def in_background() -> bool:
    """True inside a background job (no API Gateway timeout to answer within)."""
    return _background.get()


def _set(remaining_lambda_ms: int | None, gateway_received_epoch_ms: int | None) -> None:
    now = time.monotonic()
    budgets = []
    if remaining_lambda_ms is not None:
        budgets.append(remaining_lambda_ms / 1000)
    if gateway_received_epoch_ms:
        waited = max(0.0, time.time() - gateway_received_epoch_ms / 1000)
        budgets.append(API_GATEWAY_TIMEOUT_SECONDS - waited)
    _answer_by.set(now + min(budgets) - ANSWER_MARGIN_SECONDS if budgets else None)


def inference_budget(settings) -> float:
    """Seconds the upstream call may take now: the ceiling of this kind of work (a synchronous request or
    a background job), never past the request's deadline."""
    return inference_seconds(
        settings.job_inference_timeout_seconds if in_background() else settings.inference_timeout_seconds
    )


def inference_seconds(ceiling: float) -> float:
    """Seconds the upstream call may take now: at most ``ceiling``, never past the request's deadline."""
    answer_by = _answer_by.get()
    if answer_by is None:
        return ceiling
    return max(0.0, min(ceiling, answer_by - time.monotonic()))
