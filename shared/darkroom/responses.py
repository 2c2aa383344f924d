"""The Responses API use case: one endpoint for analysis, text, and image generation and editing.

Routing is by the catalog's capabilities, never by model names: the ``image_generation`` tool (or an
image model named directly) produces an ``image_generation_call`` through the same generate and edit
use cases as the Images API (same limits, storage and usage); a model that analyzes gets the text and
images; a text-only model gets images described by its configured ``vision_fallback`` model, or a
400 naming it. Stored responses keep the conversation's text and its images by S3 reference, so
``previous_response_id`` carries both forward.
"""

from __future__ import annotations

import io
import math
import secrets
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from darkroom import deadline, intake
from darkroom.api.errors import InvalidRequest, ModelNotFound, ServiceUnavailable
from darkroom.api.errors import invalid_from_validation as _invalid
from darkroom.api.images import ImageEditRequest, ImageGenerateRequest
from darkroom.api.responses import (
    ImageGenerationCall,
    OutputMessage,
    OutputText,
    ResponseCreateRequest,
    ResponseObject,
    ResponseUsage,
)
from darkroom.catalog import Capability, ModelEntry
from darkroom.editing import EditRequest, edit_images, intake_limits
from darkroom.end_users import identify
from darkroom.generation import check_time_budget, generate_images, input_image_tokens, record_usage, resolve_request
from darkroom.inference import InputImage, TextJob, backend_for
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.observability import logger
from darkroom.response_input import Turn, check_options, image_tool, parse_input
from darkroom.response_store import COMPLETED, QUEUED, RESPONSE_ID
from darkroom.services import Services
from darkroom.tenancy import Tenant

ANALYSIS_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})  # vision input takes non-animated GIF too
MAX_CARRIED_IMAGES = 16


def _decode(reference: dict, param: str, tenant: Tenant, services: Services) -> intake.ImageHeader:
    limits = replace(intake_limits(services), formats=ANALYSIS_FORMATS)
    return intake.read_reference(
        reference,
        param=param,
        tenant_id=tenant.tenant_id,
        files=services.files,
        limits=limits,
        fetcher=services.fetcher,
    )


def _stored_images(keys: list[str], services: Services) -> list[intake.IntakeImage]:
    limits = intake.IntakeLimits(formats=ANALYSIS_FORMATS)  # every header read (and charged), then decoded
    headers = [intake.read_header(services.store.get(key), param="previous_response_id", limits=limits) for key in keys]
    return [header.decode() for header in headers]


def _text_tokens(*texts: str) -> int:
    return max(1, math.ceil(sum(len(t) for t in texts) / 4))


@dataclass
class _Plan:
    """A validated Responses request, ready to answer now or in a background job."""

    request: ResponseCreateRequest
    model: ModelEntry
    turn: Turn
    history: dict
    images: list[tuple[intake.IntakeImage, str]]  # the turn's input images, decoded, with their detail
    image_call: _ImageCall | None  # None: the answer is text
    response_id: str = field(default_factory=lambda: "resp_" + secrets.token_hex(16))
    created_at: int = field(default_factory=lambda: int(time.time()))
    input_keys: list[str] = field(default_factory=list)  # where the input images are stored, once they are
    end_user: str | None = None  # darkroom.end_users' opaque id for safety_identifier/user (never the raw value)


@dataclass
class _ImageCall:
    """The image the response will produce: an Images API request, validated, and what it edits."""

    edit: bool
    options: ImageGenerateRequest | ImageEditRequest
    base: intake.IntakeImage | None = None  # edits: the image edited (an input, or the thread's latest)
    mask: intake.IntakeImage | None = None


def create_response(
    tenant: Tenant, request: ResponseCreateRequest, request_id: str, services: Services
) -> ResponseObject:
    """Answer one Responses API request (and store it unless ``store`` is false); with ``background``,
    accept it as a job and answer at once with its id and status ``queued``."""
    plan = _plan(tenant, request, services)
    if request.background:
        return _enqueue(tenant, plan, request_id, services)
    response, produced, _ = _answer(tenant, plan, request_id, services)
    if response.store:
        _store_inputs(tenant, plan, services)
        services.responses.put(tenant.tenant_id, response.id, _record(plan, response, produced))
    return response


