import time

import pytest

from darkroom.api.errors import InvalidApiKey, NotFound, TenantSuspended
from darkroom.authentication import Authenticator
from darkroom.tenancy import KEY_PATTERN, Limits, hash_key


def test_keys_are_random_256_bit_and_stored_only_as_hash(svc, aws):
    tenant = svc.directory.create_tenant("acme")
    key, secret = svc.directory.issue_key(tenant.tenant_id)
    other = svc.directory.issue_key(tenant.tenant_id)[1]
    assert KEY_PATTERN.match(secret) and secret != other
    assert len(secret) - 3 >= 43  # 43 URL-safe chars = 256 bits
    items = svc.directory._db.scan(TableName=aws.physical_name("TenantsTable"))["Items"]
    dump = repr(items)
    assert secret not in dump and secret[8:] not in dump
    assert hash_key(secret) in dump
    assert key.prefix == secret[:8]


def test_authenticate_returns_the_tenant(svc):
    tenant = svc.directory.create_tenant("acme", Limits(images_per_minute=3))
    _, secret = svc.directory.issue_key(tenant.tenant_id)
    found = svc.authenticator.authenticate(f"Bearer {secret}")
    assert found.tenant_id == tenant.tenant_id and found.limits.images_per_minute == 3


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Basic abc", "Bearer dk-short", "Bearer dk-" + "A" * 43, "bearer sk-" + "A" * 43]
)
def test_missing_malformed_or_unknown_keys_are_401(svc, header):
    with pytest.raises(InvalidApiKey) as error:
        svc.authenticator.authenticate(header)
    assert error.value.status == 401 and error.value.code == "invalid_api_key"


def test_revocation_takes_effect_after_the_cache_ttl(svc):
    now = [1000.0]
    auth = Authenticator(svc.directory, ttl_seconds=30, clock=lambda: now[0])
    tenant = svc.directory.create_tenant("acme")
    key, secret = svc.directory.issue_key(tenant.tenant_id)
    auth.authenticate(f"Bearer {secret}")
    svc.directory.revoke_key(key.key_id)
    now[0] += 29  # still cached: bounded staleness, no table read per request
    auth.authenticate(f"Bearer {secret}")
    now[0] += 2
    with pytest.raises(InvalidApiKey):
        auth.authenticate(f"Bearer {secret}")


def test_suspended_tenant_is_403_and_reactivation_restores_access(svc):
    auth = Authenticator(svc.directory, ttl_seconds=0)
    tenant = svc.directory.create_tenant("acme")
    _, secret = svc.directory.issue_key(tenant.tenant_id)
    svc.directory.set_status(tenant.tenant_id, "suspended")
    with pytest.raises(TenantSuspended) as error:
        auth.authenticate(f"Bearer {secret}")
    assert error.value.status == 403
    svc.directory.set_status(tenant.tenant_id, "active")
    assert auth.authenticate(f"Bearer {secret}").tenant_id == tenant.tenant_id


def test_list_keys_and_tenants(svc):
    first = svc.directory.create_tenant("a")
    second = svc.directory.create_tenant("b")
    svc.directory.issue_key(first.tenant_id)
    svc.directory.issue_key(first.tenant_id)
    svc.directory.issue_key(second.tenant_id)
    assert {t.name for t in svc.directory.list_tenants()} == {"a", "b"}
    assert len(svc.directory.list_keys(first.tenant_id)) == 2
    assert all(k.tenant_id == first.tenant_id for k in svc.directory.list_keys(first.tenant_id))


def test_unknown_ids_are_not_found(svc):
    with pytest.raises(NotFound):
        svc.directory.issue_key("tnt_missing")
    with pytest.raises(NotFound):
        svc.directory.revoke_key("key_missing")
    with pytest.raises(NotFound):
        svc.directory.set_status("tnt_missing", "suspended")


def test_a_key_stops_at_its_expiry_even_while_cached(svc):
    """An expired key is refused like a revoked one (401), at its expiry to the second, cache or no cache."""
    from datetime import UTC, datetime, timedelta

    auth = Authenticator(svc.directory, ttl_seconds=60)
    tenant = svc.directory.create_tenant("acme")
    soon = datetime.now(UTC) + timedelta(seconds=2)
    key, secret = svc.directory.issue_key(tenant.tenant_id, expires_at=soon)
    assert key.expires_at == soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    found = auth.authenticate(f"Bearer {secret}")  # cached for 60 s from here
    assert (found.tenant_id, found.key_id) == (tenant.tenant_id, key.key_id)
    stored = svc.directory.list_keys(tenant.tenant_id)[0]
    assert stored.usable(soon - timedelta(seconds=1)) and not stored.usable(soon + timedelta(seconds=1))
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 1.0)
    with pytest.raises(InvalidApiKey):  # the cached lookup is still fresh; the expiry is checked anyway
        auth.authenticate(f"Bearer {secret}")

    _, expired = svc.directory.issue_key(tenant.tenant_id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(InvalidApiKey):
        auth.authenticate(f"Bearer {expired}")
    assert auth.tenant_of(f"Bearer {expired}") is None  # the access log's label: no tenant for an expired key


def test_tenants_page_resumes_after_the_last_tenant(svc):
    created = {svc.directory.create_tenant(f"t{i}").tenant_id for i in range(5)}
    first, after = svc.directory.tenants_page(2)
    second, after2 = svc.directory.tenants_page(2, after)
    third, end = svc.directory.tenants_page(2, after2)
    assert (len(first), len(second), len(third), end) == (2, 2, 1, None)
    assert {t.tenant_id for t in first + second + third} == created
