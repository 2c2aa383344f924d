"""The admin API's wire models (/admin/v1: tenants, limits, budgets, keys, the export): request bodies, and the
answers' shapes for docs/admin-openapi.json (``darkroom.admin`` builds the answers; tests/handler checks they
match). Its entry point, which checks the IAM caller and audits each call, is
:func:`darkroom.api.resolver.admin_entrypoint`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, ConfigDict, Field

from darkroom.api.errors import ErrorResponse
from darkroom.api.usage import UsageDay


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the documented shape is the whole answer (tests/handler)


class TenantObject(_Answer):
    object: Literal["tenant"] = "tenant"
    tenant_id: str
    name: str
    status: Literal["active", "suspended"]
    created_at: str = Field(description="UTC, YYYY-MM-DDTHH:MM:SSZ")
    images_per_minute: int
    images_per_day: int
    requests_per_minute: int
    monthly_budget_usd: float | None = Field(description="null: no budget")
    budget_soft_percent: int | None


class TenantList(_Answer):
    object: Literal["list"] = "list"
    data: list[TenantObject]
    first_id: str | None
    last_id: str | None = Field(description="Pass as 'after' for the next page")
    has_more: bool


class KeyObject(_Answer):
    object: Literal["api_key"] = "api_key"
    key_id: str
    tenant_id: str
    prefix: str = Field(description="The key's first 8 characters, to recognise it")
    status: Literal["active", "revoked", "expired"]
    created_at: str
    expires_at: str | None
    key: str | None = Field(default=None, description="The secret: in the answer that issues the key only")


class KeyList(_Answer):
    object: Literal["list"] = "list"
    data: list[KeyObject]


class UsageRow(UsageDay):
    """A row of ``GET /v1/usage``, with the tenant it is of."""

    model_config = ConfigDict(extra="forbid")
    tenant_id: str


class UsageExport(_Answer):
    object: Literal["list"] = "list"
    data: list[UsageRow]


_ERRORS = {
    400: "Invalid request: the error names the parameter",
    403: "Not an IAM caller, or one whose policy does not allow this route (API Gateway's answer)",
    404: "No such tenant or key (an unsigned request is a 404 too: API Gateway's 'missing authentication token')",
}


def responses(model: type[BaseModel], *errors: int) -> dict[int, OpenAPIResponse]:
    """A route's documented answers: ``model`` on 200, and the ``errors`` in the OpenAI envelope."""
    answers: dict[int, OpenAPIResponse] = {
        200: {"description": "OK", "content": {"application/json": {"model": model}}}
    }
    for status in (*errors, 403):
        answers[status] = {"description": _ERRORS[status], "content": {"application/json": {"model": ErrorResponse}}}
    return answers
