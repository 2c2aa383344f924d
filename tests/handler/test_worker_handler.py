"""WorkerFunction and JobsDeadLetterFunction in-process with moto: SQS events in, batch item failures out."""

from __future__ import annotations

import json
import sys

from darkroom import jobs
from darkroom.api.errors import ServiceUnavailable
from darkroom.inference.local import LocalBackend
from lambda_harness import EVENT_KEY, Context, WorkerContext, invoke, load_event, load_handler, sqs_job_event


def _queued(tenant) -> str:
    event = load_event("responses-create")
    event["body"] = json.dumps(
        {
            "model": "local-image",
            "input": "a lighthouse",
            "background": True,
            "tools": [{"type": "image_generation", "size": "256x256"}],
        }
    )
    status, _, body = invoke("responses", event)
    assert status == 200 and body["status"] == "queued", body
    return body["id"]


def _status(response_id: str) -> dict:
    event = load_event(
        "responses-retrieve", path=f"/v1/responses/{response_id}", pathParameters={"response_id": response_id}
    )
    status, _, body = invoke("responses", event)
    assert status == 200, body
    return body


def test_the_worker_runs_the_queued_job_from_its_sqs_event(svc, tenant):
    response_id = _queued(tenant)
    event, _ = sqs_job_event(svc)
    result = load_handler("worker")(event, WorkerContext())
    assert result == {"batchItemFailures": []}
    body = _status(response_id)
    assert body["status"] == "completed" and body["output"][0]["result"]
    # Billed to the key that accepted the job, as a synchronous request would be (the per-key usage buckets).
    (record,) = svc.meter.records(tenant.tenant_id)
    key_id = svc.authenticator.authenticate(f"Bearer {EVENT_KEY}").key_id
    assert key_id is not None and record["key_id"] == key_id


def test_a_transient_failure_is_a_batch_item_failure_that_comes_back_soon(svc, tenant, monkeypatch):
    response_id = _queued(tenant)
    event, message = sqs_job_event(svc)

    def busy(self, model, job):
        raise ServiceUnavailable("busy")

    monkeypatch.setattr(LocalBackend, "generate", busy)
    monkeypatch.setattr(jobs, "RETRY_DELAYS_SECONDS", (0, 0))
    result = load_handler("worker")(event, WorkerContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    # The retry delay (0 s here) replaced the queue's 960 s visibility timeout: the message is back at once.
    again, _ = sqs_job_event(svc)
    assert again["Records"][0]["messageId"] == message["MessageId"]
    assert _status(response_id)["status"] == "queued"


def test_the_dead_letter_handler_fails_the_job(svc, tenant):
    response_id = _queued(tenant)
    event, _ = sqs_job_event(svc)
    load_handler("worker")
    result = sys.modules["darkroom_test_fn_worker"].dead_letter_handler(event, Context())
    assert result == {"batchItemFailures": []}
    body = _status(response_id)
    assert body["status"] == "failed" and body["error"]["code"] == "server_error"


def test_cancel_route_answers_the_cancelled_response(svc, tenant):
    response_id = _queued(tenant)
    event = load_event(
        "responses-retrieve",
        path=f"/v1/responses/{response_id}/cancel",
        httpMethod="POST",
        resource="/v1/responses/{response_id}/cancel",
        pathParameters={"response_id": response_id},
    )
    status, _, body = invoke("responses", event)
    assert status == 200 and body["status"] == "cancelled" and body["background"] is True


def test_committed_events_replay(svc, tenant):
    status, _, body = invoke("responses", load_event("responses-create-background"))
    assert status == 200 and body["status"] == "queued"
    # The committed SQS event names a job that does not exist here: acknowledged, nothing to run.
    assert load_handler("worker")(load_event("worker-job"), WorkerContext()) == {"batchItemFailures": []}
    event, _ = sqs_job_event(svc)
    assert load_handler("worker")(event, WorkerContext()) == {"batchItemFailures": []}
    assert _status(body["id"])["status"] == "completed"
