"""The API's REQUEST authorizer: it labels a request with its tenant for the access log, and decides nothing.

API Gateway's access log can name only what a Lambda authorizer returns (``$context.authorizer.principalId``),
never a header the handler sets. So this authorizer reads the key the way the handlers do
(:meth:`darkroom.authentication.Authenticator.tenant_of`) and returns:

- ``principalId`` (and ``context.tenant``): the tenant's id, or :data:`UNLABELLED` for a missing, malformed,
  unknown or revoked key, or when the tenants table could not be read;
- an Allow policy for every method of the stage, always. The handlers stay the authority: they authenticate
  again and answer 401/403 in the OpenAI envelope within their own revocation bound, as without this
  authorizer. The policy covers the whole stage because API Gateway reuses a cached result for every route
  (https://repost.aws/knowledge-center/api-gateway-lambda-authorization-errors).

The key is never logged or returned: the principal is a tenant id or the label, nothing else of the event.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from darkroom import config
from darkroom.authentication import Authenticator
from darkroom.snapstart import on_restore
from darkroom.tenancy import TenantDirectory

# API Gateway's own mark for a variable without a value, so a request the authorizer never saw (no
# Authorization header: API Gateway answers 401 itself) and one it could not label read the same in the log.
UNLABELLED = "-"


def stage_resource(method_arn: str) -> str:
    """``arn:...:execute-api:region:account:api/stage/*/*`` from the method ARN of one request."""
    api, stage = method_arn.split("/")[:2]
    return f"{api}/{stage}/*/*"


@cache
def key_authenticator() -> Authenticator:
    """The key lookup alone, built on first use: the authorizer function imports this module and the tenancy
    one, never :mod:`darkroom.services` (no catalog, bucket, queue or use case to import on a cold start)."""
    settings = config.get_settings()
    return Authenticator(TenantDirectory(config.client("dynamodb"), settings.tenants_table), settings.key_cache_seconds)


def _forget_cached_keys() -> None:
    """After a SnapStart restore: no key lookup cached before the snapshot outlives a revocation."""
    if key_authenticator.cache_info().currsize:
        key_authenticator().forget()


on_restore(_forget_cached_keys)


def label(
    event: dict[str, Any], authenticator: Authenticator, on_lookup_error: Callable[[], None] | None = None
) -> dict[str, Any]:
    """The authorizer's answer to a REQUEST authorizer ``event``: the tenant's label and an Allow for the stage.

    A failed lookup (the tenants table unreachable) labels the request :data:`UNLABELLED` instead of failing
    it: the handler answers it as it would without an authorizer. ``on_lookup_error`` is told (to log it).
    """
    headers = event.get("headers") or {}
    authorization = next((value for name, value in headers.items() if name.lower() == "authorization"), None)
    try:
        tenant = authenticator.tenant_of(authorization)
    except Exception:  # noqa: BLE001 - a label is never worth a failed request; reported to the caller's log
        if on_lookup_error:
            on_lookup_error()
        tenant = None
    principal = tenant.tenant_id if tenant else UNLABELLED
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": stage_resource(event["methodArn"])}
            ],
        },
        "context": {"tenant": principal},
    }
