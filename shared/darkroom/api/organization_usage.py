"""``GET /v1/organization/usage/images`` and ``GET /v1/organization/costs`` wire models, in OpenAI's shapes.

Transcribed from github.com/openai/openai-openapi, openapi.yaml at commit
f85dbe223d40e1a31cba812ab2d755c7e98a92a3 (2026-08-21), components/schemas ``UsageResponse``,
``UsageTimeBucket``, ``UsageImagesResult`` and ``CostsResult``. A result has every field; those not grouped by
are null. darkroom has no projects or organization users: ``project_id`` and ``user_id`` are always null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from darkroom.metering import UsageMeter
from darkroom.organization_usage import Group, Totals, UsageQuery, grouped


class ImagesResult(BaseModel):
    """One group's images usage in one bucket (``organization.usage.images.result``)."""

    object: Literal["organization.usage.images.result"] = "organization.usage.images.result"
    images: int
    num_model_requests: int
    source: str | None = Field(default=None, description="With group_by=source: image.generation or image.edit")
    size: str | None = None
    project_id: str | None = Field(default=None, description="Always null: darkroom has no projects")
    user_id: str | None = Field(default=None, description="Always null: darkroom has no organization users")
    api_key_id: str | None = Field(default=None, description="With group_by=api_key_id: the key's id (key_...)")
    model: str | None = None


class CostsAmount(BaseModel):
    value: float = Field(description="USD, summed exactly from the recorded micro-dollars")
    currency: Literal["usd"] = "usd"


class CostsResult(BaseModel):
    """One group's costs in one bucket (``organization.costs.result``)."""

    object: Literal["organization.costs.result"] = "organization.costs.result"
    amount: CostsAmount
    line_item: str | None = Field(default=None, description="With group_by=line_item: '<model>, <source>'")
    project_id: str | None = Field(default=None, description="Always null: darkroom has no projects")
    api_key_id: str | None = None
    quantity: float | None = Field(default=None, description="With group_by=line_item: the images, for image items")
    quantity_unit: str | None = None


class ImagesBucket(BaseModel):
    object: Literal["bucket"] = "bucket"
    start_time: int = Field(description="Unix seconds, inclusive")
    end_time: int = Field(description="Unix seconds, exclusive")
    results: list[ImagesResult]


class CostsBucket(BaseModel):
    object: Literal["bucket"] = "bucket"
    start_time: int = Field(description="Unix seconds, inclusive")
    end_time: int = Field(description="Unix seconds, exclusive")
    results: list[CostsResult]


class ImagesUsagePage(BaseModel):
    object: Literal["page"] = "page"
    data: list[ImagesBucket]
    has_more: bool
    next_page: str | None = Field(description="Pass as 'page' (with the same parameters) for the next buckets")


class CostsPage(BaseModel):
    object: Literal["page"] = "page"
    data: list[CostsBucket]
    has_more: bool
    next_page: str | None = Field(description="Pass as 'page' (with the same parameters) for the next buckets")


def array_values(query: Mapping[str, Sequence[str]] | None, **declared: Sequence[str] | None) -> dict[str, list[str]]:
    """The values of each array parameter in ``declared``, sent as ``name=a&name=b`` (``declared``, as the route
    parsed it) or as ``name[]=a&name[]=b`` (from the raw multi-value ``query``): the openai SDK's array format is
    "brackets". A parameter sent in neither form is left out."""
    values = {name: [*(sent or ()), *((query or {}).get(f"{name}[]") or ())] for name, sent in declared.items()}
    return {name: sent for name, sent in values.items() if sent}


def _page(
    meter: UsageMeter, tenant_id: str, query: UsageQuery, result: Callable[[Group, Totals], BaseModel]
) -> dict[str, Any]:
    """A page as JSON-shaped values: each bucket of ``query.window`` (empty ones too) with one result per
    group, from one Query of the page's hours."""
    groups = grouped(meter.hourly(tenant_id, *query.window.span), query)
    data = [
        {"start_time": start, "end_time": start + query.window.width, "results": [result(*item) for item in by.items()]}
        for start, by in groups.items()
    ]
    return {"data": data, "has_more": query.window.next_page is not None, "next_page": query.window.next_page}


def _image(group: Group, totals: Totals) -> ImagesResult:
    return ImagesResult.model_validate({"images": totals.images, "num_model_requests": totals.requests, **dict(group)})


def images_usage(meter: UsageMeter, tenant_id: str, query: UsageQuery) -> ImagesUsagePage:
    """The tenant's images usage: a page of ``query.window``'s buckets, one result per group."""
    return ImagesUsagePage.model_validate(_page(meter, tenant_id, query, _image))


def _cost(group: Group, totals: Totals) -> CostsResult:
    fields = dict(group)
    counted = "line_item" in fields and totals.images_only  # a quantity only where its unit is one: images
    return CostsResult.model_validate(
        {
            "amount": CostsAmount(value=totals.cost_micro_usd / 1_000_000),
            "quantity": totals.images if counted else None,
            "quantity_unit": "images" if counted else None,
            **fields,
        }
    )


def costs(meter: UsageMeter, tenant_id: str, query: UsageQuery) -> CostsPage:
    """The tenant's costs in USD: a page of ``query.window``'s daily buckets, one result per group."""
    return CostsPage.model_validate(_page(meter, tenant_id, query, _cost))
