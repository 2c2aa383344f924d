"""The local stack's AWS_IAM check (darkroom.local.sigv4) against requests botocore signs, as boto3 and the AWS
CLI would sign them."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from darkroom.local import sigv4

HOST = "127.0.0.1:3000"
SECRETS = {"local": "local"}


def _signed(
    method="POST",
    path="/admin/v1/tenants?limit=2",
    body=b'{"name": "acme"}',
    key="local",
    secret="local",  # noqa: S107 - the local stack's documented dev credentials
    region="us-east-1",
    service="execute-api",
):
    request = AWSRequest(
        method=method, url=f"http://{HOST}{path}", data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    return [("Host", HOST), *request.headers.items()], body


def _verify(headers, body, method="POST", target="/admin/v1/tenants?limit=2", now=None):
    return sigv4.verify(method, target, headers, body, SECRETS, "us-east-1", now)


def test_a_request_signed_with_the_local_credentials_names_the_local_principal():
    headers, body = _signed()
    identity = _verify(headers, body)
    assert identity["userArn"] == sigv4.LOCAL_PRINCIPAL and identity["accessKey"] == "local"


def _kind(headers, body, **kwargs) -> str:
    with pytest.raises(sigv4.Refused) as refused:
        _verify(headers, body, **kwargs)
    return refused.value.kind


def test_every_unsigned_or_mis_signed_request_is_refused():
    headers, body = _signed()
    assert _kind([h for h in headers if h[0].lower() != "authorization"], body) == "MISSING_AUTHENTICATION_TOKEN"
    assert _kind(_replace(headers, "Authorization", "Bearer dk-" + "a" * 43), body) == "INVALID_SIGNATURE"
    assert _kind(headers, json.dumps({"name": "evil"}).encode()) == "INVALID_SIGNATURE"  # the body changed
    assert _kind(headers, body, target="/admin/v1/tenants?limit=3") == "INVALID_SIGNATURE"  # the query changed
    assert _kind(headers, body, method="GET") == "INVALID_SIGNATURE"
    assert _kind(*_signed(secret="wrong")) == "INVALID_SIGNATURE"
    assert _kind(*_signed(key="AKIAUNKNOWN")) == "INVALID_SIGNATURE"
    assert _kind(*_signed(region="eu-west-1")) == "INVALID_SIGNATURE"
    assert _kind(*_signed(service="s3")) == "INVALID_SIGNATURE"
    late = datetime.now(UTC) + timedelta(minutes=16)
    assert _kind(headers, body, now=late) == "INVALID_SIGNATURE"  # API Gateway allows 15 minutes of skew
    assert _verify(headers, body, now=datetime.now(UTC) + timedelta(minutes=14))


def _replace(headers, name, value):
    return [(n, value if n.lower() == name.lower() else v) for n, v in headers]
