"""Faults at the edge of a remote backend: one deadline per call, bounded retries, a circuit breaker.

* **One deadline per call**: ``min(job deadline, endpoint timeout)`` from the start of the call, on a
  monotonic clock. Every attempt's timeouts and every backoff sleep come out of what remains.
* **Retries only for what can succeed on a second try**: connection failures, read timeouts while
  time remains, and 429/500/502/503/504. Never another 4xx: that is our request or the client's prompt.
  Backoff is full-jitter exponential; a ``Retry-After`` is honoured when it fits before the deadline,
  and a wait that does not fit ends the call now instead of sleeping into a timeout.
* **A circuit breaker per endpoint**: after ``threshold`` consecutive failed calls it opens for
  ``cooldown_seconds`` and calls fail fast with a 503 and ``retry-after``; after the cool-down one
  call (half-open) is let through and decides whether it closes or opens again.

Clock, sleep and random are injectable so tests neither wait nor flake.
"""

from __future__ import annotations

import email.utils
import math
import random as _random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx

from darkroom.api.errors import ApiError, ServiceUnavailable, UpstreamError, UpstreamTimeout
from darkroom.observability import logger, upstream_call

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Outcomes that say the endpoint is unhealthy (they count against the breaker). A 4xx the upstream
# answered deliberately (a refused prompt, a request it did not accept, bad credentials) does not.
UNHEALTHY_CODES = frozenset(
    {"service_unavailable", "upstream_timeout", "upstream_invalid_response", "upstream_unreachable"}
)

