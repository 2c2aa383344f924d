"""``GET /v1/usage`` wire models: a tenant's usage by day and model, as ``darkroom usage`` shows it too."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from darkroom.metering import ModelDayUsage, UsageMeter


class UsageDay(BaseModel):
    """One model's usage on one day (UTC)."""

    object: Literal["usage.day"] = "usage.day"
    date: str = Field(description="The day (UTC), YYYY-MM-DD")
    model: str
    requests: int
    images: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class UsageTotals(BaseModel):
    requests: int
    images: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class UsageList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageDay] = Field(description="One row per day and model used, sorted by date then model")
    totals: UsageTotals
    start_date: str
    end_date: str


def usage_day(usage: ModelDayUsage) -> UsageDay:
    """One row of ``GET /v1/usage`` (and, with its tenant's id, of the admin API's billing export)."""
    return UsageDay(
        date=usage.day,
        model=usage.model,
        requests=usage.requests,
        images=usage.images,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
    )


def usage_list(meter: UsageMeter, tenant_id: str, start: date, end: date) -> UsageList:
    """The tenant's usage from ``start`` to ``end`` (inclusive): rows from ``UsageMeter.by_day_and_model``."""
    rows = meter.by_day_and_model(tenant_id, start, end)
    totals = UsageTotals(
        requests=sum(r.requests for r in rows),
        images=sum(r.images for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost_usd=sum(r.cost_micro_usd for r in rows) / 1_000_000,  # summed in micro-USD: no float drift
    )
    return UsageList(
        data=[usage_day(r) for r in rows], totals=totals, start_date=start.isoformat(), end_date=end.isoformat()
    )
