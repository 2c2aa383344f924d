"""GET /v1/usage: the calling tenant's own usage by day and model (the numbers `darkroom usage` prints)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Query

from darkroom.api.errors import error_responses
from darkroom.api.resolver import authenticated_tenant, build_resolver, entrypoint
from darkroom.api.usage import UsageList, usage_list
from darkroom.metering import usage_window
from darkroom.services import services
from darkroom.snapstart import prime
from darkroom.tenancy import Tenant

app = build_resolver()


@app.get(
    "/v1/usage",
    summary="Your usage by day (UTC) and model",
    tags=["usage"],
    description="At most 366 days; without dates, the last 30 days up to today (UTC).",
    responses={
        200: {
            "description": "Usage rows sorted by date then model, and their totals",
            "content": {"application/json": {"model": UsageList}},
        },
        **error_responses(400, 401, 403),
    },
)
def get_usage(
    tenant: Annotated[Tenant, Depends(authenticated_tenant)],
    start_date: Annotated[
        str | None, Query(description="First day, YYYY-MM-DD (default: 29 days before end_date)")
    ] = None,
    end_date: Annotated[str | None, Query(description="Last day, YYYY-MM-DD (default: today, UTC)")] = None,
) -> UsageList:
    start, end = usage_window(start_date, end_date)
    return usage_list(services().meter, tenant.tenant_id, start, end)  # only ever the caller's own tenant


lambda_handler = entrypoint(app)
# Before a SnapStart snapshot (darkroom.snapstart): what the first request would build.
prime(lambda: (services().authenticator, services().meter))
