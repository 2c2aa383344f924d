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
