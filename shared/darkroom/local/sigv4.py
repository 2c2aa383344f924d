"""API Gateway's ``AWS_IAM`` authorization for the local stack: the request's SigV4 signature, checked.

API Gateway recomputes an ``AWS_IAM`` route's signature from the caller's secret key and refuses a request
without one (``MISSING_AUTHENTICATION_TOKEN``), with a malformed or wrong one, an unknown access key, or a date
more than 15 minutes off (``INVALID_SIGNATURE``, 403); then it evaluates the caller's IAM policies
(https://docs.aws.amazon.com/apigateway/latest/developerguide/permissions.html). Locally the signature is
recomputed with botocore's own signer (the one boto3 and the AWS CLI sign with) over the headers the request
says it signed, and compared in constant time. The only principal is the local stack's credentials
(:data:`darkroom.local.aws.LOCAL_CREDENTIALS`, which ``make run`` exports), and no policy is evaluated: a call
they sign is allowed. It reaches the function as API Gateway passes an IAM caller,
``requestContext.identity.userArn`` (:func:`darkroom.api.resolver.caller_principal`).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TypedDict
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from darkroom.local.template import LOCAL_ACCOUNT_ID

SERVICE = "execute-api"
LOCAL_PRINCIPAL = f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:user/darkroom-local-operator"
MAX_SKEW_SECONDS = 15 * 60
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Za-z0-9]+)/(?P<day>[0-9]{8})/(?P<region>[a-z0-9-]+)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request, *SignedHeaders=(?P<signed>[a-z0-9;-]+), *Signature=(?P<sig>[0-9a-f]{64})"
)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


class IamCaller(TypedDict):
    """The ``requestContext.identity`` fields API Gateway sets for an authenticated IAM caller."""

    userArn: str
    caller: str
    accessKey: str
    accountId: str


class Refused(Exception):
    """The request is not signed as API Gateway requires: ``kind`` is the gateway response it gets."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def verify(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    secrets: Mapping[str, str],
    region: str,
    now: datetime | None = None,
) -> IamCaller:
    """The ``requestContext.identity`` fields of the IAM caller who signed the request; :class:`Refused` if none.

    ``target`` is the request line's path and query; ``secrets`` maps access key ids to their secret keys.
    """
    found = {name.lower(): value for name, value in headers}
    authorization = found.get("authorization")
    if not authorization:
        raise Refused("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")
    parsed = _AUTHORIZATION.fullmatch(authorization.strip())
    if parsed is None or "x-amz-date" not in found or "host" not in parsed["signed"].split(";"):
        raise Refused("INVALID_SIGNATURE", "The Authorization header is not an AWS SigV4 signature.")
    secret = secrets.get(parsed["key"])
    if secret is None:
        raise Refused("INVALID_SIGNATURE", "The security token included in the request is invalid.")
    try:
        signed_at = datetime.strptime(found["x-amz-date"], _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise Refused("INVALID_SIGNATURE", "X-Amz-Date is not a SigV4 date.") from None
    if abs(((now or datetime.now(UTC)) - signed_at).total_seconds()) > MAX_SKEW_SECONDS:
        raise Refused("INVALID_SIGNATURE", "Signature expired: the request is dated more than 15 minutes off.")
    if (parsed["region"], parsed["service"]) != (region, SERVICE) or parsed["day"] != found["x-amz-date"][:8]:
        raise Refused("INVALID_SIGNATURE", f"The credential scope must be <date>/{region}/{SERVICE}/aws4_request.")
    expected = _signature(method, target, found, parsed["signed"].split(";"), body, parsed["key"], secret, region)
    if not hmac.compare_digest(expected, parsed["sig"]):
        raise Refused("INVALID_SIGNATURE", "The request signature we calculated does not match the one provided.")
    key = parsed["key"]
    return IamCaller(userArn=LOCAL_PRINCIPAL, caller=key, accessKey=key, accountId=LOCAL_ACCOUNT_ID)


def _signature(
    method: str,
    target: str,
    headers: dict[str, str],
    signed: list[str],
    body: bytes,
    access_key: str,
    secret: str,
    region: str,
) -> str:
    """botocore's SigV4 signature of the request over exactly the ``signed`` headers, dated as it was signed."""
    url = urlsplit(target)
    request = AWSRequest(
        method=method,
        url=f"http://{headers['host']}{url.path}" + (f"?{url.query}" if url.query else ""),
        headers={name: headers.get(name, "") for name in signed},
        data=body,
    )
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(access_key, secret), SERVICE, region)
    canonical = signer.canonical_request(request)
    return signer.signature(signer.string_to_sign(request, canonical), request)
