"""What one handler invocation writes for CloudWatch: EMF metrics (names, dimensions, never a tenant) and log
lines with a correlation id, including the background worker's."""

from __future__ import annotations

import json

import pytest

from darkroom import observability
from darkroom.observability import metrics
from emf_capture import ALLOWED_DIMENSIONS, emitted, named, powertools_log_stream
from lambda_harness import EVENT_KEY, WorkerContext, invoke, load_event, load_handler, sqs_job_event


@pytest.fixture
def fresh(capsys):
    """Nothing left over: the shared Metrics keeps what code outside a handler added until the next flush."""
    metrics.clear_metrics()
    capsys.readouterr()


def _forbidden(tenant, svc, *events: dict) -> set[str]:
    keys = {key.key_id for key in svc.directory.list_keys(tenant.tenant_id)}
    return {
        tenant.tenant_id,
        tenant.name,
        EVENT_KEY,
        *keys,
        *(event["requestContext"]["requestId"] for event in events),
    }


def _assert_no_request_values(points, forbidden: set[str]) -> None:
    for point in points:
        assert set(point.dimensions) <= ALLOWED_DIMENSIONS, point
        assert not set(point.dimensions.values()) & forbidden, point


def test_generate_emits_images_generated_and_inference_latency_by_backend(tenant, svc, fresh, capsys):
    event = load_event("generate")
    status, _, body = invoke("generate", event)
    assert status == 200, body
    points = emitted(capsys.readouterr().out)
    (generated,) = named(points, observability.IMAGES_GENERATED)
    assert generated.namespace == "darkroom" and generated.dimensions == {"service": "darkroom"}
    assert sum(generated.values) == len(body["data"])
    (latency,) = named(points, observability.INFERENCE_LATENCY)
    assert latency.dimensions == {"Backend": "local", "service": "darkroom"} and latency.values[0] >= 0
    assert not named(points, observability.IMAGES_EDITED)
    _assert_no_request_values(points, _forbidden(tenant, svc, event))


def test_edit_emits_images_edited(tenant, svc, fresh, capsys):
    event = load_event("edit")
    status, _, body = invoke("edit", event)
    assert status == 200, body
    points = emitted(capsys.readouterr().out)
    (edited,) = named(points, observability.IMAGES_EDITED)
    assert edited.dimensions == {"service": "darkroom"} and sum(edited.values) == len(body["data"])
    assert named(points, observability.INFERENCE_LATENCY)[0].dimensions["Backend"] == "local"
    _assert_no_request_values(points, _forbidden(tenant, svc, event))


def test_a_429_emits_rate_limited_by_window(tenant, svc, fresh, capsys):
    svc.directory.set_limits(tenant.tenant_id, requests_per_minute=1)
    svc.authenticator._cache.clear()  # what key_cache_seconds would do on its own
    first, second = load_event("generate"), load_event("generate")
    assert invoke("generate", first)[0] == 200
    status, _, body = invoke("generate", second)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    points = emitted(capsys.readouterr().out)
    (limited,) = named(points, observability.RATE_LIMITED)
    assert limited.dimensions == {"Window": "requests", "service": "darkroom"} and limited.values == [1.0]
    _assert_no_request_values(points, _forbidden(tenant, svc, first, second))


@pytest.fixture
def log_lines():
    """darkroom's Powertools log lines, as formatted (JSON), at INFO."""
    with powertools_log_stream() as stream:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_api_log_lines_carry_the_request_id_as_correlation_id(tenant, log_lines):
    event = load_event("generate")
    assert invoke("generate", event)[0] == 200
    lines = log_lines()
    assert any(line["message"] == "images produced" for line in lines)
    assert {line.get("correlation_id") for line in lines} == {event["requestContext"]["requestId"]}


def test_worker_log_lines_carry_the_accepting_requests_id(svc, tenant, log_lines, fresh, capsys):
    accept = load_event("responses-create")
    accept["body"] = json.dumps(
        {
            "model": "local-image",
            "input": "a lighthouse",
            "background": True,
            "tools": [{"type": "image_generation", "size": "256x256"}],
        }
    )
    status, _, body = invoke("responses", accept)
    assert status == 200 and body["status"] == "queued", body
    event, _ = sqs_job_event(svc)
    assert load_handler("worker")(event, WorkerContext()) == {"batchItemFailures": []}
    worker_lines = [line for line in log_lines() if line.get("response_id") == body["id"]]
    assert any(line["message"] == "job completed" for line in worker_lines)
    assert {line["correlation_id"] for line in worker_lines} == {accept["requestContext"]["requestId"]}
    points = emitted(capsys.readouterr().out)
    assert named(points, observability.JOBS_COMPLETED) and named(points, observability.IMAGES_GENERATED)
    _assert_no_request_values(points, _forbidden(tenant, svc, accept) | {body["id"]})
