"""UsageFunction in-process with moto: GET /v1/organization/usage/images and GET /v1/organization/costs."""

import calendar
from datetime import UTC, datetime

import pytest
from test_usage_handler import OTHER_KEY, _as, _generate, other  # noqa: F401 - other: a fixture

from darkroom.metering import UsageEvent
from lambda_harness import EVENT_KEY, invoke, load_event
from openai_conformance import validator

SECOND_KEY = "dk-secondKEYsecondKEYsecondKEYsecondKEYsecondK"
ENVELOPE_KEYS = {"message", "type", "param", "code"}
DAY = 86400
NOV_22 = calendar.timegm((2026, 11, 22, 0, 0, 0))
IMAGES = "/v1/organization/usage/images"
COSTS = "/v1/organization/costs"
SCHEMAS = {IMAGES: "usage.json#/$defs/UsageImagesResponse", COSTS: "usage.json#/$defs/UsageCostsResponse"}
SPEC_WORDS = {"1m", "1h", "1d", "model", "line_item"}  # values a refusal may name: the spec's, not the caller's


def _get(path: str, key: str = EVENT_KEY, **query) -> tuple[int, dict]:
    """GET ``path``; a list value is sent repeated (``name=a&name=b``), a ``name[]`` key as the openai SDK sends it."""
    event = _as(load_event("usage"), key)
    event["path"] = event["resource"] = event["requestContext"]["resourcePath"] = path
    multi = {
        name: [str(v) for v in value] if isinstance(value, list) else [str(value)] for name, value in query.items()
    }
    event["multiValueQueryStringParameters"] = multi or None
    event["queryStringParameters"] = {name: values[-1] for name, values in multi.items()} or None
    status, _, body = invoke("usage", event)
    if status == 200:  # every answer in OpenAI's shape (tests/schemas/openai/usage.json)
        assert list(validator(SCHEMAS[path]).iter_errors(body)) == [], body
    return status, body


def _record(svc, tenant_id: str, request_id: str, at: datetime, **changes) -> None:
    kind = dict(operation="generate", model="local-image", size="512x512", quality="medium", images=1)
    tokens = dict(input_text_tokens=10, input_image_tokens=0, output_tokens=100)
    values = dict(request_id=request_id, tenant_id=tenant_id, at=at, cost_usd=0.01, key_id="key_a") | kind | tokens
    assert svc.meter.record(UsageEvent(**values | changes))


def _key_ids(svc, tenant_id: str) -> set[str]:
    return {key.key_id for key in svc.directory.list_keys(tenant_id)}


@pytest.mark.usefixtures("other")
def test_generations_show_up_for_their_own_tenant_and_key_only(tenant, svc):
    second, _ = svc.directory.issue_key(tenant.tenant_id, secret=SECOND_KEY)
    _generate(EVENT_KEY, "req-a1")
    _generate(EVENT_KEY, "req-a2", n=2)
    _generate(EVENT_KEY, "req-a2", n=2)  # the same request id again: counted once
    _generate(SECOND_KEY, "req-a3", n=3)
    _generate(OTHER_KEY, "req-b1", n=4)
    now = int(datetime.now(UTC).timestamp())

    status, page = _get(IMAGES, start_time=now - 3600, bucket_width="1h", group_by=["api_key_id", "source"])
    assert status == 200, page
    assert page["object"] == "page" and page["has_more"] is False and page["next_page"] is None
    results = [r for bucket in page["data"] for r in bucket["results"]]
    by_key = {r["api_key_id"]: (r["images"], r["num_model_requests"]) for r in results}
    (first_key,) = _key_ids(svc, tenant.tenant_id) - {second.key_id}
    assert by_key == {first_key: (3, 2), second.key_id: (3, 1)}
    assert {r["source"] for r in results} == {"image.generation"}
    assert all(r["model"] is None and r["size"] is None and r["project_id"] is None for r in results)

    # The other tenant sees only its own, whatever it asks for.
    status, theirs = _get(IMAGES, OTHER_KEY, start_time=now - 3600, api_key_ids=sorted(by_key))
    assert status == 200 and [b["results"] for b in theirs["data"]] == [[]]
    status, theirs = _get(IMAGES, OTHER_KEY, start_time=now - 3600)
    assert [r["images"] for b in theirs["data"] for r in b["results"]] == [4]

    status, spent = _get(COSTS, start_time=now - 60)
    records = svc.meter.records(tenant.tenant_id)
    assert status == 200 and len(records) == 3
    (result,) = [r for b in spent["data"] for r in b["results"]]
    assert result["amount"] == {"value": sum(int(r["cost_micro_usd"]) for r in records) / 1e6, "currency": "usd"}
    assert result["amount"]["value"] > 0


