"""Background responses with moto: acceptance, the job state machine, cancel, retries, the dead-letter end."""

from __future__ import annotations

import json
import threading

import pytest

from darkroom import jobs
from darkroom.api.errors import InvalidRequest, ServiceUnavailable, UpstreamError
from darkroom.api.responses import ResponseCreateRequest
from darkroom.inference.local import LocalBackend
from darkroom.jobs import MAX_ATTEMPTS, RetryLater, end_dead_job, run_job
from darkroom.ports import RequestContext
from darkroom.responses import cancel_response, create_response, retrieve_response

WORKER_MS = 900_000


def _background(svc, tenant, **fields):
    body = {
        "model": "local-image",
        "input": "a lighthouse at dusk",
        "background": True,
        "tools": [{"type": "image_generation", "size": "256x256"}],
    } | fields
    context = RequestContext(tenant, "req-" + body["input"][:8])
    return create_response(context, ResponseCreateRequest.model_validate(body), svc.response_ports)


def _images_counted(svc, tenant) -> int:
    """What the tenant's images-per-minute windows hold now (all windows: a test may cross a minute)."""
    items = svc.limiter._db.scan(TableName=svc.settings.rate_limits_table)["Items"]
    return sum(int(i["count"]["N"]) for i in items if i["pk"]["S"].startswith(f"{tenant.tenant_id}#images#60#"))


def _messages(svc) -> list[dict]:
    sqs = svc.jobs._sqs
    return sqs.receive_message(QueueUrl=svc.settings.jobs_queue_url, MaxNumberOfMessages=10).get("Messages", [])


def _run(svc, tenant, response_id):
    run_job(tenant.tenant_id, response_id, WORKER_MS, svc.worker)


def test_accepted_job_is_queued_admitted_and_named_in_one_message(svc, tenant):
    queued = _background(svc, tenant)
    assert queued.status == "queued" and queued.background and queued.output == []
    assert _images_counted(svc, tenant) == 1  # limits hold when the job is accepted
    (message,) = _messages(svc)
    assert json.loads(message["Body"]) == {"tenant_id": tenant.tenant_id, "response_id": queued.id}
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "queued"
    assert svc.meter.records(tenant.tenant_id) == []  # nothing billed before it completes


def test_worker_completes_the_job_and_bills_it_once(svc, tenant):
    queued = _background(svc, tenant)
    _run(svc, tenant, queued.id)
    done = retrieve_response(tenant, queued.id, svc.response_ports)
    assert done.status == "completed" and done.usage.images == 1
    (call,) = done.output
    assert call.type == "image_generation_call" and call.result and call.size == "256x256"
    _run(svc, tenant, queued.id)  # a duplicate delivery after completion
    assert len(svc.meter.records(tenant.tenant_id)) == 1
    assert _images_counted(svc, tenant) == 1


def test_a_completed_background_response_threads_like_any_other(svc, tenant):
    first = _background(svc, tenant)
    _run(svc, tenant, first.id)
    follow = _background(svc, tenant, input="now make it blue", previous_response_id=first.id)
    _run(svc, tenant, follow.id)
    (call,) = retrieve_response(tenant, follow.id, svc.response_ports).output
    assert call.action == "edit"  # the first job's image was carried forward and edited


def test_previous_response_must_have_completed(svc, tenant):
    queued = _background(svc, tenant)
    with pytest.raises(InvalidRequest) as refused:
        _background(svc, tenant, input="now make it blue", previous_response_id=queued.id)
    assert refused.value.param == "previous_response_id" and "queued" in refused.value.message


