"""Background jobs: the worker that runs accepted responses, and the end of jobs that cannot finish.

A job was validated and admitted when it was accepted (darkroom.responses), so the worker only runs
it. One SQS message per job; the queue redelivers a message whose worker failed or died, and moves it
to the dead-letter queue after ``MAX_ATTEMPTS`` receives. Around that:

* claim: a conditional write takes the job (queued, or running past a dead worker's lease); anything
  else (finished, cancelled, held by a live worker) means this delivery has nothing to do;
* success: the result is written only if this claim is still current, then billed (the meter is
  idempotent per request id, and the usage stays on the item until it is billed, so a crash between
  the two is finished by the next delivery); a result that lost its claim (cancelled meanwhile) is
  discarded and its images deleted;
* a transient failure (5xx, a timeout, anything unexpected) gives the claim back and asks SQS for the
  message again after a short delay; after the last attempt, or for a client-side error (4xx), the job
  fails and its admission is refunded;
* upstream work that outlives an invocation (a SageMaker asynchronous endpoint runs up to an hour)
  pauses the job with the submission's handle and a fresh message; the next run collects that same
  submission (darkroom.inference.checkpoint), and a pause is not counted as an attempt;
* the dead-letter handler fails what the worker never could (crashes on every attempt), refunding it,
  and bills a completed job whose billing never went through.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from darkroom import intake
from darkroom.api.errors import ApiError
from darkroom.deadline import RequestDeadline
from darkroom.inference import checkpoint
from darkroom.metering import UsageEvent
from darkroom.observability import JOB_SECONDS, JOBS_COMPLETED, JOBS_FAILED, count, logger, metrics
from darkroom.ports import RequestContext, WorkerPorts
from darkroom.response_store import COMPLETED, IN_PROGRESS, QueuedJob, StoredResponse
from darkroom.responses import answer_job, job_admission, plan_from_job, refund_job

MAX_ATTEMPTS = 3  # the jobs queue's maxReceiveCount (template.yaml)
RETRY_DELAYS_SECONDS = (5, 30)  # before the second and third attempt
LEASE_MARGIN_SECONDS = 30  # a claim outlives its worker's invocation by this much
RESUME_DELAY_SECONDS = 30  # before looking again at upstream work that outlived an invocation
_TRANSIENT = frozenset({500, 503, 504})
_GAVE_UP = {"code": "server_error", "message": "The job could not be completed; its admission was refunded."}


class RetryLater(Exception):
    """The job should run again after ``delay_seconds``: SQS redelivers its message."""

    def __init__(self, delay_seconds: float) -> None:
        super().__init__(f"retry in {delay_seconds:.0f}s")
        self.delay_seconds = delay_seconds


def run_job(tenant_id: str, response_id: str, remaining_ms: int, ports: WorkerPorts) -> None:
    """One delivery of a job's message (raises :class:`RetryLater` to have it delivered again)."""
    stored = ports.states.load(tenant_id, response_id)
    if stored is None or stored.job is None:
        logger.warning("job has no response", extra={"response_id": response_id})
        return
    _correlate(stored, response_id)
    if stored.status == COMPLETED:
        _bill(tenant_id, response_id, stored.usage, ports, stored.job)
        return
    claim = ports.states.claim(tenant_id, response_id, remaining_ms / 1000 + LEASE_MARGIN_SECONDS)
    if (
        claim is None or claim.job is None or claim.token is None
    ):  # finished, cancelled, or a live worker holds it: this delivery is a duplicate
        logger.info("job not claimable", extra={"response_id": response_id, "status": stored.status})
        return
    logger.append_keys(response_id=response_id, attempt=claim.attempts)
    tenant = ports.tenants.get_tenant(tenant_id)
    if tenant is None:
        _end(
            tenant_id,
            response_id,
            claim,
            {"code": "tenant_not_found", "message": "The account no longer exists."},
            ports,
        )
        return
    job, token = claim.job, claim.token
    # The key that accepted the job, as the accepting request's tenant carried it: the usage's api_key_id.
    context = RequestContext(replace(tenant, key_id=job.key_id), job.request_id, RequestDeadline.for_job(remaining_ms))
    started = time.monotonic()
    try:
        # one decode budget per job, as one per request
        with checkpoint.resumable(claim.checkpoint), intake.request_decode_budget():
            plan = plan_from_job(context, response_id, job, ports.responses)
            record, usage, keys = answer_job(context, plan, job_admission(job), ports.responses)
    except checkpoint.StillRunning as running:
        # The upstream outlives this invocation: keep its handle, run the job again to collect it.
        if ports.states.pause(tenant_id, response_id, token, running.handle):
            ports.queue.send(tenant_id, response_id, delay_seconds=RESUME_DELAY_SECONDS)
            logger.info("job paused while the upstream works")
        return
    except ApiError as exc:
        _failed_attempt(
            tenant_id,
            response_id,
            claim,
            exc.status in _TRANSIENT,
            {"code": exc.code or "server_error", "message": exc.message},
            ports,
        )
        return
    except Exception:  # noqa: BLE001 - logged; the job is retried or failed, never left running
        logger.exception("job attempt failed")
        _failed_attempt(tenant_id, response_id, claim, True, dict(_GAVE_UP), ports)
        return
    metrics.add_metric(name=JOB_SECONDS, unit="Seconds", value=time.monotonic() - started)
    usage_item = {**asdict(usage), "at": usage.at.isoformat()}
    if not ports.states.complete(tenant_id, response_id, token, record, usage_item):
        logger.info("job result discarded: the job was cancelled or taken over")
        for key in keys:
            ports.responses.images.store.delete(key)
        return
    count(JOBS_COMPLETED)
    logger.info("job completed")
    _bill(tenant_id, response_id, usage_item, ports, job)


