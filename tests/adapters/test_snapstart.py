"""SnapStart's hooks (darkroom.snapstart): what a function builds before its snapshot, and what a restored
environment makes its own. Lambda runs the registered hooks; these tests run them the same way, from
``snapshot_restore_py``'s registries."""

from __future__ import annotations

import random

import pytest
import snapshot_restore_py

import lambda_harness
from darkroom import snapstart
from darkroom.api.authorizer import key_authenticator
from darkroom.api.errors import InvalidApiKey


def run_before_snapshot(module: str) -> None:
    """The before-snapshot hooks ``module`` registered (other functions' apps may be loaded in this process)."""
    for function, args, kwargs in reversed(snapshot_restore_py.get_before_snapshot()):  # Lambda's order
        if function.__module__ == module:
            function(*args, **kwargs)


def run_after_restore() -> None:
    for function, args, kwargs in snapshot_restore_py.get_after_restore():
        function(*args, **kwargs)


@pytest.mark.parametrize(
    ("function", "parts"),
    [
        ("models", {"authenticator", "catalog"}),
        ("usage", {"authenticator", "meter"}),
        ("generate", {"authenticator", "catalog", "limiter", "meter", "store", "backends"}),
        ("edit", {"authenticator", "catalog", "limiter", "meter", "store", "backends", "files", "fetcher"}),
        ("responses", {"authenticator", "catalog", "responses", "jobs", "files", "fetcher"}),
        ("files", {"authenticator", "files"}),
    ],
)
def test_before_the_snapshot_a_function_builds_what_its_first_request_would(aws, function, parts):
    from darkroom.services import services

    lambda_harness.load_handler(function)
    assert not parts & set(vars(services()))  # nothing built by the import itself
    run_before_snapshot(f"darkroom_test_fn_{function}")  # lambda_harness's name for that app module
    assert parts <= set(vars(services()))


def test_after_a_restore_random_is_reseeded():
    random.seed(1234)  # the state a snapshot would carry into every environment
    from_snapshot = [random.random() for _ in range(4)]  # noqa: S311 - retry jitter, not a secret
    random.seed(1234)
    run_after_restore()
    assert [random.random() for _ in range(4)] != from_snapshot  # noqa: S311


@pytest.mark.parametrize("lookup", ["container", "authorizer"])
def test_after_a_restore_a_key_revoked_since_the_snapshot_is_refused_at_once(svc, lookup):
    authenticator = svc.authenticator if lookup == "container" else key_authenticator()
    tenant = svc.directory.create_tenant("acme")
    key, secret = svc.directory.issue_key(tenant.tenant_id)
    assert authenticator.authenticate(f"Bearer {secret}").tenant_id == tenant.tenant_id  # cached in the snapshot
    svc.directory.revoke_key(key.key_id)
    assert authenticator.authenticate(f"Bearer {secret}")  # within the cache's time: still served from it
    run_after_restore()
    with pytest.raises(InvalidApiKey):
        authenticator.authenticate(f"Bearer {secret}")


def test_the_authorizer_builds_its_key_lookup_before_the_snapshot(aws):
    lambda_harness.load_handler("authorizer")
    key_authenticator.cache_clear()
    run_before_snapshot("darkroom.api.authorizer")
    assert key_authenticator.cache_info().currsize == 1


def test_each_restore_hook_is_registered_once():
    hooks = [function for function, _, _ in snapshot_restore_py.get_after_restore()]
    assert hooks.count(snapstart.reseed) == 1
    assert len(hooks) == len(set(hooks))
