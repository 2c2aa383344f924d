"""Monthly budgets in USD (darkroom.budgets) on moto: exact at the cap, reconciled at billing, refunded on failure."""

import json
import threading
from dataclasses import replace

import pytest

from darkroom import budgets
from darkroom.api.errors import InsufficientQuota, ServiceUnavailable
from darkroom.limits import RateLimiter
from darkroom.tenancy import Limits, Tenant

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
MONTH_END = 1_801_440_000.0  # 2027-02-01T00:00:00Z


def _tenant(budget_usd: float | None = 10.0, soft_percent: int = 80) -> Tenant:
    limits = Limits(images_per_minute=10_000, images_per_day=10_000, requests_per_minute=10_000)
    if budget_usd is not None:
        budget = budgets.micro_usd(budget_usd)
        limits = replace(limits, monthly_budget_micro_usd=budget, budget_soft_percent=soft_percent)
    return Tenant(tenant_id="tnt_budget", name="t", limits=limits)


def _limiter(svc, now: float = NOW) -> RateLimiter:
    return RateLimiter(svc.limiter._db, svc.settings.rate_limits_table, clock=lambda: now)


def _spent(svc, tenant_id: str = "tnt_budget", month: str = "2027-01") -> int:
    item = svc.limiter._db.get_item(
        TableName=svc.settings.rate_limits_table, Key={"pk": {"S": f"{tenant_id}#budget#{month}"}}
    ).get("Item")
    return int(item["count"]["N"]) if item else 0


def test_the_month_is_the_utc_calendar_month():
    assert budgets.month_of(NOW) == ("2027-01", MONTH_END)
    assert budgets.month_of(1_796_083_200.0)[0] == "2026-12"  # 2026-12-01T00:00:00Z
    assert budgets.usd_text(budgets.micro_usd(0.1 + 0.2)) == "0.300000"


