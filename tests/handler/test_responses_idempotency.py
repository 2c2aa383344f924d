"""Idempotency-Key on POST /v1/responses: a retried create returns the first response (or its job)."""

import json
import threading
import uuid

from lambda_harness import invoke, load_event

BACKGROUND = {
    "model": "local-image",
    "input": "a lighthouse",
    "background": True,
    "tools": [{"type": "image_generation", "size": "256x256"}],
}


def _create(body: dict, key: str | None) -> tuple[int, dict, dict]:
    event = load_event("responses-create")
    event["body"] = json.dumps(body)
    event["requestContext"]["requestId"] = str(uuid.uuid4())  # every retry is a new API Gateway request
    if key is not None:
        event["headers"]["Idempotency-Key"] = key
        event["multiValueHeaders"]["Idempotency-Key"] = [key]
    return invoke("responses", event)


def _queued_jobs(svc) -> int:
    sqs = svc.jobs._sqs
    attributes = sqs.get_queue_attributes(
        QueueUrl=svc.settings.jobs_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_a_retried_background_create_returns_the_first_job(svc, tenant):
    status, _, first = _create(BACKGROUND, "job-1")
    assert status == 200 and first["status"] == "queued"
    status, headers, again = _create(BACKGROUND, "job-1")
    assert status == 200 and again["id"] == first["id"] and headers["idempotent-replayed"] == "true"
    assert _queued_jobs(svc) == 1  # one job, admitted once


def test_a_retried_synchronous_create_is_answered_from_the_stored_response(svc, tenant):
    body = {"model": "local-image", "input": "a lighthouse", "tools": [{"type": "image_generation", "size": "256x256"}]}
    _, _, first = _create(body, "sync-1")
    status, _, again = _create(body, "sync-1")
    assert status == 200 and again["id"] == first["id"]
    assert again["output"][0]["result"] == first["output"][0]["result"]
    assert len(svc.meter.records(tenant.tenant_id)) == 1


def test_concurrent_retries_create_one_job(svc, tenant):
    results = []

    def create() -> None:
        results.append(_create(BACKGROUND, "job-race"))

    threads = [threading.Thread(target=create) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = {body["id"] for status, _, body in results if status == 200}
    assert len(ids) == 1 and _queued_jobs(svc) == 1
    assert {status for status, _, _ in results} <= {200, 409}


def test_the_same_key_with_another_body_is_refused(svc, tenant):
    _create(BACKGROUND, "job-2")
    status, _, body = _create(BACKGROUND | {"input": "a harbour"}, "job-2")
    assert status == 400 and body["error"]["code"] == "idempotency_key_reused"
    assert "harbour" not in json.dumps(body)


def test_an_unstored_response_cannot_be_replayed_so_the_key_is_refused(svc, tenant):
    status, _, body = _create({"model": "local-text", "input": "hi", "store": False}, "unstored")
    assert status == 400 and body["error"]["param"] == "store"
    status, _, body = _create({"model": "local-text", "input": "hi", "store": False}, None)
    assert status == 200  # without a key, store: false works as before


def test_a_keyed_cancel_retry_is_replayed(svc, tenant):
    _, _, job = _create(BACKGROUND, "job-3")
    event = load_event(
        "responses-cancel", path=f"/v1/responses/{job['id']}/cancel", pathParameters={"response_id": job["id"]}
    )
    for attempt in range(2):
        event["requestContext"]["requestId"] = str(uuid.uuid4())
        event["headers"]["Idempotency-Key"] = "cancel-1"
        event["multiValueHeaders"]["Idempotency-Key"] = ["cancel-1"]
        status, headers, body = invoke("responses", event)
        assert status == 200 and body["status"] == "cancelled"
        assert (headers.get("idempotent-replayed") == "true") == (attempt == 1)
