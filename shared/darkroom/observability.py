"""The Powertools logger and metrics shared by every function (one of each per container), and its tracer
where tracing is on (:func:`capture_handler`).

Never log request bodies, prompts, image bytes, base64, API keys or presigned URLs: log ids and sizes.

Metrics are CloudWatch EMF (namespace ``POWERTOOLS_METRICS_NAMESPACE``, ``darkroom``; every metric also has
Powertools' ``service`` dimension). Metrics without dimensions of their own go on the shared ``metrics`` and
are flushed once per invocation by ``@metrics.log_metrics``. A metric with dimensions is its own EMF document
(:func:`record`), because EMF applies one dimension set to every metric of a document. Dimension values are
closed sets (a backend name, a window, darkroom's own error codes): never a tenant, key, request or response
id, a prompt, or anything a client chose. template.yaml's dashboard and alarms use these names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

logger = Logger()
metrics = Metrics()

Handler = TypeVar("Handler", bound=Callable[..., Any])


def tracing_enabled() -> bool:
    """Powertools' own rule (``Tracer._is_tracer_disabled``): in Lambda, outside SAM local and Chalice, and not
    switched off by ``POWERTOOLS_TRACE_DISABLED``."""
    if resolve_truthy_env_var_choice(env=os.getenv("POWERTOOLS_TRACE_DISABLED", "false")):
        return False
    in_emulator = os.getenv("AWS_SAM_LOCAL") or os.getenv("AWS_CHALICE_CLI_MODE")
    return bool(os.getenv("LAMBDA_TASK_ROOT")) and not in_emulator


def capture_handler(handler: Handler) -> Handler:
    """``handler`` traced by the Powertools Tracer (one X-Ray subsegment, boto3 and httpx calls patched) when
    tracing is on; ``handler`` itself when it is off.

    Powertools builds the X-Ray SDK's recorder whenever a ``Tracer`` is made, disabled or not, and that
    recorder builds two X-Ray clients at import: about 0.45 s of CPU, a third of a bare handler's cold start
    (docs/benchmarks.md, section 1). So no ``Tracer`` exists unless tracing is on. When it is on (the
    template's ``Tracing: Active``), it is made here, at import, where SnapStart's snapshot keeps it.
    """
    if not tracing_enabled():
        return handler
    from aws_lambda_powertools import Tracer

    return cast("Handler", Tracer().capture_lambda_handler(handler, capture_response=False))


NAMESPACE = "darkroom"  # the template's POWERTOOLS_METRICS_NAMESPACE

# Counts on the shared metrics (dimension: service only)
IMAGES_GENERATED = "ImagesGenerated"  # images delivered by generate (the Images API and the Responses image tool)
IMAGES_EDITED = "ImagesEdited"  # images delivered by edit
B64_OMITTED = "B64Omitted"  # responses that left b64_json out to stay under Lambda's 6 MB
JOBS_COMPLETED = "JobsCompleted"
JOBS_FAILED = "JobsFailed"
JOB_SECONDS = "JobSeconds"
IDEMPOTENT_REPLAYS = "IdempotentReplays"
# With dimensions of their own (record())
INFERENCE_LATENCY = "InferenceLatency"  # ms of one backend call producing images; Backend
RATE_LIMITED = "RateLimited"  # requests refused with 429; Window (requests | images)
BUDGET_SOFT_LIMIT = "BudgetSoftLimit"  # a tenant's month crossed its budget's soft threshold; service only
UPSTREAM_CALLS = "UpstreamCalls"  # calls to a remote backend; Backend, and service only (for the alarm)
UPSTREAM_ERRORS = "UpstreamErrors"  # of those, the ones failed (5xx to the client); Backend and Code, and service only

METRIC_NAMES = frozenset(
    {
        IMAGES_GENERATED,
        IMAGES_EDITED,
        B64_OMITTED,
        JOBS_COMPLETED,
        JOBS_FAILED,
        JOB_SECONDS,
        IDEMPOTENT_REPLAYS,
        INFERENCE_LATENCY,
        RATE_LIMITED,
        BUDGET_SOFT_LIMIT,
        UPSTREAM_CALLS,
        UPSTREAM_ERRORS,
    }
)

BACKENDS = frozenset({"local", "openai", "sagemaker", "bedrock"})  # darkroom.catalog's backend names
WINDOWS = frozenset({"requests", "images"})  # darkroom.limits.Window.name
# What a remote call can end with, as the client sees it (darkroom.api.errors codes), plus a breaker's fast fail.
UPSTREAM_CODES = frozenset(
    {
        "service_unavailable",
        "upstream_timeout",
        "upstream_error",
        "upstream_invalid_response",
        "upstream_unreachable",
        "upstream_auth",
        "circuit_open",
        "internal",
    }
)
_DIMENSIONS = {"Backend": BACKENDS, "Window": WINDOWS, "Code": UPSTREAM_CODES}
OTHER = "other"  # a value outside its closed set (a bug, or a new name nobody added here)


def count(name: str, value: float = 1) -> None:
    """Add to a count on the shared metrics (flushed with the invocation's other metrics)."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def record(name: str, unit: MetricUnit, value: float, *, aggregate: bool = False, **dimensions: str) -> None:
    """One data point with its own ``dimensions``, written now as an EMF document of its own.

    ``aggregate``: the same point also counts without those dimensions (``service`` only), so one alarm can
    watch the total. Values outside a dimension's closed set are written as ``other``: a metric never carries
    a value from a request.
    """
    point = EphemeralMetrics(namespace=metrics.namespace or NAMESPACE)
    point.add_metric(name=name, unit=unit, value=value)
    for dimension, value_ in dimensions.items():
        allowed = _DIMENSIONS[dimension]  # an unknown dimension name is a bug: KeyError in the tests
        point.add_dimension(name=dimension, value=value_ if value_ in allowed else OTHER)
    if aggregate:
        point.add_dimensions(service=point.service or NAMESPACE)
    point.flush_metrics()


def inference_latency(backend: str, milliseconds: float) -> None:
    record(INFERENCE_LATENCY, MetricUnit.Milliseconds, milliseconds, Backend=backend)


def rate_limited(window: str) -> None:
    record(RATE_LIMITED, MetricUnit.Count, 1, Window=window)


def budget_soft_limit() -> None:
    """A tenant's reserved spend this month crossed its soft threshold (once per month; the tenant is logged)."""
    record(BUDGET_SOFT_LIMIT, MetricUnit.Count, 1)  # the service dimension only, as the alarm reads it


def upstream_call(backend: str, error_code: str | None = None) -> None:
    """One call to a remote backend; ``error_code`` when it failed on the upstream's side (the client got a 5xx)."""
    record(UPSTREAM_CALLS, MetricUnit.Count, 1, aggregate=True, Backend=backend)
    if error_code is not None:
        upstream_error(backend, error_code)


def upstream_error(backend: str, error_code: str) -> None:
    """A failure of a call already counted (a SageMaker asynchronous job's answer: its submission was the call)."""
    record(UPSTREAM_ERRORS, MetricUnit.Count, 1, aggregate=True, Backend=backend, Code=error_code)
