"""The resolver every function shares: OpenAI error envelopes, auth dependency, the entry point.

Domain errors are mapped to HTTP here and only here. Validation errors keep the parameter name and
a message, never the input (pydantic's ``errors()`` would echo it, base64 included).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Request, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom.api import jsonbody
from darkroom.api.errors import ApiError, error_envelope, invalid_from_validation
from darkroom.api.http import CONTEXT_KEY, HttpRequest, json_response
from darkroom.deadline import RequestDeadline
from darkroom.observability import capture_handler, logger, metrics
from darkroom.ports import RequestContext
from darkroom.services import services
from darkroom.tenancy import Tenant

_INTERNAL_ERROR = error_envelope(
    "The server had an error processing your request.", type_="server_error", code="internal_error"
)


def build_resolver() -> APIGatewayRestResolver:
    """A REST resolver with validation on, strict JSON bodies, and every error in the OpenAI envelope."""
    app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=lambda text: _parsed(app, text))

    @app.exception_handler(ApiError)
    def _api_error(exc: ApiError) -> Response[Any]:
        if exc.status >= 500:
            logger.warning("request failed", extra={"status": exc.status, "code": exc.code})
        return json_response(exc.status, exc.envelope(), exc.headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response[Any]:
        error = invalid_from_validation(exc.errors())
        return json_response(error.status, error.envelope())

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_type(exc: RequestUnsupportedContentType) -> Response[Any]:
        return json_response(
            400,
            error_envelope(
                "Send the request body as JSON with 'Content-Type: application/json'.",
                type_="invalid_request_error",
                code="unsupported_content_type",
            ),
        )

    @app.not_found
    def _not_found(exc: NotFoundError) -> Response[Any]:
        return json_response(404, error_envelope("Unknown route.", type_="invalid_request_error", code="not_found"))

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[Any]:
        # The stack trace goes to the log (it holds no request data); the client gets a plain 500.
        logger.exception("unhandled error")
        return json_response(HTTPStatus.INTERNAL_SERVER_ERROR, _INTERNAL_ERROR)

    return app


def _parsed(app: APIGatewayRestResolver, text: str) -> Any:
    """The body Powertools validates, parsed once: the request's own parse when ``text`` is the request's
    body (as :func:`routed_event` hands it on), shared with the ``Idempotency-Key`` fingerprint and any
    other reader of ``HttpRequest.json``; any other text (none today) is parsed by the same strict rules."""
    request = app.context.get(CONTEXT_KEY)
    if isinstance(request, HttpRequest) and text is request.text:
        return request.json
    return jsonbody.loads(text)


def authenticated_tenant(request: Request) -> Tenant:
    """``Depends`` target: the tenant the entry point authenticated before routing."""
    tenant: Tenant = request.context["tenant"]
    return tenant


# darkroom's request id (usage records' exactly-once key, logs' correlation id, ``x-request-id``) is API
# Gateway's extendedRequestId: a caller can set requestId by sending its own UUID in x-amzn-RequestId, but
# cannot set or override extendedRequestId
# (https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-access-logging.html). A replayed
# requestId must not make a second request look like a retry of the first. requestId is the fallback for
# events without one (hand-written events for ``sam local invoke``).
REQUEST_ID_PATH = "requestContext.extendedRequestId || requestContext.requestId"


def event_request_id(event: dict[str, Any]) -> str | None:
    """The request id of an API Gateway event (:data:`REQUEST_ID_PATH`), or None."""
    context = event.get("requestContext") or {}
    return context.get("extendedRequestId") or context.get("requestId")


def request_id(app: APIGatewayRestResolver) -> str:
    return event_request_id(app.current_event.raw_event) or ""


def request_context(app: APIGatewayRestResolver, streamed: bool = False) -> RequestContext:
    """The use cases' view of the request being routed: its tenant, its id, its deadline (``streamed``: a
    streamed answer's, bound by the function's remaining time only, not API Gateway's 29 s)."""
    deadline = app.context["deadline"]
    if streamed:
        deadline = RequestDeadline.for_stream(app.lambda_context.get_remaining_time_in_millis())
    return RequestContext(app.context["tenant"], request_id(app), deadline)


