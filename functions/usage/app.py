"""The calling tenant's own usage: GET /v1/usage (darkroom's shape, by day and model: what `darkroom usage`
prints) and OpenAI's GET /v1/organization/usage/images and GET /v1/organization/costs (hourly buckets)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Query

from darkroom.api.errors import error_responses
from darkroom.api.organization_usage import CostsPage, ImagesUsagePage, array_values, costs, images_usage
from darkroom.api.resolver import authenticated_tenant, build_resolver, entrypoint
from darkroom.api.usage import UsageList, usage_list
from darkroom.metering import usage_window
from darkroom.organization_usage import Times, costs_query, images_query
from darkroom.services import services
from darkroom.snapstart import prime
from darkroom.tenancy import Tenant

app = build_resolver()
_ARRAY = " Repeat it (name=a&name=b) or send name[]=a&name[]=b, as the openai SDK does."
_SPEC = "OpenAI's shape (openai/openai-openapi openapi.yaml at f85dbe2); see docs/usage-api.md."
StartTime = Annotated[int, Query(description="Start (unix seconds, inclusive), rounded down to the bucket width")]
EndTime = Annotated[int | None, Query(description="End (unix seconds, exclusive); default: now")]
Limit = Annotated[int | None, Query(description="Buckets per page")]
Page = Annotated[str | None, Query(description="The next_page of the previous answer")]
ApiKeyIds = Annotated[list[str] | None, Query(description="Only these API keys (key_...)." + _ARRAY)]
ProjectIds = Annotated[list[str] | None, Query(description="Refused: darkroom has no projects." + _ARRAY)]


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


@app.get(
    "/v1/organization/usage/images",
    summary="Your images usage in hourly or daily buckets",
    tags=["usage"],
    description="bucket_width 1h (limit default 24, max 168) or 1d (default 7, max 31); 1m is refused. " + _SPEC,
    responses={
        200: {"description": "A page of time buckets", "content": {"application/json": {"model": ImagesUsagePage}}},
        **error_responses(400, 401, 403),
    },
)
def get_images_usage(
    tenant: Annotated[Tenant, Depends(authenticated_tenant)],
    start_time: StartTime,
    end_time: EndTime = None,
    bucket_width: Annotated[str | None, Query(description="1h or 1d (default); 1m is refused")] = None,
    group_by: Annotated[
        list[str] | None, Query(description="Any of model, size, source, api_key_id, project_id, user_id." + _ARRAY)
    ] = None,
    models: Annotated[list[str] | None, Query(description="Only these models." + _ARRAY)] = None,
    sizes: Annotated[list[str] | None, Query(description="Only these sizes." + _ARRAY)] = None,
    sources: Annotated[list[str] | None, Query(description="image.generation, image.edit." + _ARRAY)] = None,
    api_key_ids: ApiKeyIds = None,
    project_ids: ProjectIds = None,
    user_ids: Annotated[list[str] | None, Query(description="Refused: no organization users." + _ARRAY)] = None,
    limit: Limit = None,
    page: Page = None,
) -> ImagesUsagePage:
    times = Times(start_time, end_time, bucket_width, limit, page)
    arrays = array_values(
        app.current_event.multi_value_query_string_parameters,
        group_by=group_by,
        models=models,
        sizes=sizes,
        sources=sources,
        api_key_ids=api_key_ids,
        project_ids=project_ids,
        user_ids=user_ids,
    )
    query = images_query(times, arrays)
    return images_usage(services().meter, tenant.tenant_id, query)  # only ever the caller's own tenant


@app.get(
    "/v1/organization/costs",
    summary="Your costs in USD in daily buckets",
    tags=["usage"],
    description="bucket_width 1d only (limit default 7, max 180). line_item is '<model>, <source>'. " + _SPEC,
    responses={
        200: {"description": "A page of daily buckets", "content": {"application/json": {"model": CostsPage}}},
        **error_responses(400, 401, 403),
    },
)
def get_costs(
    tenant: Annotated[Tenant, Depends(authenticated_tenant)],
    start_time: StartTime,
    end_time: EndTime = None,
    bucket_width: Annotated[str | None, Query(description="1d (the default and only width)")] = None,
    group_by: Annotated[
        list[str] | None, Query(description="Any of line_item, api_key_id, project_id." + _ARRAY)
    ] = None,
    api_key_ids: ApiKeyIds = None,
    project_ids: ProjectIds = None,
    limit: Limit = None,
    page: Page = None,
) -> CostsPage:
    raw = app.current_event.multi_value_query_string_parameters
    arrays = array_values(raw, group_by=group_by, api_key_ids=api_key_ids, project_ids=project_ids)
    query = costs_query(Times(start_time, end_time, bucket_width, limit, page), arrays)
    return costs(services().meter, tenant.tenant_id, query)  # only ever the caller's own tenant


lambda_handler = entrypoint(app)
# Before a SnapStart snapshot (darkroom.snapstart): what the first request would build.
prime(lambda: (services().authenticator, services().meter))
