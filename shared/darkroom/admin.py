"""The operator's use cases: tenants, their limits and budgets, API keys, and the billing export.

The admin API (functions/admin, IAM-authenticated) and the ``darkroom`` CLI both call these functions, so
they check, default and answer alike: the same JSON for a tenant or a key, the same 400s and 404s in the
OpenAI envelope. Nothing here logs or returns a key's secret except :func:`issue_key`, once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from darkroom import budgets
from darkroom.api.errors import InvalidRequest, NotFound
from darkroom.api.usage import usage_day
from darkroom.metering import UsageMeter, usage_window
from darkroom.tenancy import ACTIVE, ApiKey, Limits, Tenant, TenantDirectory, TenantStatus

MAX_PAGE = 100  # tenants per page of the admin API's listing
EXPORT_COLUMNS = (
    "tenant_id",
    "date",
    "model",
    "requests",
    "images",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)


@dataclass(frozen=True)
class LimitChanges:
    """Limits to set; None leaves one as it is (or, for a new tenant, at the stack's default)."""

    images_per_minute: int | None = None
    images_per_day: int | None = None
    requests_per_minute: int | None = None

    def given(self) -> dict[str, int]:
        return {name: value for name, value in vars(self).items() if value is not None}


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    """A tenant as the admin API and ``darkroom ... --json`` show it."""
    limits = tenant.limits
    budget = limits.monthly_budget_micro_usd
    return {
        "object": "tenant",
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "status": tenant.status,
        "created_at": tenant.created_at,
        "images_per_minute": limits.images_per_minute,
        "images_per_day": limits.images_per_day,
        "requests_per_minute": limits.requests_per_minute,
        "monthly_budget_usd": None if budget is None else budget / budgets.MICRO,
        "budget_soft_percent": None if budget is None else limits.budget_soft_percent,
    }


def key_json(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    """A key's record (never its secret, except ``secret`` when it has just been issued); an active key past its
    expiry shows as ``expired``."""
    shown = {
        "object": "api_key",
        "key_id": key.key_id,
        "tenant_id": key.tenant_id,
        "prefix": key.prefix,
        "status": "expired" if key.status == ACTIVE and not key.usable() else key.status,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
    }
    return shown | ({"key": secret} if secret else {})


def create_tenant(directory: TenantDirectory, name: str, limits: LimitChanges) -> Tenant:
    """A new active tenant; limits not given are the stack's defaults (the Default* parameters)."""
    if not name.strip():
        raise InvalidRequest("A tenant needs a name.", param="name", code="invalid_value")
    _check_limits(limits.given())
    defaults = vars(directory.default_limits) | limits.given()
    return directory.create_tenant(name.strip(), Limits(**defaults))


def get_tenant(directory: TenantDirectory, tenant_id: str) -> Tenant:
    tenant = directory.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id}.", param="tenant_id")
    return tenant


def list_tenants(directory: TenantDirectory, limit: int, after: str | None) -> tuple[list[Tenant], str | None]:
    """A page of up to ``limit`` tenants after ``after``, and the ``after`` of the next page (None: the last)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"'limit' is from 1 to {MAX_PAGE}.", param="limit", code="invalid_value")
    if after is not None and directory.get_tenant(after) is None:
        raise InvalidRequest("'after' is the last tenant_id of a previous page.", param="after", code="invalid_value")
    return directory.tenants_page(limit, after)


def all_tenants(directory: TenantDirectory) -> list[Tenant]:
    """Every tenant, oldest first (the CLI's listing and the all-tenants export)."""
    return directory.list_tenants()


def set_status(directory: TenantDirectory, tenant_id: str, status: TenantStatus) -> Tenant:
    return directory.set_status(tenant_id, status)


def set_limits(directory: TenantDirectory, tenant_id: str, limits: LimitChanges) -> Tenant:
    changes = limits.given()
    if not changes:
        raise InvalidRequest(
            "Give at least one of images_per_minute, images_per_day, requests_per_minute.",
            param="images_per_minute",
            code="missing_required_parameter",
        )
    _check_limits(changes)
    return directory.set_limits(tenant_id, **changes)


def set_budget(directory: TenantDirectory, tenant_id: str, monthly_usd: float | None, soft_percent: int = 80) -> Tenant:
    """A monthly budget in USD (None: no budget); past ``soft_percent`` of it the BudgetSoftLimit alarm fires."""
    if monthly_usd is None:
        return directory.set_budget(tenant_id, None)
    budget = budgets.micro_usd(monthly_usd)
    if budget < 1:
        raise InvalidRequest("'monthly_usd' is above 0.", param="monthly_usd", code="invalid_value")
    if not 1 <= soft_percent <= 100:
        raise InvalidRequest("'soft_percent' is from 1 to 100.", param="soft_percent", code="invalid_value")
    return directory.set_budget(tenant_id, budget, soft_percent)


def issue_key(directory: TenantDirectory, tenant_id: str, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key for the tenant, refused from ``expires_at`` on (None: until revoked); the secret is returned
    here once and never stored."""
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            raise InvalidRequest("'expires_at' must be in the future.", param="expires_at", code="invalid_value")
    return directory.issue_key(tenant_id, expires_at=expires_at)


def list_keys(directory: TenantDirectory, tenant_id: str) -> list[ApiKey]:
    get_tenant(directory, tenant_id)  # an unknown tenant is a 404, not an empty list
    return sorted(directory.list_keys(tenant_id), key=lambda k: (k.created_at, k.key_id))


def revoke_key(directory: TenantDirectory, key_id: str) -> ApiKey:
    return directory.revoke_key(key_id)


def usage_export(
    directory: TenantDirectory, meter: UsageMeter, tenant_id: str | None, start_date: str | None, end_date: str | None
) -> list[dict[str, Any]]:
    """Usage by tenant, day (UTC) and model over a date range: one tenant's, or every tenant's (None).

    The rows are ``GET /v1/usage``'s (``UsageMeter.by_day_and_model``) with the tenant's id: the billing export.
    """
    start, end = usage_window(start_date, end_date)
    tenants = [get_tenant(directory, tenant_id)] if tenant_id else all_tenants(directory)
    return [row for tenant in tenants for row in _usage_rows(meter, tenant.tenant_id, start, end)]


def export_csv(rows: list[dict[str, Any]]) -> str:
    """The export as CSV: a header row, then one row per tenant, day and model; costs to the micro-dollar."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        writer.writerow([*(row[c] for c in EXPORT_COLUMNS[:-1]), f"{row['cost_usd']:.6f}"])
    return out.getvalue()


def _usage_rows(meter: UsageMeter, tenant_id: str, start: date, end: date) -> Iterator[dict[str, Any]]:
    for usage in meter.by_day_and_model(tenant_id, start, end):
        yield {"tenant_id": tenant_id, **usage_day(usage).model_dump()}


def _check_limits(changes: dict[str, int]) -> None:
    for name, value in changes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"'{name}' is a whole number of at least 1.", param=name, code="invalid_value")
