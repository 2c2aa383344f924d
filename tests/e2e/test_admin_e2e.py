"""The admin API (/admin/v1) on the local stack, called as an operator would: SigV4-signed by curl
(``--aws-sigv4``) and by botocore (boto3's signer), never with a darkroom key; its effects seen through /v1."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

pytestmark = pytest.mark.e2e

PROPAGATION_SECONDS = 1.5  # the stack's key cache is 1 s


class Operator:
    """An IAM caller of the admin API: requests signed with the stack's AWS credentials, as boto3 signs them."""

    def __init__(self, stack: dict[str, str], secret: str | None = None) -> None:
        self.root = stack["OPENAI_BASE_URL"].removesuffix("/v1")
        self.credentials = Credentials(stack["AWS_ACCESS_KEY_ID"], secret or stack["AWS_SECRET_ACCESS_KEY"])
        self.region = stack["AWS_DEFAULT_REGION"]

    def __call__(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        data = None if body is None else json.dumps(body)
        request = AWSRequest(
            method=method,
            url=self.root + path,
            data=data,
            headers={"content-type": "application/json"} if data else {},
        )
        SigV4Auth(self.credentials, "execute-api", self.region).add_auth(request)
        return httpx.request(method, request.url, headers=dict(request.headers.items()), content=data, timeout=30)


@pytest.fixture(scope="module")
def operator(stack) -> Operator:
    return Operator(stack)


def test_from_sign_up_to_a_working_key_and_back(stack, operator, error_body):
    created = operator("POST", "/admin/v1/tenants", {"name": "signup", "images_per_minute": 5})
    assert created.status_code == 200, created.text
    tenant = created.json()
    assert tenant["status"] == "active" and tenant["images_per_minute"] == 5

    issued = operator("POST", f"/admin/v1/tenants/{tenant['tenant_id']}/keys").json()
    client = openai.OpenAI(base_url=stack["OPENAI_BASE_URL"], api_key=issued["key"], max_retries=0)
    image = client.images.generate(model="local-image", prompt="a door", size="256x256")
    assert image.data[0].url

    assert operator("POST", f"/admin/v1/tenants/{tenant['tenant_id']}/suspend").json()["status"] == "suspended"
    time.sleep(PROPAGATION_SECONDS)
    with pytest.raises(openai.PermissionDeniedError):
        client.models.list()
    operator("POST", f"/admin/v1/tenants/{tenant['tenant_id']}/activate")
    time.sleep(PROPAGATION_SECONDS)
    assert client.models.list().data

    today = datetime.now(UTC).date().isoformat()
    export = operator("GET", f"/admin/v1/usage?tenant_id={tenant['tenant_id']}&start_date={today}&end_date={today}")
    assert [(row["tenant_id"], row["images"]) for row in export.json()["data"]] == [(tenant["tenant_id"], 1)]

    assert operator("POST", f"/admin/v1/keys/{issued['key_id']}/revoke").json()["status"] == "revoked"
    time.sleep(PROPAGATION_SECONDS)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert error_body(refused.value.response)["code"] == "invalid_api_key"


def test_an_expired_key_is_refused_like_a_revoked_one(stack, operator, error_body):
    tenant = operator("POST", "/admin/v1/tenants", {"name": "expiring"}).json()
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    issued = operator("POST", f"/admin/v1/tenants/{tenant['tenant_id']}/keys", {"expires_at": expires.isoformat()})
    client = openai.OpenAI(base_url=stack["OPENAI_BASE_URL"], api_key=issued.json()["key"], max_retries=0)
    assert client.models.list().data
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.0)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert error_body(refused.value.response)["code"] == "invalid_api_key"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_signs_with_aws_sigv4(stack):
    root = stack["OPENAI_BASE_URL"].removesuffix("/v1")
    sign = ["--aws-sigv4", f"aws:amz:{stack['AWS_DEFAULT_REGION']}:execute-api"]
    user = ["--user", f"{stack['AWS_ACCESS_KEY_ID']}:{stack['AWS_SECRET_ACCESS_KEY']}"]
    created = subprocess.run(
        [
            "curl",
            "-sS",
            *sign,
            *user,
            "-H",
            "content-type: application/json",
            "-d",
            '{"name": "by-curl"}',
            f"{root}/admin/v1/tenants",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    tenant = json.loads(created.stdout)
    fetched = subprocess.run(
        ["curl", "-sS", *sign, *user, f"{root}/admin/v1/tenants/{tenant['tenant_id']}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(fetched.stdout)["name"] == "by-curl"


def test_no_darkroom_key_and_no_bad_signature_reaches_the_admin_api(stack, make_tenant):
    root = stack["OPENAI_BASE_URL"].removesuffix("/v1")
    tenant = make_tenant()
    unsigned = httpx.get(f"{root}/admin/v1/tenants", timeout=30)
    assert unsigned.status_code == 404 and unsigned.json()["error"]["code"] == "not_found"
    keyed = httpx.get(f"{root}/admin/v1/tenants", headers=tenant.headers(), timeout=30)
    assert keyed.status_code == 403 and set(keyed.json()["error"]) == {"message", "type", "param", "code"}
    forged = Operator(stack, secret="not-the-secret")("POST", "/admin/v1/tenants", {"name": "forged"})
    assert forged.status_code == 403
    names = {t["name"] for t in Operator(stack)("GET", "/admin/v1/tenants?limit=100").json()["data"]}
    assert "forged" not in names