def test_buckets_group_and_filter_by_model_size_and_source(tenant, svc):
    hour = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    _record(svc, tenant.tenant_id, "r1", hour, images=2)
    _record(svc, tenant.tenant_id, "r2", hour, operation="edit", size="1024x1024")
    _record(svc, tenant.tenant_id, "r3", hour.replace(hour=15), model="other-image", images=3)
    _record(svc, tenant.tenant_id, "r4", hour, operation="text", model="local-text", images=0, size="-")
    _record(svc, tenant.tenant_id, "r5", hour.replace(day=24))  # after the window

    start, end = NOV_22 + 1800, NOV_22 + DAY  # start rounds down to the day
    status, page = _get(IMAGES, start_time=start, end_time=end)
    assert status == 200, page
    (bucket,) = page["data"]
    assert (bucket["start_time"], bucket["end_time"]) == (NOV_22, NOV_22 + DAY)
    (total,) = bucket["results"]  # text is not an image source: not counted here
    assert (total["images"], total["num_model_requests"]) == (6, 3)
    assert all(total[f] is None for f in ("source", "size", "model", "api_key_id", "project_id", "user_id"))

    status, page = _get(IMAGES, start_time=start, end_time=end, **{"group_by[]": ["model", "size"]})
    assert status == 200
    rows = [(r["model"], r["size"], r["images"], r["source"]) for r in page["data"][0]["results"]]
    assert rows == [
        ("local-image", "1024x1024", 1, None),
        ("local-image", "512x512", 2, None),
        ("other-image", "512x512", 3, None),
    ]

    status, page = _get(IMAGES, start_time=start, end_time=end, sources="image.edit", bucket_width="1h", limit=24)
    assert status == 200 and len(page["data"]) == 24 and page["has_more"] is False
    filled = {b["start_time"]: b["results"] for b in page["data"] if b["results"]}
    assert list(filled) == [NOV_22 + 9 * 3600]
    assert [r["images"] for r in filled[NOV_22 + 9 * 3600]] == [1]

    status, page = _get(IMAGES, start_time=start, end_time=end, models=["other-image"], sizes=["512x512"])
    assert [r["images"] for r in page["data"][0]["results"]] == [3]


def test_costs_by_line_item_count_text_as_well(tenant, svc):
    hour = datetime(2026, 11, 22, 9, tzinfo=UTC)
    _record(svc, tenant.tenant_id, "r1", hour, images=2, cost_usd=0.021145)
    _record(svc, tenant.tenant_id, "r2", hour, cost_usd=0.000001)
    _record(svc, tenant.tenant_id, "r3", hour, operation="text", model="local-text", images=0, cost_usd=0.0005)
    _record(svc, tenant.tenant_id, "r4", hour.replace(day=23), cost_usd=0.3, key_id=None)

    status, page = _get(COSTS, start_time=NOV_22, end_time=NOV_22 + 2 * DAY, group_by=["line_item", "api_key_id"])
    assert status == 200, page
    first, second = page["data"]
    items = {r["line_item"]: r for r in first["results"]}
    assert set(items) == {"local-image, image.generation", "local-text, responses.text"}
    image = items["local-image, image.generation"]
    assert image["amount"] == {"value": 0.021146, "currency": "usd"}
    assert (image["quantity"], image["quantity_unit"], image["api_key_id"]) == (3, "images", "key_a")
    text = items["local-text, responses.text"]
    assert text["amount"]["value"] == 0.0005 and text["quantity"] is None and text["quantity_unit"] is None
    (late,) = second["results"]
    assert late["api_key_id"] is None and late["amount"]["value"] == 0.3

    status, page = _get(COSTS, start_time=NOV_22, end_time=NOV_22 + DAY, api_key_ids="key_a", group_by="project_id")
    assert status == 200
    (only,) = page["data"][0]["results"]
    assert only["project_id"] is None and only["amount"]["value"] == 0.021646


