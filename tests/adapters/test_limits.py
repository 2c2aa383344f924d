import threading

import pytest

from darkroom.api.errors import InvalidRequest, RateLimited
from darkroom.limits import RateLimiter
from darkroom.tenancy import Limits, Tenant


def _tenant(**limits) -> Tenant:
    return Tenant(tenant_id="tnt_test", name="t", limits=Limits(**limits))


def _limiter(svc, now: float = 1_800_000_000.0) -> RateLimiter:
    return RateLimiter(svc.limiter._db, svc.settings.rate_limits_table, clock=lambda: now)


def test_admits_up_to_the_image_limit_then_refuses_with_headers(svc):
    limiter = _limiter(svc, now=1_800_000_010.0)
    tenant = _tenant(images_per_minute=5, images_per_day=100, requests_per_minute=100)
    admission = limiter.admit(tenant, 3)
    assert admission.headers()["x-ratelimit-remaining-images"] == "2"
    assert admission.headers()["x-ratelimit-limit-images"] == "5"
    assert admission.headers()["x-ratelimit-reset-images"] == "50s"
    limiter.admit(tenant, 2)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(tenant, 1)
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    assert refused.value.headers["retry-after"] == "50"
    assert refused.value.headers["x-ratelimit-remaining-images"] == "0"


def test_a_request_is_admitted_whole_or_refused_whole(svc):
    limiter = _limiter(svc)
    tenant = _tenant(images_per_minute=5, images_per_day=100, requests_per_minute=100)
    limiter.admit(tenant, 4)
    with pytest.raises(RateLimited):
        limiter.admit(tenant, 2)  # 6 > 5: nothing of it is counted
    assert limiter.admit(tenant, 1).headers()["x-ratelimit-remaining-images"] == "0"


def test_refusal_by_a_later_window_gives_back_the_earlier_ones(svc):
    limiter = _limiter(svc)
    tenant = _tenant(images_per_minute=10, images_per_day=3, requests_per_minute=100)
    limiter.admit(tenant, 3)
    with pytest.raises(RateLimited):
        limiter.admit(tenant, 1)  # the day window refuses after the minute windows counted
    # The minute windows were given back: with room in the day, the next image is the 4th of the
    # minute and the 2nd request, not the 5th image and 3rd request.
    headers = limiter.admit(_tenant(images_per_minute=10, images_per_day=100, requests_per_minute=100), 1).headers()
    assert headers["x-ratelimit-remaining-images"] == str(10 - 4)
    assert headers["x-ratelimit-remaining-requests"] == str(100 - 2)


def test_requests_per_minute_counts_requests_not_images(svc):
    limiter = _limiter(svc)
    tenant = _tenant(images_per_minute=100, images_per_day=100, requests_per_minute=2)
    limiter.admit(tenant, 5)
    limiter.admit(tenant, 5)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(tenant, 1)
    assert refused.value.type == "requests"


def test_windows_reset_when_the_minute_turns(svc):
    tenant = _tenant(images_per_minute=1, images_per_day=100, requests_per_minute=100)
    _limiter(svc, now=1_800_000_059.0).admit(tenant, 1)
    with pytest.raises(RateLimited):
        _limiter(svc, now=1_800_000_059.5).admit(tenant, 1)
    _limiter(svc, now=1_800_000_060.0).admit(tenant, 1)


def test_a_request_larger_than_the_limit_is_a_400_not_a_429(svc):
    with pytest.raises(InvalidRequest) as error:
        _limiter(svc).admit(_tenant(images_per_minute=5), 6)
    assert error.value.param == "n"


def test_concurrent_admissions_never_exceed_the_limit(svc):
    """32 threads race for 7 images: exactly 7 are admitted (DynamoDB conditional updates)."""
    limiter = _limiter(svc)
    tenant = _tenant(images_per_minute=7, images_per_day=1000, requests_per_minute=1000)
    admitted, refused = [], []
    barrier = threading.Barrier(32)

    def race():
        barrier.wait()
        try:
            limiter.admit(tenant, 1)
            admitted.append(1)
        except RateLimited:
            refused.append(1)

    threads = [threading.Thread(target=race) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(admitted), len(refused)) == (7, 25)