def _proxy_result(status: int, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "multiValueHeaders": {"Content-Type": [content_types.APPLICATION_JSON]}
        | {name: [value] for name, value in headers.items()},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def _authenticate(request: HttpRequest) -> Tenant:
    tenant = services().authenticator.authenticate(request.headers.get("authorization"))
    logger.append_keys(tenant_id=tenant.tenant_id)
    return tenant


def routed_event(event: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
    """``event`` with a base64 JSON body (a binary media type, so it arrived byte for byte) as UTF-8 text.

    Everything after this, Powertools' validation included, reads the body as text, as it would
    arrive without the binary media type, except that bytes which are not UTF-8 are a 400 here
    instead of U+FFFD characters in the prompt. The bytes are ``request.body``: decoded once.
    """
    if not request.base64_encoded or request.media_type != "application/json":
        return event
    return {**event, "body": request.text, "isBase64Encoded": False}


def entrypoint(
    app: APIGatewayRestResolver, *, per_request: Callable[[], AbstractContextManager[object]] = nullcontext
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda handler for ``app``: logger context, metrics, tracing, and ``x-request-id`` on every answer.

    ``per_request`` opens what each routed request gets of its own: a function that decodes images passes
    :func:`darkroom.intake.request_decode_budget` (one decode budget per request, as one deadline); the
    others pass nothing, so they never import the intake (and Pillow).

    Every darkroom route needs a tenant, so the key is checked before routing and body validation:
    an unauthenticated caller learns nothing about the API beyond 401. The event becomes one
    :class:`~darkroom.api.http.HttpRequest` here, which routes read with ``current_request(app)``.
    """

    @logger.inject_lambda_context(correlation_id_path=REQUEST_ID_PATH, clear_state=True)
    @metrics.log_metrics
    @capture_handler
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        gateway = event.get("requestContext") or {}
        deadline = RequestDeadline.for_request(context.get_remaining_time_in_millis(), gateway.get("requestTimeEpoch"))
        try:
            request = HttpRequest.from_event(event)
            tenant = _authenticate(request)
            event = routed_event(event, request)
        except ApiError as exc:
            result = _proxy_result(exc.status, exc.envelope(), exc.headers)
        except Exception:  # noqa: BLE001 - logged; the client gets the 500 envelope, not a stack trace
            logger.exception("authentication failed")
            result = _proxy_result(500, _INTERNAL_ERROR, {})
        else:
            app.append_context(tenant=tenant, deadline=deadline, **{CONTEXT_KEY: request})
            with per_request():
                result = app.resolve(event, context)
        return _with_request_id(event, result)

    return lambda_handler


def _with_request_id(event: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the request's id as ``x-request-id``, as every answer carries it."""
    event_id = event_request_id(event)
    if event_id:
        result.setdefault("multiValueHeaders", {})["x-request-id"] = [event_id]
    return result


# The admin API (/admin/v1, functions/admin). API Gateway authenticates every route with IAM (AWS_IAM: a SigV4
# signature, then the caller's execute-api:Invoke permission on the route) before the function runs, so no
# darkroom key reaches it. The function still refuses an event without an IAM caller, in case a route is ever
# deployed without AWS_IAM. API Gateway passes the caller as requestContext.identity.userArn, "the ARN of the
# effective user identified after authentication"
# (https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-mapping-template-reference.html).
# Every call leaves one audit line: principal, action (method and resource path), tenant, status; never a key,
# a body or a query string.
AUDIT = "audit"  # app.context key: the request's audit record, which a route completes (:func:`audit`)
_NOT_IAM = error_envelope(
    "The admin API takes AWS SigV4-signed requests from IAM principals only, never an API key.",
    type_="invalid_request_error",
    code="iam_authentication_required",
)


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
            result = _proxy_result(403, _NOT_IAM, {})
        else:
            try:
                request = HttpRequest.from_event(event)
            except ApiError as exc:
                result = _proxy_result(exc.status, exc.envelope(), exc.headers)
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
        return _with_request_id(event, result)

    return lambda_handler