def test_concurrent_reservations_at_the_cap_admit_exactly_the_budget(svc):
    limiter, tenant = _limiter(svc), _tenant(10.0)
    admitted, refused, lock = [], [], threading.Lock()
    barrier = threading.Barrier(32)

    def one() -> None:
        barrier.wait()
        try:
            admission = limiter.admit(tenant, 1, 1.0)
        except InsufficientQuota:
            with lock:
                refused.append(1)
            return
        with lock:
            admitted.append(admission)

    threads = [threading.Thread(target=one) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 10 and len(refused) == 22
    assert _spent(svc) == budgets.micro_usd(10.0)  # never above the cap
    # The refused ones gave their windows back: 10 requests counted in the minute (and this one), not 32.
    assert limiter.admit(_tenant(None), 1).headers()["x-ratelimit-remaining-requests"] == str(10_000 - 11)


def test_billing_reconciles_the_estimate_to_the_actual_cost(svc):
    limiter, tenant = _limiter(svc), _tenant(10.0)
    admission = limiter.admit(tenant, 2, 0.25)
    assert _spent(svc) == 250_000
    limiter.settle(admission, 0.130001)  # cheaper than estimated
    other = limiter.admit(tenant, 1, 0.1)
    limiter.settle(other, 0.4)  # dearer
    assert _spent(svc) == 130_001 + 400_000


def test_a_failure_on_our_side_gives_the_estimate_back(svc):
    limiter, tenant = _limiter(svc), _tenant(10.0)
    limiter.admit(tenant, 1, 1.5)
    admission = limiter.admit(tenant, 1, 2.0)
    with pytest.raises(ServiceUnavailable), limiter.refunded_on_failure(admission):
        raise ServiceUnavailable("down")
    assert _spent(svc) == 1_500_000


def test_a_refusal_is_429_insufficient_quota_with_budget_headers_and_counts_nothing(svc):
    limiter, tenant = _limiter(svc), _tenant(1.0)
    headers = limiter.admit(tenant, 1, 0.75).headers()
    assert headers["x-budget-limit-usd"] == "1.000000" and headers["x-budget-remaining-usd"] == "0.250000"
    assert headers["x-budget-reset"] == f"{int(MONTH_END - NOW)}s"
    with pytest.raises(InsufficientQuota) as refused:
        limiter.admit(tenant, 1, 0.5)
    error = refused.value
    assert (error.status, error.code, error.type) == (429, "insufficient_quota", "insufficient_quota")
    assert error.headers["x-budget-remaining-usd"] == "0.250000" and "x-ratelimit-remaining-images" in error.headers
    with pytest.raises(InsufficientQuota):
        limiter.admit(tenant, 1, 2.0)  # above the whole budget: refused without a write
    assert _spent(svc) == 750_000
    # the windows were given back: the 2nd request of the minute
    assert limiter.admit(tenant, 1, 0.25).headers()["x-ratelimit-remaining-requests"] == str(10_000 - 2)


def test_no_budget_changes_nothing(svc):
    limiter, tenant = _limiter(svc), _tenant(None)
    admission = limiter.admit(tenant, 1, 1_000_000.0)
    assert not any(name.startswith("x-budget") for name in admission.headers())
    assert len(admission.taken) == 3
    limiter.settle(admission, 5.0)
    assert _spent(svc) == 0


def test_text_only_work_is_not_counted(svc):
    limiter, tenant = _limiter(svc), _tenant(0.000001)
    admission = limiter.admit(tenant, 0, 0.5)
    assert admission.budget is None and _spent(svc) == 0


def test_the_soft_threshold_is_reported_once_when_crossed(svc, monkeypatch):
    crossed = []
    monkeypatch.setattr(budgets, "budget_soft_limit", lambda: crossed.append(1))
    limiter, tenant = _limiter(svc), _tenant(10.0, soft_percent=50)
    limiter.admit(tenant, 1, 4.0)
    assert crossed == []
    admission = limiter.admit(tenant, 1, 0.5)
    limiter.settle(admission, 1.5)  # billing crosses it: 5.5 of 10
    limiter.admit(tenant, 1, 1.0)
    assert crossed == [1]


def test_tenant_budget_set_and_removed_through_the_directory(svc):
    created = svc.directory.create_tenant("b")
    assert created.limits.monthly_budget_micro_usd is None
    updated = svc.directory.set_budget(created.tenant_id, budgets.micro_usd(50), 90)
    assert (updated.limits.monthly_budget_micro_usd, updated.limits.budget_soft_percent) == (50_000_000, 90)
    assert svc.directory.get_tenant(created.tenant_id).limits.monthly_budget_micro_usd == 50_000_000
    assert svc.directory.set_budget(created.tenant_id, None).limits.monthly_budget_micro_usd is None
    assert updated.limits.images_per_minute == created.limits.images_per_minute


def test_a_generate_request_is_refused_at_the_cap_and_billed_at_its_cost(tenant, svc):
    from datetime import UTC, datetime

    from lambda_harness import invoke, load_event

    month = datetime.now(UTC).strftime("%Y-%m")
    svc.directory.set_budget(tenant.tenant_id, budgets.micro_usd(1.0))
    svc.authenticator._cache.clear()
    status, headers, _ = invoke("generate", load_event("generate"))
    assert status == 200 and headers["x-budget-limit-usd"] == "1.000000"
    (record,) = svc.meter.records(tenant.tenant_id)
    spent = _spent(svc, tenant.tenant_id, month)
    assert spent == int(record["cost_micro_usd"])  # reconciled to the bill (metering rounds as budgets do)
    # Use up the month, then the next request is refused before any work.
    key = f"{tenant.tenant_id}#budget#{month}"
    svc.limiter._db.update_item(
        TableName=svc.settings.rate_limits_table,
        Key={"pk": {"S": key}},
        UpdateExpression="ADD #c :n",
        ExpressionAttributeNames={"#c": "count"},
        ExpressionAttributeValues={":n": {"N": str(1_000_000 - spent)}},
    )
    status, headers, body = invoke("generate", load_event("generate"))
    assert status == 429 and body["error"]["type"] == "insufficient_quota"
    assert body["error"]["code"] == "insufficient_quota" and headers["x-budget-remaining-usd"] == "0.000000"
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_the_cli_sets_and_removes_a_budget(svc, capsys):
    from darkroom.cli import main

    created = svc.directory.create_tenant("cli")
    assert main(["tenants", "set-budget", created.tenant_id, "--monthly-usd", "50", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)  # the tenant, as every tenants command prints it
    assert row["tenant_id"] == created.tenant_id
    assert (row["monthly_budget_usd"], row["budget_soft_percent"]) == (50.0, 80)
    assert main(["tenants", "set-budget", created.tenant_id, "--monthly-usd", "5", "--soft-percent", "90"]) == 0
    assert "5.000000 USD a month, alarm at 90%" in capsys.readouterr().out
    assert svc.directory.get_tenant(created.tenant_id).limits.monthly_budget_micro_usd == 5_000_000
    assert main(["tenants", "set-budget", created.tenant_id, "--none"]) == 0
    assert svc.directory.get_tenant(created.tenant_id).limits.monthly_budget_micro_usd is None
    assert main(["tenants", "set-budget", created.tenant_id, "--monthly-usd", "0"]) == 2
    with pytest.raises(SystemExit):  # one of --monthly-usd and --none
        main(["tenants", "set-budget", created.tenant_id])


def _queue_job(svc, tenant, monkeypatch) -> str:
    from datetime import UTC, datetime

    from darkroom.responses import background
    from lambda_harness import invoke, load_event

    monkeypatch.setattr(background, "image_cost_usd", lambda *a, **k: 0.5)  # an estimate the bill will differ from
    svc.directory.set_budget(tenant.tenant_id, budgets.micro_usd(1.0))
    svc.authenticator._cache.clear()
    event = load_event("responses-create")
    tools = [{"type": "image_generation", "size": "256x256"}]
    body = {"model": "local-image", "input": "a lighthouse", "background": True, "tools": tools}
    event["body"] = json.dumps(body)
    status, _, answer = invoke("responses", event)
    assert status == 200 and answer["status"] == "queued", answer
    month = datetime.now(UTC).strftime("%Y-%m")
    assert _spent(svc, tenant.tenant_id, month) == 500_000  # reserved at acceptance
    return month


def test_a_background_job_reserves_at_acceptance_and_settles_when_billed(tenant, svc, monkeypatch):
    from lambda_harness import WorkerContext, load_handler, sqs_job_event

    month = _queue_job(svc, tenant, monkeypatch)
    event, _ = sqs_job_event(svc)
    assert load_handler("worker")(event, WorkerContext()) == {"batchItemFailures": []}
    (record,) = svc.meter.records(tenant.tenant_id)
    assert _spent(svc, tenant.tenant_id, month) == int(record["cost_micro_usd"])


def test_a_failed_background_job_gives_its_reservation_back(tenant, svc, monkeypatch):
    import sys

    from lambda_harness import Context, load_handler, sqs_job_event

    month = _queue_job(svc, tenant, monkeypatch)
    event, _ = sqs_job_event(svc)
    load_handler("worker")
    assert sys.modules["darkroom_test_fn_worker"].dead_letter_handler(event, Context()) == {"batchItemFailures": []}
    assert _spent(svc, tenant.tenant_id, month) == 0
