"""AdminFunction in-process with moto: the /admin/v1 routes as API Gateway hands them over after AWS_IAM
authorization, replaying events/admin-create-tenant.json."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from darkroom.metering import UsageEvent
from emf_capture import powertools_log_stream
from lambda_harness import EVENT_KEY, invoke, load_event

PRINCIPAL = "arn:aws:sts::123456789012:assumed-role/darkroom-operator/billing-sync"
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def _call(method: str, path: str, body: dict | None = None, query: dict | None = None, **path_parameters):
    """An IAM-authenticated call: events/admin-create-tenant.json re-aimed at ``path`` (its resource path)."""
    event = load_event("admin-create-tenant")
    concrete = path.format(**path_parameters)
    event.update(
        resource=path,
        path=concrete,
        httpMethod=method,
        pathParameters=path_parameters or None,
        queryStringParameters=query,
        multiValueQueryStringParameters={k: [v] for k, v in (query or {}).items()} or None,
        body=None if body is None else json.dumps(body),
        isBase64Encoded=False,
    )
    event["requestContext"].update(resourcePath=path, httpMethod=method, path=f"/prod{concrete}")
    return invoke("admin", event, raw=query is not None and query.get("format") == "csv")


@pytest.fixture
def logged():
    """darkroom's log lines as written (JSON text), for the test's block."""
    with powertools_log_stream() as stream:
        yield stream.getvalue


def _audits(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line["audit"] for line in lines if line.get("message") == "admin call"]


def test_the_replayed_event_creates_a_tenant_and_is_audited(svc, logged):
    status, _, tenant = invoke("admin", load_event("admin-create-tenant"))
    assert status == 200, tenant
    assert (tenant["name"], tenant["images_per_minute"], tenant["monthly_budget_usd"]) == ("acme", 10, 25.0)
    stored = svc.directory.get_tenant(tenant["tenant_id"])
    assert stored.limits.images_per_day == svc.directory.default_limits.images_per_day  # not given: the default
    assert stored.limits.monthly_budget_micro_usd == 25_000_000
    (audit,) = _audits(logged())
    assert audit == {
        "principal": PRINCIPAL,
        "action": "POST /admin/v1/tenants",
        "tenant_id": tenant["tenant_id"],
        "status": 200,
    }


def test_without_an_iam_caller_nothing_runs(svc, logged):
    """A route deployed without AWS_IAM (or an event without an IAM identity) is refused by the function too,
    and a darkroom key is no substitute."""
    event = load_event("admin-create-tenant")
    del event["requestContext"]["identity"]["userArn"]
    event["headers"]["authorization"] = f"Bearer {EVENT_KEY}"
    status, _, body = invoke("admin", event)
    assert status == 403 and body["error"]["code"] == "iam_authentication_required"
    assert svc.directory.list_tenants() == []
    (audit,) = _audits(logged())
    assert audit["principal"] == "-" and audit["status"] == 403


def test_keys_issue_with_expiry_list_and_revoke_and_the_secret_is_never_logged(svc, logged):
    tenant = svc.directory.create_tenant("acme")
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    status, _, issued = _call(
        "POST", "/admin/v1/tenants/{tenant_id}/keys", {"expires_at": expires.isoformat()}, tenant_id=tenant.tenant_id
    )
    assert status == 200, issued
    assert issued["expires_at"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert svc.authenticator.authenticate(f"Bearer {issued['key']}").key_id == issued["key_id"]
    status, _, unlimited = _call("POST", "/admin/v1/tenants/{tenant_id}/keys", tenant_id=tenant.tenant_id)  # no body
    assert status == 200 and unlimited["expires_at"] is None

    status, _, listing = _call("GET", "/admin/v1/tenants/{tenant_id}/keys", tenant_id=tenant.tenant_id)
    assert {k["key_id"] for k in listing["data"]} == {issued["key_id"], unlimited["key_id"]}
    assert all("key" not in k for k in listing["data"])
    status, _, revoked = _call("POST", "/admin/v1/keys/{key_id}/revoke", key_id=issued["key_id"])
    assert status == 200 and revoked["status"] == "revoked"
    stale, _ = svc.directory.issue_key(tenant.tenant_id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    status, _, listing = _call("GET", "/admin/v1/tenants/{tenant_id}/keys", tenant_id=tenant.tenant_id)
    shown = {k["key_id"]: k["status"] for k in listing["data"]}
    assert shown == {issued["key_id"]: "revoked", unlimited["key_id"]: "active", stale.key_id: "expired"}

    out = logged()
    assert issued["key"] not in out and unlimited["key"] not in out
    audits = _audits(out)
    assert [a["action"] for a in audits] == [
        "POST /admin/v1/tenants/{tenant_id}/keys",
        "POST /admin/v1/tenants/{tenant_id}/keys",
        "GET /admin/v1/tenants/{tenant_id}/keys",
        "POST /admin/v1/keys/{key_id}/revoke",
        "GET /admin/v1/tenants/{tenant_id}/keys",
    ]
    assert {a["tenant_id"] for a in audits} == {tenant.tenant_id}  # revoke names the key's tenant


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at", "invalid_value"),
        ({"expires_at": "soon"}, "expires_at", "invalid_value"),
        ({"expiry": 3}, "expiry", "unknown_parameter"),
    ],
)
def test_bad_key_requests_are_400s_that_name_the_parameter(svc, body, param, code):
    tenant = svc.directory.create_tenant("acme")
    status, _, error = _call("POST", "/admin/v1/tenants/{tenant_id}/keys", body, tenant_id=tenant.tenant_id)
    assert status == 400 and set(error["error"]) == ENVELOPE_KEYS
    assert (error["error"]["param"], error["error"]["code"]) == (param, code)
    assert str(body[param]) not in error["error"]["message"]  # the input is never echoed
    assert svc.directory.list_keys(tenant.tenant_id) == []


def test_tenants_page_through_every_tenant_once(svc):
    created = {svc.directory.create_tenant(f"t{i}").tenant_id for i in range(7)}
    seen, after = [], None
    while True:
        status, _, page = _call("GET", "/admin/v1/tenants", query={"limit": "3"} | ({"after": after} if after else {}))
        assert status == 200 and len(page["data"]) <= 3
        seen += [t["tenant_id"] for t in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert sorted(seen) == sorted(created)
    status, _, error = _call("GET", "/admin/v1/tenants", query={"after": "tnt_unknown"})
    assert status == 400 and error["error"]["param"] == "after"
    status, _, error = _call("GET", "/admin/v1/tenants", query={"limit": "1000"})
    assert status == 400 and error["error"]["param"] == "limit"


def test_suspend_limits_budget_and_unknown_tenants(svc):
    tenant = svc.directory.create_tenant("acme")
    status, _, body = _call("POST", "/admin/v1/tenants/{tenant_id}/suspend", tenant_id=tenant.tenant_id)
    assert status == 200 and body["status"] == "suspended"
    assert svc.directory.get_tenant(tenant.tenant_id).status == "suspended"
    _call("POST", "/admin/v1/tenants/{tenant_id}/activate", tenant_id=tenant.tenant_id)
    assert svc.directory.get_tenant(tenant.tenant_id).status == "active"

    status, _, body = _call(
        "POST", "/admin/v1/tenants/{tenant_id}/limits", {"images_per_day": 42}, tenant_id=tenant.tenant_id
    )
    assert status == 200 and body["images_per_day"] == 42
    status, _, error = _call("POST", "/admin/v1/tenants/{tenant_id}/limits", {}, tenant_id=tenant.tenant_id)
    assert status == 400 and error["error"]["code"] == "missing_required_parameter"
    status, _, error = _call(
        "POST", "/admin/v1/tenants/{tenant_id}/limits", {"images_per_day": 0}, tenant_id=tenant.tenant_id
    )
    assert status == 400 and error["error"]["param"] == "images_per_day"

    status, _, body = _call(
        "POST",
        "/admin/v1/tenants/{tenant_id}/budget",
        {"monthly_usd": 12.5, "soft_percent": 90},
        tenant_id=tenant.tenant_id,
    )
    assert (status, body["monthly_budget_usd"], body["budget_soft_percent"]) == (200, 12.5, 90)
    assert svc.directory.get_tenant(tenant.tenant_id).limits.monthly_budget_micro_usd == 12_500_000
    status, _, body = _call(
        "POST", "/admin/v1/tenants/{tenant_id}/budget", {"monthly_usd": None}, tenant_id=tenant.tenant_id
    )
    assert status == 200 and body["monthly_budget_usd"] is None

    for method, path in [
        ("GET", "/admin/v1/tenants/{tenant_id}"),
        ("POST", "/admin/v1/tenants/{tenant_id}/suspend"),
        ("GET", "/admin/v1/tenants/{tenant_id}/keys"),
        ("POST", "/admin/v1/tenants/{tenant_id}/keys"),
    ]:
        status, _, error = _call(method, path, tenant_id="tnt_missing")
        assert status == 404 and error["error"]["code"] == "not_found", (method, path)
    status, _, error = _call("POST", "/admin/v1/keys/{key_id}/revoke", key_id="key_missing")
    assert status == 404


def _record(svc, tenant_id: str, request_id: str, day: str, cost: float) -> None:
    svc.meter.record(
        UsageEvent(
            request_id=request_id,
            tenant_id=tenant_id,
            operation="generate",
            model="local-image",
            size="256x256",
            quality="medium",
            images=2,
            input_text_tokens=10,
            input_image_tokens=0,
            output_tokens=100,
            cost_usd=cost,
            at=datetime.fromisoformat(f"{day}T12:00:00+00:00"),
        )
    )


def test_the_billing_export_covers_every_tenant_or_one_as_json_or_csv(svc):
    first, second = svc.directory.create_tenant("a"), svc.directory.create_tenant("b")
    _record(svc, first.tenant_id, "r1", "2026-11-03", 0.021145)
    _record(svc, first.tenant_id, "r2", "2026-11-03", 0.5)
    _record(svc, second.tenant_id, "r3", "2026-11-04", 0.00002)
    _record(svc, second.tenant_id, "r4", "2026-12-01", 1.0)  # outside the range
    window = {"start_date": "2026-11-01", "end_date": "2026-11-30"}

    status, _, every = _call("GET", "/admin/v1/usage", query=window)
    assert status == 200
    rows = {(r["tenant_id"], r["date"]): r for r in every["data"]}
    assert set(rows) == {(first.tenant_id, "2026-11-03"), (second.tenant_id, "2026-11-04")}
    assert rows[(first.tenant_id, "2026-11-03")]["requests"] == 2
    assert rows[(first.tenant_id, "2026-11-03")]["cost_usd"] == pytest.approx(0.521145)

    status, headers, text = _call(
        "GET", "/admin/v1/usage", query=window | {"tenant_id": second.tenant_id, "format": "csv"}
    )
    assert status == 200 and headers["content-type"].startswith("text/csv")
    lines = text.splitlines()
    assert lines[0] == "tenant_id,date,model,requests,images,input_tokens,output_tokens,cost_usd"
    assert lines[1:] == [f"{second.tenant_id},2026-11-04,local-image,1,2,10,100,0.000020"]  # never 2e-05

    status, _, error = _call("GET", "/admin/v1/usage", query={"start_date": "2026-11-31"})
    assert status == 400 and error["error"]["param"] == "start_date"
    status, _, error = _call("GET", "/admin/v1/usage", query={"tenant_id": "tnt_missing"})
    assert status == 404


def test_every_answer_is_the_shape_docs_admin_openapi_documents(svc):
    """darkroom.admin builds the answers as dicts; the admin OpenAPI document declares their models, which forbid
    any field they do not name: an answer that drifted from its documented shape fails here."""
    from darkroom.api.admin import KeyList, KeyObject, TenantList, TenantObject, UsageExport

    status, _, tenant = invoke("admin", load_event("admin-create-tenant"))
    assert status == 200
    TenantObject.model_validate(tenant)
    tenant_id = tenant["tenant_id"]
    TenantList.model_validate(_call("GET", "/admin/v1/tenants", query={"limit": "5"})[2])
    for method, path, body in [
        ("GET", "/admin/v1/tenants/{tenant_id}", None),
        ("POST", "/admin/v1/tenants/{tenant_id}/suspend", None),
        ("POST", "/admin/v1/tenants/{tenant_id}/activate", None),
        ("POST", "/admin/v1/tenants/{tenant_id}/limits", {"images_per_day": 9}),
        ("POST", "/admin/v1/tenants/{tenant_id}/budget", {"monthly_usd": 3}),
    ]:
        TenantObject.model_validate(_call(method, path, body, tenant_id=tenant_id)[2])
    issued = KeyObject.model_validate(_call("POST", "/admin/v1/tenants/{tenant_id}/keys", tenant_id=tenant_id)[2])
    assert issued.key is not None
    listed = KeyList.model_validate(_call("GET", "/admin/v1/tenants/{tenant_id}/keys", tenant_id=tenant_id)[2])
    assert [k.key for k in listed.data] == [None]
    KeyObject.model_validate(_call("POST", "/admin/v1/keys/{key_id}/revoke", key_id=issued.key_id)[2])
    _record(svc, tenant_id, "r1", datetime.now(UTC).date().isoformat(), 0.5)
    export = UsageExport.model_validate(_call("GET", "/admin/v1/usage", query={"tenant_id": tenant_id})[2])
    assert [row.tenant_id for row in export.data] == [tenant_id]
