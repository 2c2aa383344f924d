"""UsageFunction in-process with moto: GET /v1/usage, replaying events/usage.json."""

import json
from datetime import UTC, datetime

import pytest

from darkroom.metering import UsageEvent
from lambda_harness import EVENT_KEY, invoke, load_event

OTHER_KEY = "dk-otherKEYotherKEYotherKEYotherKEYotherKEY012"
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def _as(event: dict, key: str) -> dict:
    event["headers"]["authorization"] = f"Bearer {key}"
    event["multiValueHeaders"]["authorization"] = [f"Bearer {key}"]
    return event


def _generate(key: str, request_id: str, **body) -> dict:
    event = _as(load_event("generate"), key)
    event["requestContext"]["requestId"] = request_id
    event["body"] = json.dumps(json.loads(event["body"]) | body)
    status, _, answer = invoke("generate", event)
    assert status == 200, answer
    return answer["usage"]


def _usage(key: str, **query) -> tuple[int, dict]:
    event = _as(load_event("usage"), key)
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
    status, _, body = invoke("usage", event)
    return status, body


def _record(
    svc,
    tenant_id: str,
    request_id: str,
    day: str,
    model: str = "local-image",
    images: int = 1,
    cost_usd: float = 0.01,
    input_tokens: int = 10,
    output_tokens: int = 100,
) -> None:
    assert svc.meter.record(
        UsageEvent(
            request_id=request_id,
            tenant_id=tenant_id,
            operation="generate" if images else "text",
            model=model,
            size="512x512",
            quality="medium",
            images=images,
            input_text_tokens=input_tokens,
            input_image_tokens=0,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            at=datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC),
        )
    )


@pytest.fixture
def other(svc):
    from darkroom.tenancy import Limits

    created = svc.directory.create_tenant(
        "globex", Limits(images_per_minute=20, images_per_day=100, requests_per_minute=30)
    )
    svc.directory.issue_key(created.tenant_id, secret=OTHER_KEY)
    return created


def test_each_tenant_sees_only_its_own_generations(tenant, other, svc):
    first = _generate(EVENT_KEY, "req-a1")
    second = _generate(EVENT_KEY, "req-a2", n=2)
    _generate(EVENT_KEY, "req-a2", n=2)  # the same request id again: counted once
    theirs = _generate(OTHER_KEY, "req-b1", n=3)

    today = datetime.now(UTC).date().isoformat()
    status, mine = _usage(EVENT_KEY)
    assert status == 200 and mine["object"] == "list" and mine["end_date"] == today
    (row,) = mine["data"]
    assert row == {
        "object": "usage.day",
        "date": today,
        "model": "local-image",
        "requests": 2,
        "images": 3,
        "input_tokens": first["input_tokens"] + second["input_tokens"],
        "output_tokens": first["output_tokens"] + second["output_tokens"],
        "cost_usd": row["cost_usd"],
    }
    records = svc.meter.records(tenant.tenant_id)
    assert row["cost_usd"] == sum(int(r["cost_micro_usd"]) for r in records) / 1e6 and row["cost_usd"] > 0
    assert mine["totals"] == {k: row[k] for k in ("requests", "images", "input_tokens", "output_tokens", "cost_usd")}

    status, yours = _usage(OTHER_KEY, tenant_id=tenant.tenant_id)  # a tenant id in the query changes nothing
    assert status == 200
    (row,) = yours["data"]
    assert (row["requests"], row["images"], row["output_tokens"]) == (1, 3, theirs["output_tokens"])
    assert yours["totals"]["images"] == 3


def test_rows_by_date_then_model_within_the_dates_of_the_replayed_event(tenant, other, svc):
    """events/usage.json asks for 2026-11-01..2026-11-30: both ends count, the days beside them do not."""
    _record(svc, tenant.tenant_id, "r0", "2026-10-31")
    _record(svc, tenant.tenant_id, "r1", "2026-11-01", images=2, cost_usd=0.021145)
    _record(svc, tenant.tenant_id, "r2", "2026-11-22", model="local-text", images=0, cost_usd=0.0005)
    _record(svc, tenant.tenant_id, "r3", "2026-11-22", images=4, cost_usd=0.08)
    _record(svc, tenant.tenant_id, "r4", "2026-11-22", images=1, cost_usd=0.02, output_tokens=50)
    _record(svc, tenant.tenant_id, "r5", "2026-11-30")
    _record(svc, tenant.tenant_id, "r6", "2026-12-01")
    _record(svc, other.tenant_id, "r7", "2026-11-22", images=9)  # another tenant, same day

    status, headers, body = invoke("usage", load_event("usage"))
    assert status == 200 and headers["x-request-id"] == load_event("usage")["requestContext"]["requestId"]
    assert (body["start_date"], body["end_date"]) == ("2026-11-01", "2026-11-30")
    rows = [
        (r["date"], r["model"], r["requests"], r["images"], r["output_tokens"], r["cost_usd"]) for r in body["data"]
    ]
    assert rows == [
        ("2026-11-01", "local-image", 1, 2, 100, 0.021145),
        ("2026-11-22", "local-image", 2, 5, 150, 0.1),
        ("2026-11-22", "local-text", 1, 0, 100, 0.0005),
        ("2026-11-30", "local-image", 1, 1, 100, 0.01),
    ]
    assert body["totals"] == {
        "requests": 5,
        "images": 8,
        "input_tokens": 50,
        "output_tokens": 450,
        "cost_usd": 0.131645,
    }

    status, body = _usage(EVENT_KEY, start_date="2026-11-22", end_date="2026-11-22")
    assert status == 200 and [r["model"] for r in body["data"]] == ["local-image", "local-text"]
    status, body = _usage(EVENT_KEY, start_date="2026-12-01", end_date="2027-01-15")
    assert status == 200 and [r["date"] for r in body["data"]] == ["2026-12-01"]


