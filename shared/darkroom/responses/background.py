"""Background mode: a request is planned and admitted when it is accepted (limits hold at acceptance), its
inputs kept in S3, and its :class:`~darkroom.response_store.QueuedJob` queued; the worker
(:mod:`darkroom.jobs`) plans it again from the job and answers it under the acceptance's admission."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from darkroom.api.errors import ModelNotFound, ServiceUnavailable
from darkroom.api.images import ImageEditRequest
from darkroom.api.responses import ResponseCreateRequest, ResponseObject
from darkroom.catalog import Capability
from darkroom.generation import image_cost_usd
from darkroom.image_job import resolve_request
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.observability import logger
from darkroom.ports import RequestContext, ResponsePorts
from darkroom.response_store import QueuedJob, ResponseRecord
from darkroom.responses.answering import answer
from darkroom.responses.input import Turn, image_tool
from darkroom.responses.planning import Plan, plan_image_call
from darkroom.responses.rendering import record, response_object
from darkroom.responses.thread import png, stored_images


def store_inputs(context: RequestContext, plan: Plan, ports: ResponsePorts) -> None:
    """Keep the turn's input images in S3 (re-encoded: no input metadata is kept), once."""
    if plan.input_keys:
        return
    for index, (image, _) in enumerate(plan.images):
        key = f"tenants/{context.tenant.tenant_id}/responses/{plan.response_id}/input-{index}.png"
        ports.images.store.put(key, png(image.image), "png")
        plan.input_keys.append(key)


def _estimate(plan: Plan, ports: ResponsePorts) -> float:
    """The image call's estimated cost (the formula of its bill), reserved in the tenant's monthly budget at
    acceptance and settled to the bill when the job's usage is recorded (darkroom.budgets)."""
    call, catalog = plan.image_call, ports.images.catalog
    if call is None:
        return 0.0
    if isinstance(call.options, ImageEditRequest) and call.base is not None:
        size = call.base.size
        job = resolve_request(call.options, catalog, Capability.EDIT, input_size=size)
        return image_cost_usd(call.options.prompt, job, [size])
    return image_cost_usd(call.options.prompt, resolve_request(call.options, catalog))


def enqueue(context: RequestContext, plan: Plan, ports: ResponsePorts) -> ResponseObject:
    """Admit the job now, store its inputs, queue it, answer ``queued``."""
    tenant, admitter = context.tenant, ports.images.admission
    admission = admitter.admit(tenant, 1 if plan.image_call is not None else 0, _estimate(plan, ports))
    with admitter.refunded_on_failure(admission):
        store_inputs(context, plan, ports)
        mask_key = None
        call = plan.image_call
        if call is not None and call.mask is not None:
            mask_key = f"tenants/{tenant.tenant_id}/responses/{plan.response_id}/mask.png"
            ports.images.store.put(mask_key, png(call.mask.image), "png")
        # The end user is kept as its opaque id ("end_user"), never as the raw safety_identifier/user.
        request = plan.request.model_dump(
            mode="json", exclude={"input", "safety_identifier", "user"}, exclude_none=True
        )
        for tool in request.get("tools", []):
            tool.pop("input_image_mask", None)  # stored as mask_key: a data URL could be megabytes
        job = QueuedJob(
            request=request,
            request_id=context.request_id,
            messages=plan.turn.messages,
            inputs=[(key, detail) for key, (_, detail) in zip(plan.input_keys, plan.images, strict=True)],
            image_call=call is not None,
            mask=mask_key,
            history=plan.history,
            end_user=plan.end_user,
            created_at=plan.created_at,
            admission=list(admission.taken),
            key_id=tenant.key_id,
        )
        queued = response_object(plan, None, None)
        ports.records.put(
            tenant.tenant_id, plan.response_id, ResponseRecord(response=queued.model_dump(mode="json")), job=job
        )
        try:
            ports.jobs.send(tenant.tenant_id, plan.response_id)
        except (ClientError, BotoCoreError) as exc:
            ports.records.delete(tenant.tenant_id, plan.response_id)
            logger.error("job queue send failed", extra={"error": type(exc).__name__})
            raise ServiceUnavailable("The job could not be queued; nothing was started. Retry.") from exc
    logger.info("response queued", extra={"response_id": plan.response_id})
    return queued


def plan_from_job(context: RequestContext, response_id: str, job: QueuedJob, ports: ResponsePorts) -> Plan:
    """The plan a queued job was accepted with, its images read back from S3 (validated again)."""
    request = ResponseCreateRequest.model_validate({**job.request, "input": ""})
    model = ports.images.catalog.models.get(request.model)
    if model is None:
        raise ModelNotFound(request.model)
    store = ports.images.store
    images = stored_images([key for key, _ in job.inputs], store)
    if job.end_user:
        logger.append_keys(end_user=job.end_user)
    plan = Plan(
        request,
        model,
        Turn(list(job.messages), []),
        job.history,
        [(image, detail) for image, (_, detail) in zip(images, job.inputs, strict=True)],
        image_call=None,
        response_id=response_id,
        created_at=job.created_at,
        input_keys=[key for key, _ in job.inputs],
        end_user=job.end_user,
    )
    if job.image_call:
        mask = stored_images([job.mask], store)[0] if job.mask else None
        plan.image_call = plan_image_call(plan, image_tool(request) or {}, mask, ports)
    return plan


def job_admission(job: QueuedJob) -> Admission:
    """What a job's acceptance counted, as the limiter refunds it."""
    return Admission(states=(), now=0.0, taken=tuple(job.admission))


def answer_job(
    context: RequestContext, plan: Plan, admission: Admission, ports: ResponsePorts
) -> tuple[ResponseRecord, UsageEvent, list[str]]:
    """Run an accepted job: (the record to store, the usage to bill once it is stored, the S3 keys made)."""
    response, produced, usage = answer(context, plan, ports, admission)
    return record(plan, response, produced), usage, [key for _, key in produced]
