"""Faults at the edge of a remote backend: one deadline per call, bounded retries, a circuit breaker; and
:meth:`Resilience.call`, the one way every adapter calls its upstream.

* **One deadline per call**: ``min(job deadline, endpoint timeout)`` from the start of the call, on a
  monotonic clock. Every attempt's timeouts and every backoff sleep come out of what remains; a call with no
  time left for an attempt is not started (a 504 that says nothing about the endpoint).
* **Retries only for what can succeed on a second try**: connection failures, read timeouts while
  time remains, throttling, and 429/500/502/503/504. Never another 4xx: that is our request or the client's
  prompt. Backoff is full-jitter exponential; a ``Retry-After`` is honoured when it fits before the deadline,
  and a wait that does not fit ends the call now instead of sleeping into a timeout.
* **One definition of an unhealthy endpoint**: a call that ends in an :class:`Outcome` marked ``unhealthy``
  (throttling, timeouts, no connection, an invalid answer, the upstream's own failure), or in an exception
  nobody expected. The adapter decides ``unhealthy`` where it reads the upstream's answer; a refusal of the
  client's request, darkroom's own configuration, or any other ``ApiError`` is not the endpoint's health.
* **A circuit breaker per endpoint**: after ``threshold`` consecutive unhealthy calls it opens for
  ``cooldown_seconds`` and calls fail fast with a 503 and ``retry-after``; after the cool-down one
  call (half-open) is let through and decides whether it closes or opens again.
* **Metrics**: every call the breaker let through is one ``UpstreamCalls``; one the client gets a 5xx for is
  also an ``UpstreamErrors`` by code (``circuit_open`` when the breaker refused it). Retries are one call.

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
from darkroom.observability import logger, upstream_call, upstream_error

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
UNAVAILABLE_MESSAGE = "The model's backend is temporarily unavailable. Retry later."
TIMEOUT_MESSAGE = "The model's backend did not answer in time."
UNREACHABLE_MESSAGE = "The model's backend could not be reached."
MAX_RETRY_AFTER_SECONDS = 120


class Outcome(Exception):
    """A failed attempt, as the adapter that read the upstream's answer classifies it: the ``ApiError`` the
    client gets; ``unhealthy``, whether it counts against the endpoint's breaker; ``retryable``, whether another
    attempt may succeed; ``retry_after``, the upstream's own ``Retry-After`` in seconds; and ``when_spent``, the
    error instead when no time is left for another attempt (a refused connection at the deadline is a timeout)."""

    def __init__(
        self,
        error: ApiError,
        *,
        unhealthy: bool,
        retryable: bool = False,
        retry_after: float | None = None,
        when_spent: ApiError | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.unhealthy = unhealthy
        self.retryable = retryable
        self.retry_after = retry_after
        self.when_spent = when_spent


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


@dataclass
class _Tally:
    """What one call did, for its log line."""

    attempts: int = 0


class Resilience:
    """Runs one remote call (:meth:`call`): the deadline, the breaker, attempts with retries, the metrics."""

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

    def call(
        self,
        attempt: Callable[[float], T],
        *,
        breaker: CircuitBreaker,
        deadline: Deadline | None,
        backend: str,
        model: str,
        operation: str,
        reserve: float = 0.0,
    ) -> T:
        """``attempt(remaining_seconds)`` behind ``breaker``, tried again while its :class:`Outcome` is retryable
        and another attempt fits before ``deadline`` (less ``reserve``: what an attempt needs before its own
        timeout starts, e.g. a connect timeout). Raises ``ApiError`` only: an ``Outcome`` becomes its error.

        Without a deadline, ``attempt`` runs once (with an infinite remaining time). Counts the call for
        ``backend`` (``UpstreamCalls``; ``UpstreamErrors`` by code when the client gets a 5xx)."""
        if deadline is not None and deadline.remaining() <= reserve + self.policy.min_attempt_seconds:
            # No time to start an attempt: the request's budget is spent, which says nothing about the endpoint.
            logger.warning("upstream call not started: no time left", extra={"model": model, "operation": operation})
            raise UpstreamTimeout(TIMEOUT_MESSAGE)
        try:
            breaker.acquire()
        except ApiError:
            upstream_call(backend, "circuit_open")
            raise
        tally = _Tally()
        try:
            result = self._attempts(attempt, deadline, reserve, tally)
        except Outcome as outcome:
            self.settle(breaker, outcome, backend=backend, model=model, operation=operation, tally=tally)
            raise outcome.error from None
        except ApiError as error:  # darkroom refused the request or the answer on the client's account
            healthy = Outcome(error, unhealthy=False)
            self.settle(breaker, healthy, backend=backend, model=model, operation=operation, tally=tally)
            raise
        except BaseException:
            breaker.failure()
            upstream_call(backend, "internal")
            raise
        breaker.success()
        upstream_call(backend)
        elapsed_ms = deadline.elapsed_ms() if deadline is not None else None
        extra = {"model": model, "operation": operation, "attempts": tally.attempts, "elapsed_ms": elapsed_ms}
        logger.info("upstream call", extra=extra)
        return result

    def run(
        self,
        *,
        label: str,
        breaker: CircuitBreaker,
        deadline: Deadline,
        send: Callable[[float], Reply],
        handle: Callable[[Reply], T],
        backend: str = "openai",
        operation: str = "call",
    ) -> T:
        """An HTTP call through :meth:`call`: ``send(remaining_seconds)`` is one attempt, whose connection
        failures, timeouts and retryable statuses become :class:`Outcome` failures (:func:`http_reply`); ``handle``
        turns the final reply into a result, or raises (an ``Outcome``, or an ``ApiError`` of the client's)."""
        return self.call(
            lambda remaining: handle(http_reply(send, remaining)),
            breaker=breaker,
            deadline=deadline,
            backend=backend,
            model=label,
            operation=operation,
        )

    @staticmethod
    def settle(
        breaker: CircuitBreaker,
        outcome: Outcome,
        *,
        backend: str,
        model: str,
        operation: str,
        counted: bool = False,
        tally: _Tally | None = None,
    ) -> None:
        """Record a failed call: the breaker by ``outcome.unhealthy``, the metrics, one log line. ``counted``: the
        call was counted already (an asynchronous job's answer: its submission was the call)."""
        (breaker.failure if outcome.unhealthy else breaker.success)()
        error = outcome.error
        code = error.code if error.status >= 500 else None
        if not counted:
            upstream_call(backend, code)
        elif code is not None:
            upstream_error(backend, code)
        extra = {"model": model, "operation": operation, "code": error.code, "status": error.status}
        logger.warning("upstream call failed", extra={**extra, "attempts": tally.attempts if tally else None})

    def _attempts(self, attempt: Callable[[float], T], deadline: Deadline | None, reserve: float, tally: _Tally) -> T:
        while True:
            tally.attempts += 1
            if deadline is None:
                return attempt(math.inf)
            try:
                return attempt(deadline.remaining())
            except Outcome as outcome:
                if not outcome.retryable:
                    raise
                delay = self._delay(tally.attempts, outcome.retry_after, deadline, reserve)
                if delay is not None:
                    self.sleep(delay)
                    continue
                spent = deadline.remaining() <= self.policy.min_attempt_seconds + reserve
                if outcome.when_spent is not None and spent:
                    raise Outcome(outcome.when_spent, unhealthy=outcome.unhealthy) from None
                raise

    def _delay(self, attempt: int, retry_after: float | None, deadline: Deadline, reserve: float) -> float | None:
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


def http_reply(send: Callable[[float], Reply], remaining: float) -> Reply:
    """One HTTP attempt: its reply, unless a connection failure, a timeout or a retryable status makes it an
    :class:`Outcome` (each unhealthy; all but a broken answer retryable)."""
    try:
        reply = send(remaining)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
        unavailable = ServiceUnavailable(UNAVAILABLE_MESSAGE, headers=_client_retry_after(None))
        raise Outcome(
            unavailable, unhealthy=True, retryable=True, when_spent=UpstreamTimeout(TIMEOUT_MESSAGE)
        ) from None
    except httpx.TimeoutException:
        raise Outcome(UpstreamTimeout(TIMEOUT_MESSAGE), unhealthy=True, retryable=True) from None
    except httpx.HTTPError:  # a broken connection mid-answer, a protocol error: not retried
        raise Outcome(UpstreamError(UNREACHABLE_MESSAGE, code="upstream_unreachable"), unhealthy=True) from None
    if reply.status in RETRYABLE_STATUSES:
        hint = retry_after_seconds(reply.headers)
        unavailable = ServiceUnavailable(UNAVAILABLE_MESSAGE, headers=_client_retry_after(hint))
        raise Outcome(unavailable, unhealthy=True, retryable=True, retry_after=hint)
    return reply