UNAVAILABLE_MESSAGE = "The model's backend is temporarily unavailable. Retry later."
TIMEOUT_MESSAGE = "The model's backend did not answer in time."
MAX_RETRY_AFTER_SECONDS = 120


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, fully read (bounded) before it leaves the sender."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Deadline:
    """A fixed point on a monotonic clock; ``remaining()`` never goes below zero."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.expires = self.started + max(0.0, seconds)

    def remaining(self) -> float:
        return max(0.0, self.expires - self._clock())

    def elapsed_ms(self) -> int:
        return round((self._clock() - self.started) * 1000)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.25  # the first backoff is uniform in [0, base_delay]
    max_delay: float = 4.0
    min_attempt_seconds: float = 0.05  # never start an attempt (or sleep into one) with less than this left


def retry_after_seconds(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())


def _client_retry_after(seconds: float | None, default: int = 1) -> dict[str, str]:
    if seconds is None:
        return {"retry-after": str(default)}
    return {"retry-after": str(min(MAX_RETRY_AFTER_SECONDS, max(1, math.ceil(seconds))))}


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after ``cooldown_seconds``
    (one trial call; others keep failing fast) -> closed on its success, open again on its failure."""

    def __init__(
        self, threshold: int = 5, cooldown_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._probing or self._clock() - self._opened_at >= self.cooldown_seconds:
                return "half-open"
            return "open"

    def acquire(self) -> None:
        """Let a call through, or raise :class:`ServiceUnavailable` (503, ``retry-after``) while open."""
        with self._lock:
            if self._opened_at is None:
                return
            waited = self._clock() - self._opened_at
            if waited >= self.cooldown_seconds and not self._probing:
                self._probing = True  # half-open: this call is the trial
                return
            left = self.cooldown_seconds - waited if waited < self.cooldown_seconds else 1.0
        raise ServiceUnavailable(UNAVAILABLE_MESSAGE, headers=_client_retry_after(left))

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.threshold:
                self._opened_at = self._clock()
            self._probing = False


class Resilience:
    """Runs one remote call: breaker check, attempts with retries inside the deadline, breaker record."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.random = random
        self.clock = clock

    def deadline(self, seconds: float) -> Deadline:
        return Deadline(seconds, self.clock)

    def run(
        self,
        *,
        label: str,
        breaker: CircuitBreaker,
        deadline: Deadline,
        send: Callable[[float], Reply],
        handle: Callable[[Reply], T],
        backend: str = "openai",
    ) -> T:
        """``send(remaining_seconds)`` performs one attempt; ``handle`` turns the final reply into a
        result or an :class:`ApiError`. Raises ``ApiError`` only (503, 504, or ``handle``'s).

        Counts the call (metric ``UpstreamCalls``) and, when the client gets a 5xx, ``UpstreamErrors``
        by ``backend`` and error code (``circuit_open`` when the breaker refused the call)."""
        try:
            breaker.acquire()
        except ApiError:
            upstream_call(backend, "circuit_open")
            raise
        state = {"attempts": 0, "status": None}
        try:
            result = self._attempts(deadline, send, handle, state)
        except ApiError as exc:
            if exc.code in UNHEALTHY_CODES:
                breaker.failure()
            else:
                breaker.success()  # the endpoint answered deliberately
            upstream_call(backend, exc.code if exc.status >= 500 else None)
            logger.warning(
                "upstream call failed",
                extra={
                    "model": label,
                    "status": state["status"],
                    "attempts": state["attempts"],
                    "elapsed_ms": deadline.elapsed_ms(),
                    "code": exc.code,
                },
            )
            raise
        except BaseException:
            breaker.failure()
            upstream_call(backend, "internal")
            raise
        breaker.success()
        upstream_call(backend)
        logger.info(
            "upstream call",
            extra={
                "model": label,
                "status": state["status"],
                "attempts": state["attempts"],
                "elapsed_ms": deadline.elapsed_ms(),
            },
        )
        return result

    def _attempts(
        self, deadline: Deadline, send: Callable[[float], Reply], handle: Callable[[Reply], T], state: dict
    ) -> T:
        policy = self.policy
        while True:
            remaining = deadline.remaining()
            if remaining <= policy.min_attempt_seconds:
                raise UpstreamTimeout(TIMEOUT_MESSAGE)
            state["attempts"] += 1
            attempt = state["attempts"]
            try:
                reply = send(remaining)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
                delay = self._delay(attempt, None, deadline)
                if delay is None:
                    if deadline.remaining() <= policy.min_attempt_seconds:
                        raise UpstreamTimeout(TIMEOUT_MESSAGE) from None
                    raise ServiceUnavailable(UNAVAILABLE_MESSAGE, headers=_client_retry_after(None)) from None
                self.sleep(delay)
                continue
            except httpx.TimeoutException:
                delay = self._delay(attempt, None, deadline)
                if delay is None:
                    raise UpstreamTimeout(TIMEOUT_MESSAGE) from None
                self.sleep(delay)
                continue
            except httpx.HTTPError:  # a broken connection mid-answer, a protocol error: not retried
                raise UpstreamError("The model's backend could not be reached.", code="upstream_unreachable") from None
            state["status"] = reply.status
            if reply.status in RETRYABLE_STATUSES:
                retry_after = retry_after_seconds(reply.headers)
                delay = self._delay(attempt, retry_after, deadline)
                if delay is None:
                    raise ServiceUnavailable(UNAVAILABLE_MESSAGE, headers=_client_retry_after(retry_after))
                self.sleep(delay)
                continue
            return handle(reply)

    def retry(
        self,
        deadline: Deadline,
        attempt: Callable[[float], T],
        *,
        retryable: Callable[[BaseException], bool],
        reserve: float = 0.0,
    ) -> T:
        """``attempt(remaining_seconds)`` until it returns, fails with what ``retryable`` refuses, or no further
        attempt fits: the policy's count, or the deadline less the backoff (full jitter), ``min_attempt_seconds``
        and ``reserve`` (what an attempt needs before its own timeout starts, e.g. a connect timeout). The last
        failure is raised as it is; whether the first attempt has time is the caller's to check."""
        number = 0
        while True:
            number += 1
            try:
                return attempt(deadline.remaining())
            except BaseException as exc:
                if not retryable(exc):
                    raise
                delay = self._delay(number, None, deadline, reserve)
                if delay is None:
                    raise
                self.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None, deadline: Deadline, reserve: float = 0.0) -> float | None:
        """The wait before the next attempt, or None when there is no next attempt (count or time)."""
        policy = self.policy
        if attempt >= policy.max_attempts:
            return None
        if retry_after is not None:
            delay = retry_after
        else:
            delay = self.random() * min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
        if delay + policy.min_attempt_seconds + reserve >= deadline.remaining():
            return None
        return delay
