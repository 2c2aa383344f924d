"""GET /v1/usage and `darkroom usage --csv` against `darkroom serve`: a fresh tenant's generations, the same numbers."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

pytestmark = pytest.mark.e2e

NUMBERS = ("requests", "images", "input_tokens", "output_tokens")


def test_usage_shows_the_generated_images_in_the_api_and_the_cli(make_tenant, cli, base_url):
    tenant, other = make_tenant(), make_tenant()
    result = tenant.client().images.generate(
        model="local-image", prompt="two lighthouses at dusk", size="256x256", n=2, response_format="url"
    )
    assert len(result.data) == 2 and result.usage.output_tokens > 0

    response = httpx.get(f"{base_url}/usage", headers=tenant.headers(), timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    (row,) = body["data"]
    assert row["object"] == "usage.day" and row["model"] == "local-image"
    assert body["start_date"] <= row["date"] == body["end_date"]  # today (UTC), the window's last day
    assert (row["requests"], row["images"]) == (1, 2)
    assert (row["input_tokens"], row["output_tokens"]) == (result.usage.input_tokens, result.usage.output_tokens)
    assert row["cost_usd"] > 0 and body["totals"] == {k: row[k] for k in (*NUMBERS, "cost_usd")}

    done = cli("usage", tenant.tenant_id, "--csv")
    (printed,) = list(csv.DictReader(io.StringIO(done.stdout)))
    assert (printed["date"], printed["model"]) == (row["date"], row["model"])
    assert {k: int(printed[k]) for k in NUMBERS} == {k: row[k] for k in NUMBERS}
    assert float(printed["cost_usd"]) == row["cost_usd"]

    # Another tenant's key sees none of it, whatever it asks for.
    response = httpx.get(
        f"{base_url}/usage",
        headers=other.headers(),
        timeout=60,
        params={"start_date": body["start_date"], "end_date": body["end_date"], "tenant_id": tenant.tenant_id},
    )
    assert response.status_code == 200 and response.json()["data"] == []


def test_organization_usage_and_costs_through_the_openai_sdk(make_tenant, base_url):
    """The openai SDK's admin usage calls, pointed at darkroom with a tenant key: arrays go as group_by[]=..."""
    import time

    tenant, other = make_tenant(), make_tenant()
    start = int(time.time()) - 3600
    tenant.client().images.generate(model="local-image", prompt="a red kite", size="256x256", n=2)
    tenant.client().images.generate(model="local-image", prompt="a blue kite", size="512x512")
    admin = tenant.client(admin_api_key=tenant.key).admin.organization

    page = admin.usage.images(start_time=start, bucket_width="1h", group_by=["model", "size", "api_key_id"])
    assert page.has_more is False and len(page.data) in (1, 2)  # the hour before now, and now's
    results = sorted((r for b in page.data for r in b.results), key=lambda r: r.size)
    assert [(r.model, r.size, r.images, r.num_model_requests) for r in results] == [
        ("local-image", "256x256", 2, 1),
        ("local-image", "512x512", 1, 1),
    ]
    assert {r.api_key_id for r in results} == {tenant.key_id} and {r.source for r in results} == {None}

    spent = admin.usage.costs(start_time=start, group_by=["line_item"])
    spent_results = [r for b in spent.data for r in b.results]  # one day's, or two across midnight (UTC)
    assert {(r.line_item, r.amount.currency, r.quantity_unit) for r in spent_results} == {
        ("local-image, image.generation", "usd", "images")
    }
    assert sum(r.quantity or 0 for r in spent_results) == 3 and all(r.amount.value > 0 for r in spent_results)

    # Another tenant's key sees none of it; a minute's buckets are refused: darkroom records hours.
    theirs = other.client(admin_api_key=other.key).admin.organization.usage.images(start_time=start)
    assert all(b.results == [] for b in theirs.data)
    refused = httpx.get(
        f"{base_url}/organization/usage/images",
        headers=tenant.headers(),
        params={"start_time": start, "bucket_width": "1m"},
        timeout=60,
    )
    assert refused.status_code == 400
    assert (refused.json()["error"]["param"], refused.json()["error"]["code"]) == ("bucket_width", "unsupported_value")
