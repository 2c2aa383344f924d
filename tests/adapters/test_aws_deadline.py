"""The AWS adapters' calls fit inside their deadline, retries included (darkroom.inference.aws_runtime).

botocore's own retries are off for the runtime clients; darkroom retries throttling within the deadline, and
each attempt's read timeout is what remains. One test runs botocore against a real (loopback) socket that never
answers in time; the others use Stubber and a fake clock.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.stub import Stubber

from backend_stubs import stubbed
from darkroom import config
from darkroom.api.errors import ServiceUnavailable, UpstreamTimeout
from darkroom.catalog import ModelEntry
from darkroom.inference import GenerateJob
from darkroom.inference.resilience import CircuitBreaker, Resilience
from darkroom.inference.sagemaker import SageMakerBackend


def entry(timeout_seconds: float = 20) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "id": "sm-slow",
            "backend": "sagemaker",
            "endpoint": {"endpoint_name": "slow-endpoint", "timeout_seconds": timeout_seconds},
            "capabilities": ["generate"],
            "sizes": ["64x48"],
            "default_size": "64x48",
        }
    )


def job(deadline_seconds: float) -> GenerateJob:
    return GenerateJob(
        prompt="a cat", width=64, height=48, n=1, quality="medium", transparent=False, deadline_seconds=deadline_seconds
    )


class Silent(BaseHTTPRequestHandler):
    """Reads the request and then says nothing until the test ends: an endpoint that never answers in time."""

    requests = 0
    release = threading.Event()

    def do_POST(self):
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.release.wait(30)

    def log_message(self, *args):
        pass


@pytest.fixture
def silent_endpoint(monkeypatch):
    Silent.requests = 0
    Silent.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{server.server_address[1]}")
    config._session.cache_clear()  # the session remembers the endpoints it was built with
    config.reset()  # and the clients built against another endpoint
    try:
        yield Silent
    finally:
        Silent.release.set()
        server.shutdown()
        server.server_close()
        config._session.cache_clear()
        config.reset()


def test_a_slow_endpoint_costs_at_most_the_deadline_on_a_real_socket(silent_endpoint):
    # Before: botocore's standard retries (max_attempts 3: four attempts), each with the endpoint's full
    # read timeout: about 4 x 1.5 s here. Now one attempt, whose read timeout ends before the deadline.
    model = entry(timeout_seconds=1.5)
    backend = SageMakerBackend(model)  # the container's client: config.client(runtime=True)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        backend.generate(model, job(deadline_seconds=1.5))
    elapsed = time.monotonic() - started
    assert elapsed <= 1.5, f"the call took {elapsed:.2f} s against a 1.5 s deadline"
    assert silent_endpoint.requests == 1


def test_the_jobs_deadline_bounds_the_call_below_the_endpoints_timeout(silent_endpoint):
    model = entry(timeout_seconds=20)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        SageMakerBackend(model).generate(model, job(deadline_seconds=1.4))
    assert time.monotonic() - started <= 1.4


class FakeTime:
    """A monotonic clock that only sleeps and attempts move: each attempt takes ``attempt_seconds``."""

    def __init__(self, attempt_seconds: float) -> None:
        self.now = 100.0
        self.attempt_seconds = attempt_seconds
        self.attempts: list[tuple[float, float | None]] = []  # (time left at its start, its read timeout)
        self.deadline_at: float | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def attempt(self, context=None, **_):  # botocore before-parameter-build handler, after darkroom's own
        self.attempts.append((self.deadline_at - self.now, context.get("read_timeout")))
        self.now += self.attempt_seconds


@pytest.mark.parametrize("attempt_seconds", [0.0, 0.3, 0.9, 2.5])
def test_throttling_is_retried_with_jitter_only_while_an_attempt_fits(attempt_seconds):
    fake = FakeTime(attempt_seconds)
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    client.meta.events.register("before-parameter-build", config._set_attempt_read_timeout)  # as a runtime client
    client.meta.events.register("before-parameter-build", fake.attempt)
    resilience = Resilience(sleep=fake.sleep, random=lambda: 1.0, clock=fake.clock)  # the longest backoffs
    model = entry()
    backend = SageMakerBackend(model, client=client, breaker=CircuitBreaker(threshold=100), resilience=resilience)
    started = fake.now
    fake.deadline_at = started + 3.0
    with Stubber(client) as stub:  # throttled every time; not every queued answer need be asked for
        for _ in range(resilience.policy.max_attempts):
            stub.add_client_error("invoke_endpoint", "ThrottlingException", "slow down", http_status_code=400)
        with pytest.raises(ServiceUnavailable):
            backend.generate(model, job(deadline_seconds=3.0))
    assert fake.now - started <= 3.0
    assert 1 <= len(fake.attempts) <= resilience.policy.max_attempts
    for left, read_timeout in fake.attempts:  # each attempt started with time for it, and ends by the deadline
        assert left > config.RUNTIME_CONNECT_SECONDS
        assert read_timeout == pytest.approx(left - config.RUNTIME_CONNECT_SECONDS)
    if attempt_seconds == 0.0:
        assert len(fake.attempts) == resilience.policy.max_attempts  # fast throttles: every attempt, then 503
    if attempt_seconds == 2.5:
        assert len(fake.attempts) == 1  # no second attempt fits


def test_a_call_with_no_time_left_is_not_started():
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    breaker = CircuitBreaker(threshold=1)
    model = entry()
    with stubbed(client):  # nothing queued: a call would fail the test
        with pytest.raises(UpstreamTimeout):
            SageMakerBackend(model, client=client, breaker=breaker).generate(model, job(deadline_seconds=0.5))
    assert breaker.state == "closed"  # the request's budget was spent, not the endpoint's health
