"""Settings read once per container from the environment, and AWS clients built once.

Handlers and use cases never read ``os.environ`` directly; they call :func:`get_settings`.
Tests that change the environment call :func:`reset` afterwards.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """Every knob darkroom reads from its environment (names are ``DARKROOM_`` + upper case)."""

    model_config = ConfigDict(frozen=True)

    tenants_table: str = "darkroom-tenants"
    rate_limits_table: str = "darkroom-rate-limits"
    usage_table: str = "darkroom-usage"
    responses_table: str = "darkroom-responses"
    idempotency_table: str = "darkroom-idempotency"
    images_bucket: str = "darkroom-images"
    # Presigned GET lifetime. Short on purpose: a URL outlives neither this nor its signing credentials.
    presign_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # How long a key lookup (and the tenant's status) is cached per container: the revocation delay.
    key_cache_seconds: float = Field(default=30, ge=0, le=60)
    # Model catalog overrides: an SSM parameter name, or JSON text / a file path.
    catalog_parameter: str | None = None
    catalog: str | None = None
    # Entries added to whichever catalog was loaded (JSON: model id -> entry): the template's model server.
    catalog_extra: str | None = None
    # Lambda's synchronous response limit is 6 MB (6,291,456 bytes) for the whole proxy response;
    # the body budget leaves room for the status line and headers.
    max_response_bytes: int = Field(default=6_000_000, ge=10_000)
    # Inference deadline: inside API Gateway's 29 s integration timeout, with room to store and answer.
    inference_timeout_seconds: float = Field(default=20, gt=0)
    # Background jobs (POST /v1/responses with background: true) run in the worker, up to its 15 minutes.
    job_inference_timeout_seconds: float = Field(default=840, gt=0, le=900)
    # The SQS queue background jobs go to (the worker function reads it); empty: background mode is off.
    jobs_queue_url: str = ""
    # Largest file a tenant can stage through POST /v1/uploads (a presigned S3 POST, not Lambda's 6 MB).
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, le=5 * 1024**3)
    # Image intake bounds per request (OpenAI allows 16 edit inputs; a deployment may allow fewer).
    max_input_images: int = Field(default=16, ge=1, le=16)
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_input_pixels: int = Field(default=40_000_000, ge=1024, le=64_000_000)
    # Limits of a tenant created without explicit ones (template parameters Default*; darkroom.tenancy.Limits).
    default_images_per_minute: int = Field(default=20, ge=1)
    default_images_per_day: int = Field(default=500, ge=1)
    default_requests_per_minute: int = Field(default=60, ge=1)
    # Content Credentials (darkroom.content_credentials): a signed C2PA manifest and an XMP DigitalSourceType in every
    # image. On unless the deployment marks its images another way. The key: an asymmetric KMS key (ECC_NIST_P256,
    # SIGN_VERIFY) or, for the local stack, a PEM file; the certificate chain (leaf first, PEM): an SSM parameter's
    # value, or a file.
    content_credentials: bool = True
    content_credentials_kms_key_id: str = ""
    content_credentials_key_file: str = ""
    content_credentials_cert_chain_parameter: str = ""
    content_credentials_cert_chain_file: str = ""
    # Opt-in: the manifest names the tenant and the prompt (off: nothing in it identifies who asked, or for what).
    content_credentials_identify: bool = False
    # FOR TESTS ONLY, MUST STAY EMPTY IN EVERY DEPLOYMENT: comma-separated "host:port" origins that the
    # image URL fetcher (darkroom.fetch) exempts from its port and SSRF address checks, so tests can
    # serve images from loopback. Anything listed here is reachable by every tenant.
    fetch_test_allowlist: str = ""


def _from_environment() -> Settings:
    prefix = "DARKROOM_"
    values = {
        name: os.environ[prefix + name.upper()]
        for name in Settings.model_fields
        if os.environ.get(prefix + name.upper())
    }
    return Settings.model_validate(values)


@cache
def get_settings() -> Settings:
    """The settings of this container, validated on first use."""
    return _from_environment()


_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=10)

# A *runtime* client (SageMaker, Bedrock: the model calls) makes one attempt per call, and darkroom's resilience
# wrapper retries inside the call's deadline. botocore's ``standard`` mode would retry throttling, 5xx and
# timeouts on its own, each attempt with the client's full ``read_timeout``; with ``max_attempts: 3`` (three
# *retries*: four attempts, botocore.config.Config) one call could last four times the endpoint's timeout, far
# past the request's deadline. ``total_max_attempts: 1``: "a value of 1 indicates that no requests will be
# retried" (botocore.config.Config). Each attempt's read timeout is what remains of the call's deadline less
# RUNTIME_CONNECT_SECONDS (:func:`attempt_read_timeout`), set in botocore's request context
# (``context["read_timeout"]``, read by ``URLLib3Session.send``; boto/botocore#3770, "Add support for per-API
# invocation read timeouts") by a ``before-parameter-build`` handler; ``tests/adapters/test_aws_deadline.py`` pins
# it against a real socket.
RUNTIME_CONNECT_SECONDS = 1.0
_RUNTIME_CONFIG = Config(connect_timeout=RUNTIME_CONNECT_SECONDS, retries={"mode": "standard", "total_max_attempts": 1})
_attempt_read_timeout: ContextVar[float | None] = ContextVar("darkroom_attempt_read_timeout", default=None)


_session_lock = threading.Lock()  # boto3 sessions are not thread-safe for creating clients
_clients: dict[tuple[str, str | None, bool, Config | None], Any] = {}
_clients_lock = threading.Lock()


@cache
def _session() -> boto3.session.Session:
    """One session per process: botocore loads endpoint rules and retry data once, not once per client."""
    return boto3.session.Session()


def client(service: str, extra: Config | None = None, *, region: str | None = None, runtime: bool = False) -> Any:
    """One boto3 client per (service, region, kind) per container, the container's only client cache (honours
    ``AWS_ENDPOINT_URL`` for local stacks). ``runtime``: a model call's client, one attempt per call with each
    attempt's read timeout from :func:`attempt_read_timeout`. ``extra`` is merged into the configuration and is
    part of the key by identity (``Config`` has no equality): pass the same object to share the client.

    ``Any``: boto3 builds each service's client class at run time; boto3-stubs types one per literal name."""
    key = (service, region, runtime, extra)
    with _clients_lock:
        built = _clients.get(key)
        if built is None:
            built = _clients[key] = _build(service, extra, region, runtime)
        return built