def _plan(tenant: Tenant, request: ResponseCreateRequest, services: Services) -> _Plan:
    """Every check a request gets before any work: parameters, model, input, tool options, time budget."""
    check_options(request)
    end_user = identify(tenant.tenant_id, request.safety_identifier, request.user)
    if request.background:
        if request.store is False:
            raise InvalidRequest(
                "Background mode needs a stored response: omit 'store' or send true.",
                param="store",
                code="unsupported_value",
            )
        if request.stream:
            raise InvalidRequest(
                "Streaming a background response is not supported; poll GET /v1/responses/{id}.",
                param="stream",
                code="unsupported_value",
            )
        if not services.jobs.enabled:
            raise InvalidRequest(
                "Background mode is not enabled on this deployment.", param="background", code="unsupported_value"
            )
    model = services.catalog.models.get(request.model)
    if model is None:
        raise ModelNotFound(request.model)
    turn = parse_input(request)
    tool = image_tool(request)
    history: dict = {"messages": [], "images": []}
    if request.previous_response_id:
        found = (
            services.responses.load(tenant.tenant_id, request.previous_response_id)
            if RESPONSE_ID.match(request.previous_response_id)
            else None
        )
        if found is None or found.status != COMPLETED:
            raise InvalidRequest(
                f"Previous response '{request.previous_response_id[:40]}' not found"
                + ("." if found is None else f" among completed responses (it is {found.status})."),
                param="previous_response_id",
                code="previous_response_not_found",
            )
        history = found.record["thread"]
    headers = [(_decode(ref, param, tenant, services), detail) for ref, param, detail in turn.images]
    mask_ref = tool.get("input_image_mask") if tool else None
    mask = _decode(mask_ref, "tools[0].input_image_mask", tenant, services) if mask_ref else None  # a header
    images = [(header.decode(), detail) for header, detail in headers]  # every header read (and charged) first
    plan = _Plan(request, model, turn, history, images, image_call=None, end_user=end_user)
    if tool is not None or model.can(Capability.GENERATE) or model.can(Capability.EDIT):
        plan.image_call = _plan_image_call(plan, tool or {}, mask.decode() if mask else None, services)
    else:
        _check_text_model(model, bool(images or history["images"]), background=bool(request.background))
    return plan


def _plan_image_call(plan: _Plan, tool: dict, mask: intake.IntakeImage | None, services: Services) -> _ImageCall:
    request, model = plan.request, plan.model
    tool_options = {
        k: v
        for k, v in tool.items()
        if k not in ("type", "action", "input_image_mask", "partial_images", "model", "input_fidelity")
    }
    image_model = tool.get("model") or (
        request.model if (model.can(Capability.GENERATE) or model.can(Capability.EDIT)) else None
    )
    action = tool.get("action", "auto")
    if action not in ("auto", "generate", "edit"):
        raise InvalidRequest("Invalid value for 'tools[0].action': generate, edit or auto.", param="tools[0].action")
    prompt = "\n".join(text for role, text in plan.turn.messages if role == "user" and text).strip()
    if not prompt:
        raise InvalidRequest("The input has no text to draw from.", param="input")
    edit_model = services.catalog.models.get(image_model or services.catalog.defaults.get(Capability.EDIT, ""))
    can_edit = edit_model is not None and edit_model.can(Capability.EDIT)
    base = plan.images[0][0] if plan.images else None
    if base is None and plan.history["images"] and action != "generate":
        base = _stored_images(plan.history["images"][-1:], services)[0]  # "now make it blue": the latest image
    edit = action == "edit" or (action == "auto" and base is not None and can_edit)
    if action == "edit" and base is None:
        raise InvalidRequest("An edit needs an input image.", param="tools[0].action")
    try:
        if edit:
            options = ImageEditRequest(
                prompt=prompt,
                model=image_model,
                response_format="b64_json",
                input_fidelity=tool.get("input_fidelity"),
                **tool_options,
            )
            job = resolve_request(options, services, Capability.EDIT, input_size=base.size)
        else:
            options = ImageGenerateRequest(prompt=prompt, model=image_model, response_format="b64_json", **tool_options)
            job = resolve_request(options, services)
        check_time_budget(job, services, background=bool(request.background))
    except ValidationError as exc:
        raise _tool_error(_invalid(exc.errors(include_url=False))) from None  # names the type only
    except InvalidRequest as exc:
        named = exc.param in tool_options or exc.param == "model" and tool.get("model")
        raise _tool_error(exc) if named else exc from None
    return _ImageCall(edit, options, base if edit else None, mask if edit else None)


