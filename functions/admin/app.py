"""/admin/v1: the operator's API (tenants, limits, budgets, keys, the billing export), IAM-authenticated.

Thin handlers over :mod:`darkroom.admin`, the use cases the ``darkroom`` CLI runs too; the entry point
(:func:`darkroom.api.resolver.admin_entrypoint`) checks the IAM caller and writes the audit line.
"""

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from darkroom import admin
from darkroom.admin import LimitChanges
from darkroom.api.admin import (
    BudgetUpdate,
    KeyCreate,
    KeyList,
    KeyObject,
    LimitsUpdate,
    TenantCreate,
    TenantList,
    TenantObject,
    UsageExport,
    responses,
)
from darkroom.api.resolver import admin_entrypoint, audit, build_resolver
from darkroom.services import services
from darkroom.snapstart import prime

app = build_resolver()
TENANT = "/admin/v1/tenants/<tenant_id>"


@app.post("/admin/v1/tenants", summary="Create a tenant", tags=["tenants"], responses=responses(TenantObject, 400))
def create_tenant(body: Annotated[TenantCreate, Body()]) -> dict[str, Any]:
    directory = services().directory
    limits = LimitChanges(body.images_per_minute, body.images_per_day, body.requests_per_minute)
    tenant = admin.create_tenant(directory, body.name, limits)
    audit(app, tenant.tenant_id)
    if body.monthly_budget_usd is not None:
        tenant = admin.set_budget(directory, tenant.tenant_id, body.monthly_budget_usd, body.budget_soft_percent)
    return admin.tenant_json(tenant)


@app.get(
    "/admin/v1/tenants",
    summary="List tenants, a page at a time",
    tags=["tenants"],
    responses=responses(TenantList, 400),
)
def list_tenants(
    limit: Annotated[int, Query(ge=1, le=admin.MAX_PAGE)] = 20,
    after: Annotated[str | None, Query(max_length=64, description="The last tenant_id of the previous page")] = None,
) -> dict[str, Any]:
    tenants, following = admin.list_tenants(services().directory, limit, after)
    data = [admin.tenant_json(t) for t in tenants]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["tenant_id"] if data else None,
        "last_id": data[-1]["tenant_id"] if data else None,
        "has_more": following is not None,
    }


@app.get(TENANT, summary="Retrieve a tenant", tags=["tenants"], responses=responses(TenantObject, 404))
def get_tenant(tenant_id: str) -> dict[str, Any]:
    return admin.tenant_json(admin.get_tenant(services().directory, tenant_id))


@app.post(
    f"{TENANT}/suspend",
    summary="Suspend a tenant: its keys get 403",
    tags=["tenants"],
    responses=responses(TenantObject, 404),
)
def suspend_tenant(tenant_id: str) -> dict[str, Any]:
    return admin.tenant_json(admin.set_status(services().directory, tenant_id, "suspended"))


@app.post(f"{TENANT}/activate", summary="Reactivate a tenant", tags=["tenants"], responses=responses(TenantObject, 404))
def activate_tenant(tenant_id: str) -> dict[str, Any]:
    return admin.tenant_json(admin.set_status(services().directory, tenant_id, "active"))


@app.post(
    f"{TENANT}/limits",
    summary="Change some of a tenant's limits",
    tags=["tenants"],
    responses=responses(TenantObject, 400, 404),
)
def set_limits(tenant_id: str, body: Annotated[LimitsUpdate, Body()]) -> dict[str, Any]:
    limits = LimitChanges(body.images_per_minute, body.images_per_day, body.requests_per_minute)
    return admin.tenant_json(admin.set_limits(services().directory, tenant_id, limits))


@app.post(
    f"{TENANT}/budget",
    summary="Set or remove a monthly budget in USD",
    tags=["tenants"],
    responses=responses(TenantObject, 400, 404),
)
def set_budget(tenant_id: str, body: Annotated[BudgetUpdate, Body()]) -> dict[str, Any]:
    return admin.tenant_json(admin.set_budget(services().directory, tenant_id, body.monthly_usd, body.soft_percent))


@app.post(
    f"{TENANT}/keys",
    summary="Issue a key (its secret is in this answer only)",
    tags=["keys"],
    responses=responses(KeyObject, 400, 404),
)
def issue_key(tenant_id: str, body: Annotated[KeyCreate | None, Body()] = None) -> dict[str, Any]:
    key, secret = admin.issue_key(services().directory, tenant_id, body.expires_at if body else None)
    return admin.key_json(key, secret)  # the only time the secret is shown


@app.get(
    f"{TENANT}/keys",
    summary="List a tenant's keys, never their secrets",
    tags=["keys"],
    responses=responses(KeyList, 404),
)
def list_keys(tenant_id: str) -> dict[str, Any]:
    return {"object": "list", "data": [admin.key_json(k) for k in admin.list_keys(services().directory, tenant_id)]}


@app.post("/admin/v1/keys/<key_id>/revoke", summary="Revoke a key", tags=["keys"], responses=responses(KeyObject, 404))
def revoke_key(key_id: str) -> dict[str, Any]:
    key = admin.revoke_key(services().directory, key_id)
    audit(app, key.tenant_id)
    return admin.key_json(key)


@app.get(
    "/admin/v1/usage",
    summary="The billing export: usage by tenant, day and model (JSON or CSV)",
    tags=["usage"],
    responses=responses(UsageExport, 400, 404),
)
def usage_export(
    tenant_id: Annotated[str | None, Query(max_length=64, description="One tenant (default: every tenant)")] = None,
    start_date: Annotated[str | None, Query(description="First day, YYYY-MM-DD (default: 29 days earlier)")] = None,
    end_date: Annotated[str | None, Query(description="Last day, YYYY-MM-DD (default: today, UTC)")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
):  # no return annotation: Powertools would build a response model from it
    rows = admin.usage_export(services().directory, services().meter, tenant_id, start_date, end_date)
    if tenant_id:
        audit(app, tenant_id)
    if format == "csv":
        return Response(200, "text/csv; charset=utf-8", admin.export_csv(rows))
    return {"object": "list", "data": rows}


lambda_handler = admin_entrypoint(app)
# Before a SnapStart snapshot (darkroom.snapstart): what the first request would build.
prime(lambda: services().directory)
