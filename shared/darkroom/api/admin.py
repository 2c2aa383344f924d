"""The admin API's request bodies (/admin/v1: tenants, limits, budgets, keys); its entry point, which checks the IAM
caller and audits each call, is :func:`darkroom.api.resolver.admin_entrypoint`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from darkroom.api.errors import invalid_from_validation


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


BodyModel = TypeVar("BodyModel", bound=BaseModel)


class TenantCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    images_per_minute: int | None = Field(default=None, ge=1)
    images_per_day: int | None = Field(default=None, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    monthly_budget_usd: float | None = Field(default=None, gt=0, description="USD a month (none: no cap)")
    budget_soft_percent: int = Field(default=80, ge=1, le=100)


class LimitsUpdate(_Body):
    images_per_minute: int | None = Field(default=None, ge=1)
    images_per_day: int | None = Field(default=None, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)


class BudgetUpdate(_Body):
    monthly_usd: float | None = Field(gt=0, description="The hard cap on a calendar month's (UTC) spend; null: none")
    soft_percent: int = Field(default=80, ge=1, le=100, description="The BudgetSoftLimit alarm fires past this share")


class KeyCreate(_Body):
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working: ISO 8601 or Unix seconds (none: until revoked)"
    )


def parse_body(model: type[BodyModel], value: object) -> BodyModel:
    """``value`` (a parsed JSON body) as ``model``; a 400 naming the parameter, never echoing it, if it is not."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise invalid_from_validation(exc.errors()) from None
