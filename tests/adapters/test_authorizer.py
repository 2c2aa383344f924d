"""The API's labelling authorizer (functions/authorizer, darkroom.api.authorizer): a tenant id or "-", an Allow
for the whole stage, and never the key in what it returns or logs."""

from __future__ import annotations

import fnmatch
import json
import logging

import pytest

from emf_capture import powertools_log_stream
from lambda_harness import EVENT_KEY, Context, load_event, load_handler

METHOD_ARN = "arn:aws:execute-api:us-east-1:000000000000:local/prod/GET/v1/models"


def _event(authorization: str | None) -> dict:
    event = load_event("authorizer")
    headers = {k: v for k, v in event["headers"].items() if k != "authorization"}
    multi = {k: v for k, v in event["multiValueHeaders"].items() if k != "authorization"}
    if authorization is not None:
        headers["authorization"], multi["authorization"] = authorization, [authorization]
    event["headers"], event["multiValueHeaders"] = headers, multi
    return event


def _label(event: dict) -> dict:
    from darkroom import services

    services.reset()  # a fresh per-container key cache: each test sees the table as it is now
    return load_handler("authorizer")(event, Context())


def _allows_every_route(answer: dict) -> None:
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "execute-api:Invoke"
    assert statement["Resource"] == "arn:aws:execute-api:us-east-1:000000000000:local/prod/*/*"
    for other in ("POST/v1/images/generations", "DELETE/v1/responses/resp_1", "GET/v1/models"):
        assert fnmatch.fnmatchcase(
            f"arn:aws:execute-api:us-east-1:000000000000:local/prod/{other}", statement["Resource"]
        )  # a cached answer must serve every route


def test_the_committed_event_is_a_request_authorizer_event_for_its_route():
    event = load_event("authorizer")
    assert event["type"] == "REQUEST" and event["methodArn"] == METHOD_ARN
    assert "body" not in event and event["headers"]["authorization"] == f"Bearer {EVENT_KEY}"


def test_a_valid_key_is_labelled_with_its_tenant(tenant):
    answer = _label(_event(f"Bearer {EVENT_KEY}"))
    assert answer["principalId"] == tenant.tenant_id
    assert answer["context"] == {"tenant": tenant.tenant_id}
    _allows_every_route(answer)


def test_a_suspended_tenant_keeps_its_label_and_the_handler_answers_403(tenant, svc):
    svc.directory.set_status(tenant.tenant_id, "suspended")
    assert _label(_event(f"Bearer {EVENT_KEY}"))["principalId"] == tenant.tenant_id


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer dk-unknownunknownunknownunknownunknownunknown0",  # well formed, not issued
        "Bearer dk-short",
        "Basic " + EVENT_KEY,
        EVENT_KEY,
        "",
        None,
    ],
)
def test_unknown_malformed_or_missing_keys_get_the_fixed_label_and_still_pass(tenant, authorization):
    answer = _label(_event(authorization))
    assert answer["principalId"] == "-" and answer["context"] == {"tenant": "-"}
    _allows_every_route(answer)  # never a refusal: the handler answers 401 in the OpenAI envelope


def test_a_revoked_key_gets_the_fixed_label(tenant, svc):
    (key,) = svc.directory.list_keys(tenant.tenant_id)
    svc.directory.revoke_key(key.key_id)
    assert _label(_event(f"Bearer {EVENT_KEY}"))["principalId"] == "-"


def test_an_unreadable_tenants_table_labels_and_logs_instead_of_failing(tenant, svc, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ConnectionError("the tenants table is unreachable")

    caplog.set_level(logging.INFO)
    with powertools_log_stream() as stream:
        from darkroom import services
        from darkroom.api import authorizer

        services.reset()
        monkeypatch.setattr(authorizer.key_authenticator()._directory, "lookup", broken)
        answer = load_handler("authorizer")(_event(f"Bearer {EVENT_KEY}"), Context())
    assert answer["principalId"] == "-"
    _allows_every_route(answer)
    assert "tenant lookup failed" in stream.getvalue()


def test_the_key_is_never_returned_or_logged(tenant, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with powertools_log_stream() as stream:
        for authorization in (f"Bearer {EVENT_KEY}", "Bearer dk-unknownunknownunknownunknownunknownunknown0"):
            answer = _label(_event(authorization))
            assert authorization.split()[1] not in json.dumps(answer)
    captured = capsys.readouterr()
    logged = stream.getvalue() + caplog.text + captured.out + captured.err
    for secret in (EVENT_KEY, EVENT_KEY.removeprefix("dk-"), "unknownunknown"):
        assert secret not in logged