def _check_text_model(model: ModelEntry, has_images: bool, background: bool) -> None:
    if not background and model.endpoint is not None and model.endpoint.async_inference:
        raise InvalidRequest(
            f'{model.id} runs only in background mode: send "background": true and poll GET /v1/responses/{{id}}.',
            param="model",
            code="use_background_mode",
        )
    if has_images and not model.can(Capability.ANALYZE) and model.vision_fallback is None:
        raise InvalidRequest(f"The model '{model.id}' cannot read images.", param="model", code="model_not_supported")
    if not (model.can(Capability.TEXT) or model.can(Capability.ANALYZE)):
        raise InvalidRequest(
            f"The model '{model.id}' cannot answer in text.", param="model", code="model_not_supported"
        )


def _answer(tenant: Tenant, plan: _Plan, request_id: str, services: Services, admitted: Admission | None = None):
    """Do the work: (the response, its produced images as (call id, S3 key), the usage).

    ``admitted``: a background job's admission; the job refunds it on failure and bills the usage when it
    completes. Without it the work is admitted, refunded and billed here, as any synchronous request."""
    request = plan.request
    if plan.image_call is not None:
        output, usage, produced, billed = _image_answer(tenant, plan, request_id, services, admitted)
    else:
        output, usage, billed = _text_answer(tenant, plan, request_id, services, admitted)
        produced = []
    response = ResponseObject(
        id=plan.response_id,
        created_at=plan.created_at,
        model=request.model,
        output=output,
        instructions=request.instructions,
        metadata=request.metadata or {},
        previous_response_id=request.previous_response_id,
        store=request.store is not False,
        tools=request.tools or [],
        tool_choice=request.tool_choice or "auto",
        usage=usage,
        background=bool(request.background),
    )
    return response, produced, billed


def _image_answer(tenant, plan: _Plan, request_id, services: Services, admitted: Admission | None):
    call = plan.image_call
    if call.edit:
        base, mask = call.base, call.mask
        result = edit_images(
            tenant,
            EditRequest(
                options=call.options, images=[lambda: base], mask=(lambda: mask) if mask else None, encoded_bytes=0
            ),
            request_id,
            services,
            admitted=admitted,
            end_user=plan.end_user,
        )
    else:
        result = generate_images(tenant, call.options, request_id, services, admitted=admitted, end_user=plan.end_user)
    image = result.response.data[0]
    output = ImageGenerationCall(
        id="ig_" + secrets.token_hex(16),
        result=image.b64_json,
        url=image.url,
        revised_prompt=image.revised_prompt,
        action="edit" if call.edit else "generate",
        size=result.response.size,
        quality=result.response.quality,
        output_format=result.response.output_format,
        background=result.response.background,
    )
    usage = result.response.usage
    return (
        [output],
        ResponseUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            images=1,
        ),
        [(output.id, result.keys[0])],
        result.usage,
    )


def _tool_error(error: InvalidRequest) -> InvalidRequest:
    """An Images API error about an option that came from the image_generation tool, named as such."""
    param = f"tools[0].{error.param}"
    return InvalidRequest(error.message.replace(f"'{error.param}'", f"'{param}'"), param=param, code=error.code)


