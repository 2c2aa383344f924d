"""Tenant and key administration through the CLI, observed through the API."""

from __future__ import annotations

import json
import time

import openai
import pytest

pytestmark = pytest.mark.e2e

MODEL = "local-image"
# The stack runs with DARKROOM_KEY_CACHE_SECONDS=1: a change must show within that, plus slack.
PROPAGATION_SECONDS = 1.5


def _generate(client):
    return client.images.generate(model=MODEL, prompt="a door", size="256x256")


def _all_refused(client, error: type[openai.APIStatusError], attempts: int = 4) -> list[openai.APIStatusError]:
    """Every one of several calls to both functions (each has its own containers and caches) fails."""
    raised = []
    for _ in range(attempts):
        for call in (lambda: client.models.list(), lambda: _generate(client)):
            with pytest.raises(error) as caught:
                call()
            raised.append(caught.value)
    return raised


def test_revoked_key_stops_working(make_tenant, cli, admin, error_body):
    tenant = make_tenant()
    other = admin("keys", "issue", tenant.tenant_id)
    client = tenant.client()
    assert _generate(client).data  # works, and is now cached by the containers that served it
    assert client.models.list().data

    revoked = cli("keys", "revoke", tenant.key_id, "--json")
    assert revoked["status"] == "revoked"
    assert revoked["key_id"] == tenant.key_id
    time.sleep(PROPAGATION_SECONDS)

    for exc in _all_refused(client, openai.AuthenticationError):
        assert exc.status_code == 401
        assert error_body(exc.response)["code"] == "invalid_api_key"

    # Only that key: the tenant's other key, and a key issued now, both work.
    other_client = openai.OpenAI(base_url=tenant.base_url, api_key=other["key"], max_retries=0)
    assert _generate(other_client).data
    fresh = cli("keys", "issue", tenant.tenant_id, "--json")
    assert fresh["key"] not in (tenant.key, other["key"])
    assert _generate(openai.OpenAI(base_url=tenant.base_url, api_key=fresh["key"], max_retries=0)).data


def test_suspended_tenant_is_refused_then_reactivated(make_tenant, cli, admin, error_body):
    tenant = make_tenant()
    client = tenant.client()
    assert _generate(client).data

    suspended = cli("tenants", "suspend", tenant.tenant_id, "--json")
    assert suspended["status"] == "suspended"
    time.sleep(PROPAGATION_SECONDS)
    for exc in _all_refused(client, openai.PermissionDeniedError):
        assert exc.status_code == 403
        error = error_body(exc.response)
        assert error["code"] == "tenant_suspended"
        assert exc.code == "tenant_suspended"

    # Suspension covers every key of the tenant, including one issued while suspended.
    fresh = admin("keys", "issue", tenant.tenant_id)
    with pytest.raises(openai.PermissionDeniedError):
        _generate(openai.OpenAI(base_url=tenant.base_url, api_key=fresh["key"], max_retries=0))

    assert cli("tenants", "activate", tenant.tenant_id, "--json")["status"] == "active"
    time.sleep(PROPAGATION_SECONDS)
    assert _generate(client).data


def test_new_key_works_immediately(make_tenant, cli):
    tenant = make_tenant()
    issued = cli("keys", "issue", tenant.tenant_id, "--json")
    assert issued["key"].startswith("dk-") and len(issued["key"]) == 46
    client = openai.OpenAI(base_url=tenant.base_url, api_key=issued["key"], max_retries=0)
    result = _generate(client)
    assert len(result.data) == 1
    assert {m.id for m in client.models.list()} >= {"local-image"}


def test_keys_list_shows_prefix_never_the_key(make_tenant, cli, admin):
    tenant = make_tenant()
    second = admin("keys", "issue", tenant.tenant_id)
    admin("keys", "revoke", second["key_id"])

    as_json = cli("keys", "list", tenant.tenant_id, "--json", check=False)
    as_text = cli("keys", "list", tenant.tenant_id, check=False)
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    by_id = {row["key_id"]: row for row in rows}
    assert set(by_id) == {tenant.key_id, second["key_id"]}
    assert by_id[tenant.key_id]["status"] == "active"
    assert by_id[second["key_id"]]["status"] == "revoked"
    for key_id, secret in ((tenant.key_id, tenant.key), (second["key_id"], second["key"])):
        prefix = by_id[key_id]["prefix"]
        assert secret.startswith(prefix)
        assert 3 < len(prefix) < len(secret) // 2

    for done in (as_json, as_text):
        assert done.returncode == 0, done.stderr
        assert by_id[tenant.key_id]["prefix"] in done.stdout
        for secret in (tenant.key, second["key"]):
            # Neither the key nor any long piece of it past the display prefix.
            assert secret not in done.stdout + done.stderr
            assert secret[-20:] not in done.stdout + done.stderr