def test_concurrent_duplicate_workers_run_the_job_once(svc, tenant, monkeypatch):
    queued = _background(svc, tenant)
    calls = []
    original = LocalBackend.generate

    def counted(self, model, job):
        calls.append(1)
        return original(self, model, job)

    monkeypatch.setattr(LocalBackend, "generate", counted)
    workers = [threading.Thread(target=_run, args=(svc, tenant, queued.id)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(calls) == 1
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "completed"
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_a_crashed_workers_job_is_taken_over_after_its_lease_and_its_late_result_is_discarded(svc, tenant):
    queued = _background(svc, tenant)
    crashed = svc.responses.claim(tenant.tenant_id, queued.id, lease_seconds=60)  # then the process died
    assert crashed is not None and crashed.status == "in_progress"
    _run(svc, tenant, queued.id)  # redelivered while the lease runs: a live worker may still hold it
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "in_progress"
    clock = svc.responses._clock
    svc.responses._clock = lambda: clock() + 61
    _run(svc, tenant, queued.id)
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "completed"
    late = svc.responses.complete(tenant.tenant_id, queued.id, crashed.token, {"response": {}}, {})
    assert late is False  # the first worker, back from the dead, cannot overwrite the result
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_cancel_while_queued_refunds_and_the_worker_does_nothing(svc, tenant):
    queued = _background(svc, tenant)
    cancelled = cancel_response(tenant, queued.id, svc.response_ports)
    assert cancelled.status == "cancelled"
    assert _images_counted(svc, tenant) == 0
    _run(svc, tenant, queued.id)
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "cancelled"
    assert svc.meter.records(tenant.tenant_id) == []
    assert cancel_response(tenant, queued.id, svc.response_ports).status == "cancelled"  # again: no second refund
    assert _images_counted(svc, tenant) == 0


def test_cancel_while_running_discards_the_result_deletes_its_images_and_bills_nothing(svc, tenant, monkeypatch):
    queued = _background(svc, tenant)
    original = LocalBackend.generate

    def cancelled_meanwhile(self, model, job):
        assert cancel_response(tenant, queued.id, svc.response_ports).status == "cancelled"
        return original(self, model, job)

    monkeypatch.setattr(LocalBackend, "generate", cancelled_meanwhile)
    _run(svc, tenant, queued.id)
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "cancelled"
    assert svc.meter.records(tenant.tenant_id) == []
    assert _images_counted(svc, tenant) == 0
    s3 = svc.store._s3
    listed = s3.list_objects_v2(Bucket=svc.settings.images_bucket, Prefix=f"tenants/{tenant.tenant_id}/images/")
    assert listed.get("KeyCount", 0) == 0


def test_cancel_after_completion_changes_nothing(svc, tenant):
    queued = _background(svc, tenant)
    _run(svc, tenant, queued.id)
    assert cancel_response(tenant, queued.id, svc.response_ports).status == "completed"
    assert _images_counted(svc, tenant) == 1


def test_only_background_responses_can_be_cancelled(svc, tenant):
    done = create_response(
        RequestContext(tenant, "req-sync"), ResponseCreateRequest(model="local-text", input="hi"), svc.response_ports
    )
    with pytest.raises(InvalidRequest) as refused:
        cancel_response(tenant, done.id, svc.response_ports)
    assert refused.value.code == "not_cancellable"


def test_transient_failures_are_retried_then_the_job_fails_and_refunds(svc, tenant, monkeypatch):
    queued = _background(svc, tenant)

    def unavailable(self, model, job):
        raise ServiceUnavailable("The model is busy.")

    monkeypatch.setattr(LocalBackend, "generate", unavailable)
    for _ in range(MAX_ATTEMPTS - 1):
        with pytest.raises(RetryLater):
            _run(svc, tenant, queued.id)
        assert retrieve_response(tenant, queued.id, svc.response_ports).status == "queued"
        assert _images_counted(svc, tenant) == 1  # still admitted while it may succeed
    _run(svc, tenant, queued.id)
    failed = retrieve_response(tenant, queued.id, svc.response_ports)
    assert failed.status == "failed" and failed.error["code"] == "server_error"  # the spec's ResponseErrorCode
    assert svc.responses.load(tenant.tenant_id, queued.id).error["code"] == "service_unavailable"  # as stored
    assert _images_counted(svc, tenant) == 0
    assert svc.meter.records(tenant.tenant_id) == []


def test_a_retried_job_that_then_succeeds_counts_once(svc, tenant, monkeypatch):
    queued = _background(svc, tenant)
    original = LocalBackend.generate
    failures = [UpstreamError("flaky", code="upstream_timeout")]
    failures[0].status = 504

    def flaky(self, model, job):
        if failures:
            raise failures.pop()
        return original(self, model, job)

    monkeypatch.setattr(LocalBackend, "generate", flaky)
    with pytest.raises(RetryLater):
        _run(svc, tenant, queued.id)
    _run(svc, tenant, queued.id)
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "completed"
    assert _images_counted(svc, tenant) == 1 and len(svc.meter.records(tenant.tenant_id)) == 1


def test_a_client_side_error_fails_the_job_at_once(svc, tenant, monkeypatch):
    queued = _background(svc, tenant)

    def refused(self, model, job):
        raise InvalidRequest("Refused by the model's content policy.", code="content_policy_violation")

    monkeypatch.setattr(LocalBackend, "generate", refused)
    _run(svc, tenant, queued.id)
    failed = retrieve_response(tenant, queued.id, svc.response_ports)
    assert failed.status == "failed" and failed.error == {
        "code": "invalid_prompt",  # the spec's code for it
        "message": "Refused by the model's content policy.",
    }
    assert _images_counted(svc, tenant) == 0
    assert (
        cancel_response(tenant, queued.id, svc.response_ports).status == "failed"
    )  # cancelling a failed job changes nothing
    assert _images_counted(svc, tenant) == 0


def test_billing_that_fails_after_completion_is_finished_by_the_next_delivery(svc, tenant, monkeypatch):
    queued = _background(svc, tenant)
    record = svc.meter.record

    def down(event):
        raise ServiceUnavailable("DynamoDB is down")

    monkeypatch.setattr(svc.meter, "record", down)
    with pytest.raises(ServiceUnavailable):
        _run(svc, tenant, queued.id)
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "completed"
    monkeypatch.setattr(svc.meter, "record", record)
    _run(svc, tenant, queued.id)  # SQS redelivers: the usage on the item is billed now
    _run(svc, tenant, queued.id)
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_dead_letter_fails_and_refunds_a_job_no_worker_holds(svc, tenant):
    queued = _background(svc, tenant)
    end_dead_job(tenant.tenant_id, queued.id, svc.worker)
    failed = retrieve_response(tenant, queued.id, svc.response_ports)
    assert failed.status == "failed" and failed.error["code"] == "server_error"
    assert _images_counted(svc, tenant) == 0
    end_dead_job(tenant.tenant_id, queued.id, svc.worker)  # a duplicate dead letter refunds nothing more
    assert _images_counted(svc, tenant) == 0


def test_dead_letter_waits_for_a_live_workers_lease(svc, tenant):
    queued = _background(svc, tenant)
    svc.responses.claim(tenant.tenant_id, queued.id, lease_seconds=60)
    with pytest.raises(RetryLater) as later:
        end_dead_job(tenant.tenant_id, queued.id, svc.worker)
    assert 0 < later.value.delay_seconds <= 60
    assert retrieve_response(tenant, queued.id, svc.response_ports).status == "in_progress"


@pytest.mark.parametrize("fields,param", [({"store": False}, "store"), ({"stream": True}, "stream")])
def test_background_needs_a_stored_unstreamed_response(svc, tenant, fields, param):
    with pytest.raises(InvalidRequest) as refused:
        _background(svc, tenant, **fields)
    assert refused.value.param == param
    assert _images_counted(svc, tenant) == 0


def test_slow_requests_are_refused_synchronously_but_accepted_in_background(svc, tenant):
    tool = [{"type": "image_generation", "size": "1536x1024", "quality": "high"}]  # ~6 s each in the catalog
    body = {"model": "local-image", "input": "a harbour", "tools": tool}
    svc_settings = svc.settings
    svc.settings = svc_settings.model_copy(update={"inference_timeout_seconds": 5})
    try:
        with pytest.raises(InvalidRequest) as refused:
            create_response(
                RequestContext(tenant, "req-slow"), ResponseCreateRequest.model_validate(body), svc.response_ports
            )
        assert refused.value.code == "use_background_mode" and refused.value.param == "tools[0].quality"
        assert "background" in refused.value.message
        assert _images_counted(svc, tenant) == 0  # refused before admission
        queued = create_response(
            RequestContext(tenant, "req-slow-bg"),
            ResponseCreateRequest.model_validate(body | {"background": True}),
            svc.response_ports,
        )
        _run(svc, tenant, queued.id)
        assert retrieve_response(tenant, queued.id, svc.response_ports).status == "completed"
    finally:
        svc.settings = svc_settings


def test_upstream_work_that_outlives_invocations_is_paused_and_collected_later(svc, tenant, monkeypatch):
    from darkroom.inference import checkpoint

    queued = _background(svc, tenant)
    _messages(svc)  # the acceptance's message, taken
    original = LocalBackend.generate
    submissions, looks = [], []

    def slow_endpoint(self, model, job):
        handle = checkpoint.load()
        if handle is None:  # the first invocation submits
            submissions.append(job.prompt)
            handle = {"inference_id": "abc"}
            checkpoint.save(handle)
        looks.append(handle)
        if len(looks) <= MAX_ATTEMPTS:  # the invocation's deadline comes before the answer
            raise checkpoint.StillRunning(handle)
        return original(self, model, job)

    monkeypatch.setattr(LocalBackend, "generate", slow_endpoint)
    monkeypatch.setattr(jobs, "RESUME_DELAY_SECONDS", 0)  # SQS would hold the message back 30 s
    for _ in range(MAX_ATTEMPTS):  # more pauses than attempts: a pause is not a failed attempt
        _run(svc, tenant, queued.id)
        assert retrieve_response(tenant, queued.id, svc.response_ports).status == "queued"
        (message,) = _messages(svc)  # a fresh message asks for the next look
        assert json.loads(message["Body"])["response_id"] == queued.id
    _run(svc, tenant, queued.id)
    done = retrieve_response(tenant, queued.id, svc.response_ports)
    assert done.status == "completed"
    assert submissions == ["a lighthouse at dusk"] and looks == [{"inference_id": "abc"}] * (MAX_ATTEMPTS + 1)
    assert len(svc.meter.records(tenant.tenant_id)) == 1 and _images_counted(svc, tenant) == 1


def test_a_model_on_an_async_endpoint_answers_text_only_in_background(svc, tenant, monkeypatch):
    from darkroom.catalog import ModelEntry

    slow = ModelEntry.model_validate(
        {
            "id": "sm-async-vision",
            "backend": "sagemaker",
            "capabilities": ["analyze"],
            "endpoint": {"endpoint_name": "vision-async", "async_inference": True},
        }
    )
    monkeypatch.setitem(svc.catalog.models, slow.id, slow)
    with pytest.raises(InvalidRequest) as refused:
        create_response(
            RequestContext(tenant, "req-async-text"),
            ResponseCreateRequest(model=slow.id, input="hi"),
            svc.response_ports,
        )
    assert refused.value.code == "use_background_mode" and refused.value.param == "model"
    queued = create_response(
        RequestContext(tenant, "req-async-text-bg"),
        ResponseCreateRequest(model=slow.id, input="hi", background=True),
        svc.response_ports,
    )
    assert queued.status == "queued"