def _text_answer(tenant, plan: _Plan, request_id, services: Services, admitted: Admission | None):
    request, model = plan.request, plan.model
    carried = [(image, "auto") for image in _stored_images(plan.history["images"][-MAX_CARRIED_IMAGES:], services)]
    pictures = [InputImage(i.image, i.format, detail) for i, detail in (*carried, *plan.images)]
    messages = [*map(tuple, plan.history["messages"]), *plan.turn.messages]
    seconds = deadline.inference_budget(services.settings)
    described = bool(pictures) and not model.can(Capability.ANALYZE)
    image_tokens = 0
    if pictures and model.can(Capability.ANALYZE):
        image_tokens = sum(85 if p.detail == "low" else input_image_tokens([p.image.size]) for p in pictures)
    admission = admitted or services.limiter.admit(tenant, 0)  # counts as a request; no images
    with nullcontext() if admitted else services.limiter.refunded_on_failure(admission):
        if described:
            messages.append(("user", _describe(model, pictures, seconds, services)))
        text = backend_for(model).respond(
            model, TextJob(request.instructions, messages, [] if described else pictures, seconds)
        )
        text_tokens = _text_tokens(request.instructions or "", *(t for _, t in messages))
        output_tokens = _text_tokens(text)
        price = model.price
        cost = (
            text_tokens * price.input_text_per_million
            + image_tokens * price.input_image_per_million
            + output_tokens * price.output_text_per_million
        ) / 1e6
        usage = UsageEvent(
            request_id=request_id,
            tenant_id=tenant.tenant_id,
            operation="analyze" if image_tokens else "text",
            model=model.id,
            size="-",
            quality="-",
            images=0,
            input_text_tokens=text_tokens,
            input_image_tokens=image_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            end_user=plan.end_user,
        )
        if admitted is None:
            record_usage(usage, services)
    message = OutputMessage(id="msg_" + secrets.token_hex(16), content=[OutputText(text=text)])
    return (
        [message],
        ResponseUsage(
            input_tokens=text_tokens + image_tokens,
            output_tokens=output_tokens,
            total_tokens=text_tokens + image_tokens + output_tokens,
        ),
        usage,
    )


def _describe(model: ModelEntry, pictures: list[InputImage], seconds: float, services: Services) -> str:
    """Auxiliary vision: each image described by the fallback model; a failure is a note, not a 500."""
    describer = services.catalog.models[model.vision_fallback]
    notes = []
    for number, picture in enumerate(pictures, start=1):
        try:
            text = backend_for(describer).respond(describer, TextJob(None, [], [picture], seconds))
            notes.append(f"[Image {number}, described by {describer.id}: {text}]")
        except Exception:  # noqa: BLE001 - one undescribable image must not fail the answer
            logger.warning("image description failed", extra={"image": number})
            notes.append(f"[Image {number} could not be described.]")
    return "\n".join(notes)


def _store_inputs(tenant: Tenant, plan: _Plan, services: Services) -> None:
    """Keep the turn's input images in S3 (re-encoded: no input metadata is kept), once."""
    if plan.input_keys:
        return
    for index, (image, _) in enumerate(plan.images):
        key = f"tenants/{tenant.tenant_id}/responses/{plan.response_id}/input-{index}.png"
        services.store.put(key, _png(image.image), "png")
        plan.input_keys.append(key)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _record(plan: _Plan, response: ResponseObject, produced) -> dict:
    """What a stored response keeps: the response minus image bytes, the thread, where its images are."""
    answer = "\n".join(
        part.text for item in response.output if isinstance(item, OutputMessage) for part in item.content
    )
    history = plan.history
    thread = {
        "messages": [*history["messages"], *plan.turn.messages, *([("assistant", answer)] if answer else [])],
        "images": [*history["images"], *plan.input_keys, *(key for _, key in produced)][-MAX_CARRIED_IMAGES:],
    }
    body = response.model_dump(mode="json")
    for item in body["output"]:
        item.pop("result", None)
        item.pop("url", None)
    return {"response": body, "thread": thread, "outputs": dict(produced)}


