"""Per-tenant admission under real concurrency: parallel SDK calls through the HTTP bridge and its
worker processes, all racing on the same rate-limit window in the embedded DynamoDB."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

pytestmark = pytest.mark.e2e

MODEL = "local-image"


@pytest.fixture(scope="module")
def warm_generate(stack):
    """Have the bridge start its generate containers before any timed burst (spawning them is slow)."""
    import httpx

    def refused(_):  # unauthenticated: reaches a container, touches no tenant's windows
        return httpx.post(f"{stack['OPENAI_BASE_URL']}/images/generations", json={"prompt": "x"}, timeout=120)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert {r.status_code for r in pool.map(refused, range(8))} == {401}


def _burst(client: openai.OpenAI, requests: int, n: int) -> list:
    """``requests`` simultaneous generations; each result is an ImagesResponse or a RateLimitError."""

    def one(index: int):
        try:
            return client.images.generate(model=MODEL, prompt=f"burst {index}", size="256x256", n=n)
        except openai.RateLimitError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=requests) as pool:
        return list(pool.map(one, range(requests)))


def _burst_in_one_minute(make_tenant, fresh_minute, images_per_minute: int, requests: int, n: int, then=None):
    """(tenant, results) of a burst that started and ended inside one per-minute window.

    A burst straddling a minute boundary would legitimately admit more; it is redone (once) with a
    new tenant rather than reported as a failure. ``then(client)`` runs right after, in the same window.
    """
    for _attempt in range(2):
        tenant = make_tenant(images_per_minute=images_per_minute)
        client = tenant.client()
        fresh_minute()
        started = time.time()
        results = _burst(client, requests, n)
        if then is not None:
            results.append(then(client))
        if int(started // 60) == int(time.time() // 60):
            return tenant, results
    pytest.fail("two bursts in a row straddled a minute boundary; the machine is too slow for this test")


def _split(results: list) -> tuple[list, list[openai.RateLimitError]]:
    ok = [r for r in results if not isinstance(r, openai.RateLimitError)]
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    return ok, limited


def _check_rate_limited(exc: openai.RateLimitError, error_body, n: int) -> None:
    assert exc.status_code == 429
    error = error_body(exc.response)
    assert error["code"] == "rate_limit_exceeded"
    assert exc.code == "rate_limit_exceeded"
    retry_after = exc.response.headers.get("retry-after")
    assert retry_after is not None, dict(exc.response.headers)
    assert 1 <= int(retry_after) <= 60
    # The headers say why: fewer images left in the window than this request needs.
    assert exc.response.headers.get("x-ratelimit-limit-images") == "5"
    assert int(exc.response.headers["x-ratelimit-remaining-images"]) < n


def test_parallel_requests_admit_exactly_the_limit(make_tenant, fresh_minute, warm_generate, usage_totals, error_body):
    def one_more(client):
        with pytest.raises(openai.RateLimitError) as caught:
            client.images.generate(model=MODEL, prompt="one more", size="256x256", n=1)
        return caught.value

    tenant, results = _burst_in_one_minute(
        make_tenant, fresh_minute, images_per_minute=5, requests=16, n=1, then=one_more
    )
    after = results.pop()
    ok, limited = _split(results)
    assert (len(ok), len(limited)) == (5, 11)
    # Refused requests are refused whole: they hold no place in the requests-per-minute window either
    # (5 admitted + this one, at most; 17 if the refused ones had kept theirs).
    requests_limit = int(after.response.headers["x-ratelimit-limit-requests"])
    assert int(after.response.headers["x-ratelimit-remaining-requests"]) >= requests_limit - 6
    for response in ok:
        assert len(response.data) == 1 and response.data[0].b64_json
    for exc in limited:
        _check_rate_limited(exc, error_body, n=1)

    usage = usage_totals(tenant.tenant_id)
    assert usage["images"] == 5
    assert usage["requests"] == 5


def test_parallel_multi_image_requests_are_admitted_whole(
    make_tenant, fresh_minute, warm_generate, usage_totals, error_body
):
    tenant, results = _burst_in_one_minute(make_tenant, fresh_minute, images_per_minute=5, requests=8, n=2)
    ok, limited = _split(results)
    # 2 requests of 2 images fit in 5; a third would need 6. A refused request must not hold its images.
    assert (len(ok), len(limited)) == (2, 6)
    assert sum(len(r.data) for r in ok) == 4
    for exc in limited:
        _check_rate_limited(exc, error_body, n=2)

    usage = usage_totals(tenant.tenant_id)
    assert usage["images"] == 4
    assert usage["requests"] == 2


def test_request_larger_than_the_limit_is_400(make_tenant, usage_totals):
    tenant = make_tenant(images_per_minute=5)
    client = tenant.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=MODEL, prompt="too many", size="256x256", n=6)
    assert caught.value.status_code == 400
    assert caught.value.param == "n"
    # ...and it consumed nothing: the whole limit is still there for one request.
    result = client.images.generate(model=MODEL, prompt="exactly the limit", size="256x256", n=5)
    assert len(result.data) == 5
    usage = usage_totals(tenant.tenant_id)
    assert (usage["requests"], usage["images"]) == (1, 5)
