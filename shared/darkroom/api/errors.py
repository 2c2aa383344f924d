"""Domain errors and the OpenAI error envelope.

Use cases raise these; one place (:mod:`darkroom.api.resolver`) turns them into responses. Messages
name parameters, never their values: an echoed prompt or base64 string in an error is a leak.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:  # Powertools' OpenAPI types: for the annotation only, not worth importing on a cold start
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse


class ApiError(Exception):
    """An error the client should see, with its HTTP status and OpenAI ``type``/``code``/``param``."""

    status = 400
    type = "invalid_request_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        type_: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type_ or self.type
        self.param = param
        self.code = code or self.default_code
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, type_=self.type, param=self.param, code=self.code)


def error_envelope(message: str, *, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error envelope, for the OpenAPI spec."""

    error: ErrorBody


def error_responses(*statuses: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    descriptions = {
        400: "Invalid request",
        401: "Missing, malformed, unknown or revoked API key",
        403: "Tenant suspended",
        404: "Unknown model or route",
        409: "A request with this Idempotency-Key is still in progress",
        429: "Rate limit reached",
        500: "Internal error",
        502: "Inference backend error",
        503: "Temporarily unavailable",
        504: "Inference timed out",
    }
    return {
        status: {"description": descriptions[status], "content": {"application/json": {"model": ErrorResponse}}}
        for status in statuses
    }


class InvalidRequest(ApiError):
    default_code = "invalid_value"


# pydantic error types that mean "the wrong JSON type", and the type that was expected. Request models are
# strict (``n: true`` and ``n: "2"`` are refused, as OpenAI refuses them): these answer ``invalid_type``.
_EXPECTED_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "string_type": "a string",
    "float_type": "a number",
    "float_parsing": "a number",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
}
# The member tags pydantic adds to ``loc`` inside a union (``input: str | list[dict]`` -> ``input.str``).
_UNION_TAG = re.compile(r"^(str|int|bool|float|none|dict\[.*\]|list\[.*\]|[a-z-]+\[.*\])$")


def _json_type(value: object) -> str:
    """The JSON type of a value as OpenAI's messages name it; never the value itself."""
    if value is None:
        return "null"
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a decimal number"),
        (str, "a string"),
        (dict, "an object"),
        (list, "an array"),
    ):
        if isinstance(value, kind):
            return name
    return "another type"


def _in_url(error: Mapping[str, Any]) -> bool:
    """Query, path, header and cookie values are text by nature: one that does not parse is invalid_value."""
    return [str(part) for part in error.get("loc", ())][:1] in (["query"], ["path"], ["header"], ["cookie"])


def _param(error: Mapping[str, Any]) -> str | None:
    loc = [str(part) for part in error.get("loc", ())]
    if _in_url(error):  # Powertools' location, not the parameter's name
        loc = loc[1:]
    loc = [part for part in loc if part != "body" and not _UNION_TAG.match(part)]
    return ".".join(loc) or None


def invalid_from_validation(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """One pydantic error as an :class:`InvalidRequest`: the parameter and the constraint, never the input.

    A wrong JSON type is ``invalid_type`` ("Invalid type for 'n': expected an integer, but got a boolean
    instead.", OpenAI's wording: the input's JSON type is named, its value never); a key a model forbids is
    ``unknown_parameter``; any other constraint is ``invalid_value``.
    """
    error = errors[0] if errors else {}
    param = _param(error)
    kind = error.get("type", "")
    if param is None or kind == "json_invalid":  # the body as a whole: empty, null, a list, not JSON
        return InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if kind == "extra_forbidden":
        return UnknownParameter(param)
    if kind in _EXPECTED_TYPES and not _in_url(error):
        # A union (``str | list``) fails once per member: name every type it would have taken.
        expected = list(
            dict.fromkeys(
                _EXPECTED_TYPES[e.get("type", "")]
                for e in errors
                if _param(e) == param and e.get("type") in _EXPECTED_TYPES
            )
        )
        got = f", but got {_json_type(error['input'])} instead" if "input" in error else ""
        return InvalidRequest(
            f"Invalid type for '{param}': expected {' or '.join(expected)}{got}.", param=param, code="invalid_type"
        )
    # pydantic's msg describes the constraint ("Input should be 'png', 'jpeg' or 'webp'"), not the value.
    return InvalidRequest(f"Invalid value for '{param}': {error.get('msg', 'invalid')}.", param=param)


class UnknownParameter(InvalidRequest):
    default_code = "unknown_parameter"

    def __init__(self, name: str) -> None:
        name = name if len(name) <= 64 else name[:61] + "..."  # a parameter name, but the client's text
        super().__init__(f"Unknown parameter: '{name}'.", param=name)


class InvalidApiKey(ApiError):
    status = 401
    default_code = "invalid_api_key"

    def __init__(self, message: str = "Incorrect or missing API key. Send 'Authorization: Bearer <key>'.") -> None:
        super().__init__(message)


class TenantSuspended(ApiError):
    status = 403
    type = "permission_error"
    default_code = "tenant_suspended"

    def __init__(self) -> None:
        super().__init__("This account is suspended. Contact the operator of this service.")


class ModelNotFound(ApiError):
    status = 404
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        # Model ids are short identifiers the client chose; cap what we repeat anyway.
        super().__init__(f"The model '{model[:64]}' does not exist.", param="model")


class NotFound(ApiError):
    status = 404
    default_code = "not_found"


class RequestInProgress(ApiError):
    """409: the first request with this ``Idempotency-Key`` has not finished; retrying later gets its answer."""

    status = 409
    default_code = "idempotency_request_in_progress"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still in progress. Retry after a few seconds.",
            headers={"retry-after": str(retry_after_seconds)},
        )


class RateLimited(ApiError):
    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"


class InsufficientQuota(ApiError):
    """429: the tenant's monthly budget (darkroom.budgets) has no room for this request, as OpenAI answers."""

    status = 429
    type = "insufficient_quota"
    default_code = "insufficient_quota"


class ClientGone(ApiError):
    """The client of a streamed request went away (the job's ``PartialSink.stopped``) and the work was stopped.

    Nobody receives it. 499 is nginx's "client closed request"; the admission is given back, as for a failure on
    our side (darkroom.limits), because nothing was delivered, and it is not the endpoint's ill health."""

    status = 499
    type = "server_error"
    default_code = "client_disconnected"

    def __init__(self, message: str = "The client went away before the images were ready.") -> None:
        super().__init__(message)


def refunds_admission(error: BaseException) -> bool:
    """Whether work that failed with ``error`` gives its admission back: a failure on our side (5xx, or any
    unexpected error) or a client gone before delivery does; a client's own error (4xx) keeps counting, as at
    OpenAI."""
    return not isinstance(error, ApiError) or error.status >= 500 or isinstance(error, ClientGone)


class UpstreamError(ApiError):
    status = 502
    type = "server_error"
    default_code = "upstream_error"


class UpstreamTimeout(ApiError):
    status = 504
    type = "server_error"
    default_code = "upstream_timeout"


class ServiceUnavailable(ApiError):
    status = 503
    type = "server_error"
    default_code = "service_unavailable"
