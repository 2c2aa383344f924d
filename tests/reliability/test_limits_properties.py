"""The rate limiter under generated concurrent interleavings (moto, in-process).

For a generated pair of image limits (per minute, per day) and a list of request sizes fired from
several threads at once: admitted images never exceed either limit, every admitted request was
counted whole in every window (the stored counts equal the admitted sums exactly, so no give-back
leaked or double-counted), a batch that fits is admitted entirely, and refunding every admission
returns every window to zero.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darkroom.api.errors import RateLimited
from darkroom.limits import RateLimiter
from darkroom.tenancy import Limits, Tenant

pytestmark = pytest.mark.reliability

NOW = 1_800_000_010.0  # a fixed clock: every request of an example lands in the same windows
THREADS = 4


@st.composite
def scenarios(draw):
    per_minute = draw(st.integers(1, 12))
    per_day = draw(st.integers(1, 16))
    sizes = draw(st.lists(st.integers(1, min(per_minute, per_day)), min_size=1, max_size=10))
    return per_minute, per_day, sizes


@given(scenario=scenarios())
@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_concurrent_admissions_never_pass_a_limit_and_refunds_are_exact(svc, counts, scenario):
    per_minute, per_day, sizes = scenario
    tenant = Tenant(
        tenant_id=f"tnt_{uuid.uuid4().hex[:16]}",
        name="prop",
        limits=Limits(images_per_minute=per_minute, images_per_day=per_day, requests_per_minute=1000),
    )
    limiter = RateLimiter(svc.limiter._db, svc.settings.rate_limits_table, clock=lambda: NOW)
    start = threading.Barrier(min(THREADS, len(sizes)))

    def attempt(index: int):
        if index < THREADS:
            start.wait(timeout=10)  # the first wave leaves together
        try:
            return sizes[index], limiter.admit(tenant, sizes[index])
        except RateLimited:
            return sizes[index], None

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outcomes = list(pool.map(attempt, range(len(sizes))))

    admitted = [(size, admission) for size, admission in outcomes if admission is not None]
    total = sum(size for size, _ in admitted)
    assert total <= min(per_minute, per_day), (scenario, total)
    for size, admission in admitted:
        # Whole: every window that counts images took exactly the request's size, the requests window 1.
        amounts = sorted(amount for _, amount in admission.taken)
        assert amounts == sorted([1, size, size]), (size, admission.taken)
    if sum(sizes) <= min(per_minute, per_day):
        assert len(admitted) == len(sizes), "a batch that fits must be admitted entirely"
    assert admitted, "the first request to reach the table always fits"

    stored = counts(tenant.tenant_id)
    assert stored.get("images#60", 0) == total and stored.get("images#86400", 0) == total, stored
    assert stored.get("requests#60", 0) == len(admitted), stored  # refused requests gave theirs back

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(lambda pair: limiter.refund(pair[1]), admitted))
    assert set(counts(tenant.tenant_id).values()) <= {0}, counts(tenant.tenant_id)

    # After the refunds the full limit is available again, in one piece.
    whole = limiter.admit(tenant, min(per_minute, per_day))
    assert whole.headers()["x-ratelimit-remaining-images"] == "0"