def _correlate(stored: StoredResponse, response_id: str) -> None:
    """The worker's log lines carry the accepting request's id as their correlation id (and the response id)."""
    if stored.job is not None:
        logger.set_correlation_id(stored.job.request_id)
    logger.append_keys(response_id=response_id)


def _failed_attempt(
    tenant_id: str,
    response_id: str,
    claim: StoredResponse,
    transient: bool,
    error: dict[str, str],
    ports: WorkerPorts,
) -> None:
    if (
        transient
        and claim.attempts < MAX_ATTEMPTS
        and claim.token is not None
        and ports.states.requeue(tenant_id, response_id, claim.token)
    ):
        logger.warning("job attempt failed; retrying", extra={"code": error["code"]})
        raise RetryLater(RETRY_DELAYS_SECONDS[min(claim.attempts, len(RETRY_DELAYS_SECONDS)) - 1])
    _end(tenant_id, response_id, claim, error, ports)


def _end(tenant_id: str, response_id: str, claim: StoredResponse, error: dict[str, str], ports: WorkerPorts) -> None:
    failed = ports.states.fail(tenant_id, response_id, error, token=claim.token)
    if failed is not None and failed.job is not None:
        refund_job(failed.job, ports.responses.images.admission)
        count(JOBS_FAILED)
        logger.warning("job failed", extra={"code": error["code"]})


def _bill(
    tenant_id: str, response_id: str, usage_item: dict[str, Any] | None, ports: WorkerPorts, job: QueuedJob | None
) -> None:
    """Record a completed job's usage (once: the meter is idempotent per request id), then forget it."""
    if usage_item is None:
        return
    usage = UsageEvent(**{**usage_item, "at": datetime.fromisoformat(usage_item["at"])})
    # Raises when DynamoDB fails: the message comes back, billing retried. The first record settles the job's
    # budget reservation to the bill (a retry that finds it recorded leaves the month as settled).
    if ports.responses.images.meter.record(usage) and job is not None:
        ports.responses.images.admission.settle(job_admission(job), usage.cost_usd)
    ports.states.billed(tenant_id, response_id)


def end_dead_job(tenant_id: str, response_id: str, ports: WorkerPorts) -> None:
    """A job whose message ran out of attempts: fail it (and refund) unless a live worker still holds it."""
    stored = ports.states.load(tenant_id, response_id)
    if stored is None or stored.job is None:
        return
    _correlate(stored, response_id)
    if stored.status == COMPLETED:
        _bill(tenant_id, response_id, stored.usage, ports, stored.job)
        return
    failed = ports.states.fail(tenant_id, response_id, dict(_GAVE_UP))
    if failed is not None and failed.job is not None:
        refund_job(failed.job, ports.responses.images.admission)
        count(JOBS_FAILED)
        logger.warning("dead job failed", extra={"response_id": response_id, "was": failed.status})
    elif stored.status == IN_PROGRESS:  # a worker's lease is still running: look again when it is over
        raise RetryLater(max(1.0, stored.lease_until - time.time()))