# -- background mode ---------------------------------------------------------------------------------------


def _enqueue(tenant: Tenant, plan: _Plan, request_id: str, services: Services) -> ResponseObject:
    """Admit the job now (limits hold at acceptance), store its inputs, queue it, answer ``queued``."""
    admission = services.limiter.admit(tenant, 1 if plan.image_call is not None else 0)
    with services.limiter.refunded_on_failure(admission):
        _store_inputs(tenant, plan, services)
        mask_key = None
        call = plan.image_call
        if call is not None and call.mask is not None:
            mask_key = f"tenants/{tenant.tenant_id}/responses/{plan.response_id}/mask.png"
            services.store.put(mask_key, _png(call.mask.image), "png")
        # The end user is kept as its opaque id ("end_user"), never as the raw safety_identifier/user.
        request = plan.request.model_dump(
            mode="json", exclude={"input", "safety_identifier", "user"}, exclude_none=True
        )
        for tool in request.get("tools", []):
            tool.pop("input_image_mask", None)  # stored as mask_key: a data URL could be megabytes
        job = {
            "request": request,
            "request_id": request_id,
            "messages": plan.turn.messages,
            "inputs": [[key, detail] for key, (_, detail) in zip(plan.input_keys, plan.images, strict=True)],
            "image_call": call is not None,
            "mask": mask_key,
            "history": plan.history,
            "end_user": plan.end_user,
            "created_at": plan.created_at,
            "admission": [list(taken) for taken in admission.taken],
        }
        queued = ResponseObject(
            id=plan.response_id,
            created_at=plan.created_at,
            model=plan.request.model,
            output=[],
            status=QUEUED,
            background=True,
            instructions=plan.request.instructions,
            metadata=plan.request.metadata or {},
            previous_response_id=plan.request.previous_response_id,
            tools=plan.request.tools or [],
            tool_choice=plan.request.tool_choice or "auto",
        )
        services.responses.put(
            tenant.tenant_id,
            plan.response_id,
            {"response": queued.model_dump(mode="json"), "thread": None, "outputs": {}},
            job=job,
        )
        try:
            services.jobs.send(tenant.tenant_id, plan.response_id)
        except (ClientError, BotoCoreError) as exc:
            services.responses.delete(tenant.tenant_id, plan.response_id)
            logger.error("job queue send failed", extra={"error": type(exc).__name__})
            raise ServiceUnavailable("The job could not be queued; nothing was started. Retry.") from exc
    logger.info("response queued", extra={"response_id": plan.response_id})
    return queued


def plan_from_job(tenant: Tenant, response_id: str, job: dict, services: Services) -> _Plan:
    """The plan a queued job was accepted with, its images read back from S3 (validated again)."""
    request = ResponseCreateRequest.model_validate({**job["request"], "input": ""})
    model = services.catalog.models.get(request.model)
    if model is None:
        raise ModelNotFound(request.model)
    turn = Turn([tuple(message) for message in job["messages"]], [])
    images = [*zip(_stored_images([k for k, _ in job["inputs"]], services), [d for _, d in job["inputs"]], strict=True)]
    end_user = job.get("end_user")
    if end_user:
        logger.append_keys(end_user=end_user)
    plan = _Plan(
        request,
        model,
        turn,
        job["history"],
        images,
        image_call=None,
        response_id=response_id,
        created_at=job["created_at"],
        input_keys=[key for key, _ in job["inputs"]],
        end_user=end_user,
    )
    if job["image_call"]:
        mask = _stored_images([job["mask"]], services)[0] if job["mask"] else None
        plan.image_call = _plan_image_call(plan, image_tool(request) or {}, mask, services)
    return plan


def answer_job(tenant: Tenant, plan: _Plan, request_id: str, admission: Admission, services: Services):
    """Run an accepted job: (the record to store, the usage to bill once it is stored, the S3 keys made)."""
    response, produced, usage = _answer(tenant, plan, request_id, services, admitted=admission)
    return _record(plan, response, produced), usage, [key for _, key in produced]
