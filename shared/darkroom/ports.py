"""What the use cases need from the world, each as the narrow interface they call.

A use case receives these (never the whole container, never an ambient lookup), so its real inputs are
its parameters. :mod:`darkroom.services` wires the AWS implementations (DynamoDB windows and usage,
S3 images); ``tests/fakes.py`` has in-memory ones for unit tests that open no socket.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from darkroom.deadline import NO_DEADLINE, RequestDeadline

if TYPE_CHECKING:  # types only: every function imports this module, and most need none of these at import
    from darkroom.catalog import Catalog, ModelEntry
    from darkroom.config import Settings
    from darkroom.inference import Backend
    from darkroom.intake import FileReader
    from darkroom.job_queue import JobQueue
    from darkroom.limits import Admission
    from darkroom.metering import UsageEvent
    from darkroom.response_store import QueuedJob, ResponseRecord, ResponseStore, StoredResponse
    from darkroom.tenancy import Tenant, TenantDirectory


class Admitter(Protocol):
    """Per-tenant rate limits and monthly budget: a request is admitted (or refused with 429) before any work;
    its estimated ``cost_usd`` is reserved at admission and settled to the billed cost."""

    def admit(self, tenant: Tenant, images: int, cost_usd: float = 0.0) -> Admission: ...

    def settle(self, admission: Admission, cost_usd: float) -> None: ...

    def refund(self, admission: Admission) -> None: ...

    def refunded_on_failure(self, admission: Admission) -> AbstractContextManager[None]: ...


class Meter(Protocol):
    """Usage, recorded exactly once per request id (True the first time)."""

    def record(self, event: UsageEvent) -> bool: ...


class ImageStorage(Protocol):
    """Where produced and carried images live, and the URLs they leave by."""

    def put(self, key: str, data: bytes, output_format: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def presign(self, key: str, output_format: str) -> str: ...

    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class RequestContext:
    """Who asked, under which request id (the usage record's exactly-once key), and by when to answer."""

    tenant: Tenant
    request_id: str
    deadline: RequestDeadline = NO_DEADLINE


@dataclass(frozen=True)
class ImageSources:
    """Where an image reference is read from: the tenant's stored files, and ``image_url`` through the
    SSRF-safe fetcher (``(url, param) -> bytes``, :func:`darkroom.fetch.fetcher_from_settings`)."""

    files: FileReader
    fetcher: Callable[[str, str], bytes]


BackendLookup = Callable[["ModelEntry"], "Backend"]  # the catalog entry's backend (routing by entry, never by name)


@dataclass(frozen=True)
class ImagePorts:
    """Everything an image-producing use case (generate, edit, the Responses image tool) calls."""

    settings: Settings  # limits and time ceilings (values, not a service)
    catalog: Catalog
    admission: Admitter
    meter: Meter
    store: ImageStorage
    backends: BackendLookup  # darkroom.inference.backend_for, built on first use (services.Services.backends)


class ResponseRecords(Protocol):
    """Stored responses (darkroom.response_store.ResponseStore): what the Responses use cases read and write."""

    def put(self, tenant_id: str, response_id: str, record: ResponseRecord, job: QueuedJob | None = None) -> None: ...

    def load(self, tenant_id: str, response_id: str) -> StoredResponse | None: ...

    def delete(self, tenant_id: str, response_id: str) -> bool: ...

    def cancel(self, tenant_id: str, response_id: str) -> StoredResponse | None: ...


class JobSender(Protocol):
    """The queue background responses wait in for the worker."""

    @property
    def enabled(self) -> bool: ...

    def send(self, tenant_id: str, response_id: str, delay_seconds: int = 0) -> None: ...


@dataclass(frozen=True)
class ResponsePorts:
    """Everything the Responses API use cases call: the image ports (the image tool, carried images, billing),
    where input references are read from, the stored responses, and the job queue."""

    images: ImagePorts
    sources: ImageSources
    records: ResponseRecords
    jobs: JobSender


@dataclass(frozen=True)
class WorkerPorts:
    """What the worker calls: the Responses ports (to answer a job), the job states' conditional writes,
    the queue (to pause a job), and the tenant directory (a job's tenant may be gone)."""

    responses: ResponsePorts
    states: ResponseStore
    queue: JobQueue
    tenants: TenantDirectory
