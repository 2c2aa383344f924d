"""In-memory implementations of darkroom.ports, for unit tests of the use cases that open no socket.

Each keeps what a test wants to look at (stored objects, metered events, admitted and refunded images) and
enforces what its AWS counterpart enforces that a use case relies on: the meter is exactly-once per request
id, the admitter refuses past a per-minute image limit with the same 429 the DynamoDB limiter raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from darkroom.api.errors import NotFound, RateLimited, refunds_admission
from darkroom.catalog import BUNDLED_CATALOG, Catalog, parse_catalog
from darkroom.config import Settings
from darkroom.inference import backend_for
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.ports import ImagePorts, ImageSources, ResponsePorts
from darkroom.response_store import (
    CANCELLED,
    COMPLETED,
    IN_PROGRESS,
    QUEUED,
    QueuedJob,
    ResponseRecord,
    StoredResponse,
)
from darkroom.tenancy import Tenant


@dataclass
class MemoryStore:
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # key -> (bytes, format)

    def put(self, key: str, data: bytes, output_format: str) -> None:
        self.objects[key] = (data, output_format)

    def get(self, key: str) -> bytes:
        return self.objects[key][0]

    def presign(self, key: str, output_format: str) -> str:
        return f"https://images.test/{key}?signature=fake"

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


@dataclass
class MemoryMeter:
    events: dict[str, UsageEvent] = field(default_factory=dict)  # request id -> event

    def record(self, event: UsageEvent) -> bool:
        first = event.request_id not in self.events
        self.events.setdefault(event.request_id, event)
        return first


@dataclass
class MemoryAdmitter:
    """The tenant's per-minute image window only; ``used`` is what is counted now."""

    used: int = 0
    refunds: int = 0
    reserved_usd: list[float] = field(default_factory=list)  # each admission's estimated cost
    settled_usd: list[float] = field(default_factory=list)  # each settlement's billed cost

    def admit(self, tenant: Tenant, images: int, cost_usd: float = 0.0) -> Admission:
        limit = tenant.limits.images_per_minute
        if self.used + images > limit:
            raise RateLimited("Rate limit reached for images per minute.", headers={"retry-after": "60"})
        self.used += images
        self.reserved_usd.append(cost_usd)
        return Admission(states=(), now=0.0, taken=(("images", images),))

    def settle(self, admission: Admission, cost_usd: float) -> None:
        self.settled_usd.append(cost_usd)

    def refund(self, admission: Admission) -> None:
        self.refunds += 1
        self.used -= sum(amount for _, amount in admission.taken)

    @contextmanager
    def refunded_on_failure(self, admission: Admission) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            if refunds_admission(exc):  # darkroom.limits' rule
                self.refund(admission)
            raise


def bundled_catalog() -> Catalog:
    return parse_catalog(BUNDLED_CATALOG.read_text(encoding="utf-8"))


def image_ports(settings: Settings | None = None, **overrides: object) -> ImagePorts:
    """Image ports on the bundled catalog (local models, rendered in process) and in-memory everything."""
    fields: dict[str, object] = {
        "settings": settings or Settings(),
        "catalog": bundled_catalog(),
        "admission": MemoryAdmitter(),
        "meter": MemoryMeter(),
        "store": MemoryStore(),
        "backends": backend_for,
    }
    return ImagePorts(**{**fields, **overrides})  # tests pass the fakes they build


@dataclass
class MemoryRecords:
    """Stored responses by (tenant, id); ``put`` refuses an id twice, as the table's condition does."""

    items: dict[tuple[str, str], StoredResponse] = field(default_factory=dict)

    def put(self, tenant_id: str, response_id: str, record: ResponseRecord, job: QueuedJob | None = None) -> None:
        assert (tenant_id, response_id) not in self.items, "attribute_not_exists(pk)"
        status = QUEUED if job is not None else COMPLETED
        self.items[tenant_id, response_id] = StoredResponse(record=record, status=status, job=job)

    def load(self, tenant_id: str, response_id: str) -> StoredResponse | None:
        return self.items.get((tenant_id, response_id))

    def delete(self, tenant_id: str, response_id: str) -> bool:
        return self.items.pop((tenant_id, response_id), None) is not None

    def cancel(self, tenant_id: str, response_id: str) -> StoredResponse | None:
        found = self.items.get((tenant_id, response_id))
        if found is None or found.job is None or found.status not in (QUEUED, IN_PROGRESS):
            return None
        self.items[tenant_id, response_id] = replace(found, status=CANCELLED)
        return found


@dataclass
class MemoryJobs:
    enabled: bool = True
    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, tenant_id: str, response_id: str, delay_seconds: int = 0) -> None:
        self.sent.append((tenant_id, response_id))


class NoFiles:
    """A tenant with no stored files: every file_id is not found."""

    def read(self, tenant_id: str, file_id: str, *, param: str) -> bytes:
        raise NotFound(f"No such file: '{file_id[:40]}'.", param=param, code="not_found")


def no_fetching(url: str, param: str) -> bytes:
    raise AssertionError("a unit test never fetches a URL")


def response_ports(images: ImagePorts | None = None, **overrides: object) -> ResponsePorts:
    fields: dict[str, object] = {
        "images": images or image_ports(),
        "sources": ImageSources(NoFiles(), no_fetching),
        "records": MemoryRecords(),
        "jobs": MemoryJobs(),
    }
    return ResponsePorts(**{**fields, **overrides})  # tests pass the fakes they build
