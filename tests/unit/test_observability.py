"""darkroom's EMF metrics: names, dimensions from closed sets only, and where upstream calls are counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from darkroom import observability
from darkroom.api.errors import InvalidRequest, ServiceUnavailable, UpstreamTimeout
from darkroom.inference.aws_runtime import Outcome, guarded
from darkroom.inference.resilience import CircuitBreaker, Reply, Resilience, RetryPolicy
from emf_capture import ALLOWED_DIMENSIONS, emitted, named


def test_a_point_with_dimensions_is_its_own_document_with_a_total_for_alarms(capsys):
    capsys.readouterr()
    observability.upstream_call("sagemaker", "upstream_timeout")
    points = emitted(capsys.readouterr().out)
    calls = named(points, observability.UPSTREAM_CALLS)
    errors = named(points, observability.UPSTREAM_ERRORS)
    assert [p.dimensions for p in calls] == [{"Backend": "sagemaker", "service": "darkroom"}, {"service": "darkroom"}]
    assert [p.dimensions for p in errors] == [
        {"Backend": "sagemaker", "Code": "upstream_timeout", "service": "darkroom"},
        {"service": "darkroom"},
    ]
    assert {p.namespace for p in points} == {"darkroom"}
    assert all(p.values == [1.0] for p in points)


def test_values_outside_a_closed_set_are_other_and_unknown_dimensions_are_a_bug(capsys):
    capsys.readouterr()
    observability.inference_latency("tnt_0123456789abcdef", 12.0)  # never a value that came from a request
    observability.upstream_call("openai", "Some upstream's own words")
    points = emitted(capsys.readouterr().out)
    assert named(points, observability.INFERENCE_LATENCY)[0].dimensions["Backend"] == "other"
    assert named(points, observability.UPSTREAM_ERRORS)[0].dimensions["Code"] == "other"
    with pytest.raises(KeyError):
        observability.record("RateLimited", "Count", 1, TenantId="tnt_0123456789abcdef")


def test_metrics_disabled_writes_nothing(capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # what the local stack sets
    capsys.readouterr()
    observability.rate_limited("images")
    assert not emitted(capsys.readouterr().out)


def _resilience() -> Resilience:
    return Resilience(RetryPolicy(max_attempts=1), sleep=lambda _: None, random=lambda: 0.0)


def test_an_openai_call_counts_once_and_its_5xx_is_an_upstream_error(capsys):
    resilience = _resilience()
    breaker = CircuitBreaker(threshold=1)
    capsys.readouterr()
    assert (
        resilience.run(
            label="m",
            breaker=breaker,
            deadline=resilience.deadline(5),
            send=lambda _: Reply(200, {}, b"ok"),
            handle=lambda reply: reply.body,
        )
        == b"ok"
    )
    with pytest.raises(ServiceUnavailable):
        resilience.run(
            label="m",
            breaker=breaker,
            deadline=resilience.deadline(5),
            send=lambda _: Reply(503, {}, b""),
            handle=lambda reply: reply.body,
        )
    with pytest.raises(ServiceUnavailable):  # the breaker is open now: a fast failure, still an upstream error
        resilience.run(
            label="m",
            breaker=breaker,
            deadline=resilience.deadline(5),
            send=lambda _: Reply(200, {}, b""),
            handle=lambda reply: reply.body,
        )
    points = emitted(capsys.readouterr().out)
    calls = [p for p in named(points, observability.UPSTREAM_CALLS) if "Backend" in p.dimensions]
    assert [p.dimensions["Backend"] for p in calls] == ["openai"] * 3
    codes = [p.dimensions["Code"] for p in named(points, observability.UPSTREAM_ERRORS) if "Code" in p.dimensions]
    assert codes == ["service_unavailable", "circuit_open"]


def test_a_refusal_the_client_caused_is_a_call_but_no_upstream_error(capsys):
    resilience = _resilience()

    def refuse(reply):
        raise InvalidRequest("refused", code="content_policy_violation")

    capsys.readouterr()
    with pytest.raises(InvalidRequest):
        resilience.run(
            label="m",
            breaker=CircuitBreaker(),
            deadline=resilience.deadline(5),
            send=lambda _: Reply(400, {}, b""),
            handle=refuse,
            backend="openai",
        )
    points = emitted(capsys.readouterr().out)
    assert named(points, observability.UPSTREAM_CALLS) and not named(points, observability.UPSTREAM_ERRORS)


def test_aws_backends_count_calls_and_errors_by_backend(capsys):
    def times_out():
        raise Outcome(UpstreamTimeout("late"), unhealthy=True)

    capsys.readouterr()
    assert guarded(CircuitBreaker(), "my-model", "generate", lambda: "ok", backend="bedrock") == "ok"
    with pytest.raises(UpstreamTimeout):
        guarded(CircuitBreaker(), "my-model", "generate", times_out, backend="sagemaker")
    points = emitted(capsys.readouterr().out)
    calls = [p.dimensions["Backend"] for p in named(points, observability.UPSTREAM_CALLS) if "Backend" in p.dimensions]
    assert calls == ["bedrock", "sagemaker"]
    (error,) = [p for p in named(points, observability.UPSTREAM_ERRORS) if "Code" in p.dimensions]
    assert error.dimensions == {"Backend": "sagemaker", "Code": "upstream_timeout", "service": "darkroom"}
    assert "my-model" not in json.dumps([p.dimensions for p in points])


def test_every_dimension_name_is_allowed_and_every_name_is_listed(capsys):
    capsys.readouterr()
    observability.rate_limited("requests")
    observability.inference_latency("local", 3.0)
    observability.upstream_call("openai", "upstream_error")
    points = emitted(capsys.readouterr().out)
    assert {p.name for p in points} <= observability.METRIC_NAMES
    assert set().union(*(p.dimensions for p in points)) <= ALLOWED_DIMENSIONS


@pytest.mark.parametrize(
    ("environment", "traced"),
    [
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),  # in Lambda (the template's Tracing: Active)
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),  # sam local invoke
        ({}, False),  # tests, the local stack, scripts
    ],
)
def test_tracing_is_on_where_powertools_would_trace(monkeypatch, environment, traced):
    for name in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert observability.tracing_enabled() is traced


def test_with_tracing_off_a_handler_is_not_wrapped_and_no_tracer_is_built(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")

    def handler(event, context):
        return {"ok": event}

    assert observability.capture_handler(handler) is handler
    probe = (
        "import sys; from darkroom import observability; observability.capture_handler(lambda e, c: e); "
        "print('aws_xray_sdk' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "LAMBDA_TASK_ROOT"} | {"POWERTOOLS_TRACE_DISABLED": "true"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the X-Ray SDK's recorder (two clients) is never imported
