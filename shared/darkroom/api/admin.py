"""The admin API's entry point and wire models: IAM-authenticated, audited, errors in the OpenAI envelope.

API Gateway authenticates every ``/admin/v1`` route with IAM (``AWS_IAM``: a SigV4 signature, then the
caller's IAM policy for ``execute-api:Invoke`` on the route) before this function runs, so no darkroom API key
can reach it. The function still refuses an event without an authenticated IAM caller (403), in case a route
is ever deployed without ``AWS_IAM``. API Gateway passes the caller as ``requestContext.identity.userArn``
("the ARN of the effective user identified after authentication";
https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-mapping-template-reference.html).

Every call leaves one audit line: the caller's IAM principal, the action (method and resource path), the
tenant it touched and the status; never a key, a body or a query string.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from darkroom.api.errors import ApiError, error_envelope, invalid_from_validation
from darkroom.api.http import CONTEXT_KEY, HttpRequest
from darkroom.api.resolver import REQUEST_ID_PATH, event_request_id, proxy_result, routed_event
from darkroom.observability import capture_handler, logger, metrics

AUDIT = "audit"  # app.context key: the request's audit record, which a route completes (:func:`audit`)
_NOT_IAM = error_envelope(
    "The admin API takes AWS SigV4-signed requests from IAM principals only, never an API key.",
    type_="invalid_request_error",
    code="iam_authentication_required",
)


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


def caller_principal(event: dict[str, Any]) -> str | None:
    """The IAM principal API Gateway authenticated (``requestContext.identity.userArn``), or None."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    principal = identity.get("userArn")
    return principal if isinstance(principal, str) and principal.startswith("arn:") else None


def audit(app: APIGatewayRestResolver, tenant_id: str) -> None:
    """Name the tenant a route touched, for its audit line (routes whose path names it need not)."""
    app.context[AUDIT]["tenant_id"] = tenant_id


def admin_entrypoint(app: APIGatewayRestResolver) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda handler of the admin API: the IAM caller checked, the route resolved, one audit line."""

    @logger.inject_lambda_context(correlation_id_path=REQUEST_ID_PATH, clear_state=True)
    @metrics.log_metrics
    @capture_handler
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        principal = caller_principal(event)
        # The tenant the call touched: the path's, or the one a route names (the resolver clears its context).
        record = {"tenant_id": (event.get("pathParameters") or {}).get("tenant_id")}
        if principal is None:
            result = proxy_result(403, _NOT_IAM, {})
        else:
            try:
                request = HttpRequest.from_event(event)
            except ApiError as exc:
                result = proxy_result(exc.status, exc.envelope(), exc.headers)
            else:
                app.append_context(principal=principal, **{CONTEXT_KEY: request, AUDIT: record})
                result = app.resolve(routed_event(event, request), context)
        logger.info(
            "admin call",
            extra={
                "audit": {
                    "principal": principal or "-",
                    "action": f"{event.get('httpMethod', '-')} {event.get('resource', '-')}",
                    "tenant_id": record["tenant_id"],
                    "status": result.get("statusCode"),
                }
            },
        )
        event_id = event_request_id(event)
        if event_id:
            result.setdefault("multiValueHeaders", {})["x-request-id"] = [event_id]
        return result

    return lambda_handler