def _build(service: str, extra: Config | None, region: str | None, runtime: bool) -> Any:
    settings = _BOTO_CONFIG.merge(_RUNTIME_CONFIG) if runtime else _BOTO_CONFIG
    for more in (extra, Config(region_name=region) if region else None):
        settings = settings.merge(more) if more is not None else settings
    with _session_lock:
        # boto3-stubs declares client() per literal service name; darkroom names services in variables.
        built = _session().client(service, config=settings)  # type: ignore[call-overload]
    if runtime:
        built.meta.events.register("before-parameter-build", _set_attempt_read_timeout)
    return built


@contextmanager
def attempt_read_timeout(seconds: float) -> Iterator[None]:
    """Inside the block, a runtime client's calls wait at most ``seconds`` for the answer (one attempt's read)."""
    token = _attempt_read_timeout.set(seconds)
    try:
        yield
    finally:
        _attempt_read_timeout.reset(token)


def _set_attempt_read_timeout(context: dict[str, Any] | None = None, **_: Any) -> None:
    """botocore ``before-parameter-build`` handler: this attempt's read timeout into the request context."""
    seconds = _attempt_read_timeout.get()
    if seconds is not None and context is not None:
        context["read_timeout"] = seconds


def reset_clients() -> None:
    """Forget every client built (the next call builds it again, e.g. for a new ``AWS_ENDPOINT_URL``)."""
    with _clients_lock:
        _clients.clear()


# Lambda sets AWS_LAMBDA_FUNCTION_MEMORY_SIZE (the function's MemorySize, in MB) in every function's
# environment; elsewhere (tests, scripts) the template's Globals default is assumed.
DEFAULT_FUNCTION_MEMORY_MB = 1024


@cache
def function_memory_mb() -> int:
    """The memory this function runs with, in MB (what :class:`darkroom.intake.DecodeBudget` is sized from)."""
    value = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_FUNCTION_MEMORY_MB


def reset() -> None:
    """Forget cached settings and clients (tests and the local stack change the environment)."""
    get_settings.cache_clear()
    reset_clients()
    function_memory_mb.cache_clear()