def test_pages_follow_next_page_to_the_end(tenant, svc):
    for day in range(5):
        _record(svc, tenant.tenant_id, f"r{day}", datetime(2026, 11, 22 + day, 12, tzinfo=UTC), images=day + 1)
    seen, query = [], {"start_time": NOV_22, "end_time": NOV_22 + 5 * DAY, "limit": 2}
    while True:
        status, page = _get(IMAGES, **query)
        assert status == 200, page
        seen += [(b["start_time"], [r["images"] for r in b["results"]]) for b in page["data"]]
        if not page["has_more"]:
            assert page["next_page"] is None
            break
        query["page"] = page["next_page"]
    assert seen == [(NOV_22 + d * DAY, [d + 1]) for d in range(5)]


@pytest.mark.parametrize(
    ("path", "query", "param", "code"),
    [
        (IMAGES, {}, "start_time", "missing_required_parameter"),
        (IMAGES, {"start_time": "yesterday"}, "start_time", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "bucket_width": "1m"}, "bucket_width", "unsupported_value"),
        (IMAGES, {"start_time": NOV_22, "bucket_width": "1w"}, "bucket_width", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "end_time": NOV_22 - 1}, "end_time", "invalid_time_range"),
        (IMAGES, {"start_time": 10**13}, "start_time", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "group_by": "colour"}, "group_by", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "group_by[]": ["model", "line_item"]}, "group_by", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "limit": 32}, "limit", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "bucket_width": "1h", "limit": 169}, "limit", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "limit": 0}, "limit", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "page": "not-a-page-token"}, "page", "invalid_page"),
        (IMAGES, {"start_time": NOV_22, "sources": "image.mystery"}, "sources", "invalid_value"),
        (IMAGES, {"start_time": NOV_22, "project_ids": "proj_1"}, "project_ids", "unsupported_parameter"),
        (IMAGES, {"start_time": NOV_22, "user_ids[]": "user_1"}, "user_ids", "unsupported_parameter"),
        (COSTS, {"start_time": NOV_22, "bucket_width": "1h"}, "bucket_width", "invalid_value"),
        (COSTS, {"start_time": NOV_22, "group_by": "model"}, "group_by", "invalid_value"),
        (COSTS, {"start_time": NOV_22, "limit": 181}, "limit", "invalid_value"),
        (COSTS, {"start_time": NOV_22, "project_ids": "proj_1"}, "project_ids", "unsupported_parameter"),
    ],
)
def test_what_cannot_be_served_is_a_400_that_names_the_parameter(tenant, path, query, param, code):
    status, body = _get(path, **query)
    assert status == 400, body
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS and error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    for value in query.values():  # the input is never echoed back, only the spec's own words are named
        for text in value if isinstance(value, list) else [value]:
            if str(text) not in SPEC_WORDS:
                assert str(text) not in error["message"]


def test_a_page_token_of_another_bucket_width_is_refused(tenant):
    status, page = _get(IMAGES, start_time=NOV_22, end_time=NOV_22 + 3 * DAY, limit=1)
    assert status == 200 and page["has_more"]
    status, body = _get(IMAGES, start_time=NOV_22, end_time=NOV_22 + 3 * DAY, bucket_width="1h", page=page["next_page"])
    assert status == 400 and body["error"]["code"] == "invalid_page"


def test_without_a_key_nothing_is_answered(tenant):
    status, body = _get(IMAGES, "dk-" + "x" * 43, start_time=NOV_22)
    assert status == 401 and "data" not in body


def test_the_schema_refuses_a_result_of_the_other_route_and_a_page_without_next_page():
    bucket = {"object": "bucket", "start_time": 0, "end_time": 1, "results": []}
    cost = {"object": "organization.costs.result", "amount": {"value": 1.0, "currency": "usd"}}
    page = {"object": "page", "data": [bucket | {"results": [cost]}], "has_more": False, "next_page": None}
    assert list(validator(SCHEMAS[COSTS]).iter_errors(page)) == []
    assert list(validator(SCHEMAS[IMAGES]).iter_errors(page)) != []
    assert list(validator(SCHEMAS[COSTS]).iter_errors({k: v for k, v in page.items() if k != "next_page"})) != []