def test_default_window_is_30_days_ending_today(tenant, svc):
    today = datetime.now(UTC).date()
    _record(svc, tenant.tenant_id, "old", (today.fromordinal(today.toordinal() - 30)).isoformat())
    _record(svc, tenant.tenant_id, "edge", (today.fromordinal(today.toordinal() - 29)).isoformat(), images=2)
    status, body = _usage(EVENT_KEY)
    assert status == 200
    assert body["start_date"] == today.fromordinal(today.toordinal() - 29).isoformat()
    assert [r["images"] for r in body["data"]] == [2]
    status, body = _usage(EVENT_KEY, end_date="2026-11-30")
    assert (body["start_date"], body["end_date"]) == ("2026-11-01", "2026-11-30")


@pytest.mark.parametrize(
    "query,param,code",
    [
        ({"start_date": "2026-13-01"}, "start_date", "invalid_value"),
        ({"start_date": "2026-02-30", "end_date": "2026-03-01"}, "start_date", "invalid_value"),
        ({"end_date": "20261122"}, "end_date", "invalid_value"),  # ISO basic format: not YYYY-MM-DD
        ({"end_date": "2026-W47-1"}, "end_date", "invalid_value"),
        ({"start_date": ""}, "start_date", "invalid_value"),
        ({"start_date": "yesterday"}, "start_date", "invalid_value"),
        ({"start_date": "2026-11-23", "end_date": "2026-11-22"}, "start_date", "invalid_date_range"),
        ({"start_date": "2025-11-29", "end_date": "2026-11-30"}, "start_date", "invalid_date_range"),  # 367 days
        ({"start_date": "2000-01-01"}, "start_date", "invalid_date_range"),
    ],
)
def test_bad_dates_are_400_naming_the_parameter(tenant, query, param, code):
    status, body = _usage(EVENT_KEY, **query)
    assert status == 400 and set(body["error"]) == ENVELOPE_KEYS
    assert (body["error"]["param"], body["error"]["code"], body["error"]["type"]) == (
        param,
        code,
        "invalid_request_error",
    )
    for value in query.values():
        assert not value or value not in body["error"]["message"]  # names the parameter, never echoes the value


def test_366_days_and_the_earliest_day_are_accepted(tenant):
    status, body = _usage(EVENT_KEY, start_date="2025-11-30", end_date="2026-11-30")
    assert status == 200 and body["data"] == []
    status, body = _usage(EVENT_KEY, end_date="0001-01-05")
    assert status == 200 and body["start_date"] == "0001-01-01"


def test_usage_needs_a_key(tenant):
    event = load_event("usage")
    event["headers"]["authorization"] = "Bearer nope"
    event["multiValueHeaders"]["authorization"] = ["Bearer nope"]
    status, _, body = invoke("usage", event)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_a_client_chosen_request_id_cannot_make_a_request_look_like_a_retry(tenant, svc):
    """A caller can set API Gateway's requestId (x-amzn-RequestId); extendedRequestId it cannot. Two
    requests that replay one requestId are two requests: both are billed, each under its own id."""
    ids = []
    for extended in ("Xa1bC2dEFAAA=", "Xa1bC2dEFBBB="):
        event = _as(load_event("generate"), EVENT_KEY)
        event["requestContext"]["requestId"] = "c0ffee00-0000-4000-8000-000000000000"  # the same, forged
        event["requestContext"]["extendedRequestId"] = extended
        status, headers, answer = invoke("generate", event)
        assert status == 200, answer
        ids.append(headers["x-request-id"])
    assert ids == ["Xa1bC2dEFAAA=", "Xa1bC2dEFBBB="]
    assert sorted(r["request_id"] for r in svc.meter.records(tenant.tenant_id)) == ids
