"""The Responses API use case: one endpoint for analysis, text, and image generation and editing.

Routing is by the catalog's capabilities, never by model names: the ``image_generation`` tool (or an
image model named directly) produces an ``image_generation_call`` through the same generate and edit
use cases as the Images API (same limits, storage and usage); a model that analyzes gets the text and
images; a text-only model gets images described by its configured ``vision_fallback`` model, or a
400 naming it. Stored responses keep the conversation's text and its images by S3 reference, so
``previous_response_id`` carries both forward.
"""

from __future__ import annotations

import base64
import io
import math
import re
import secrets
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from darkroom import deadline, intake
from darkroom.api.errors import InvalidRequest, ModelNotFound, NotFound, ServiceUnavailable, UnknownParameter
from darkroom.api.errors import invalid_from_validation as _invalid
from darkroom.api.images import ImageEditRequest, ImageGenerateRequest
from darkroom.api.responses import (
    IGNORED_PARAMETERS,
    ImageGenerationCall,
    OutputMessage,
    OutputText,
    ResponseCreateRequest,
    ResponseDeleted,
    ResponseObject,
    ResponseUsage,
)
from darkroom.catalog import Capability, ModelEntry
from darkroom.editing import EditRequest, edit_images, intake_limits
from darkroom.generation import check_time_budget, generate_images, input_image_tokens, record_usage, resolve_request
from darkroom.inference import InputImage, TextJob, backend_for
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.observability import logger
from darkroom.response_store import COMPLETED, QUEUED, StoredResponse
from darkroom.services import Services
from darkroom.tenancy import Tenant

RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{32}$")
ANALYSIS_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})  # vision input takes non-animated GIF too
MAX_CARRIED_IMAGES = 16
TOOL_OPTIONS = frozenset({"type", "model", "size", "quality", "output_format", "output_compression", "background",
                          "moderation", "action", "input_image_mask", "partial_images", "input_fidelity"})
ROLES = frozenset({"user", "assistant", "system", "developer"})


@dataclass
class _Turn:
    messages: list[tuple[str, str]]  # (role, text) of this request's input
    images: list[tuple[dict, str, str]]  # (reference, param, detail)


def _parse_input(request: ResponseCreateRequest) -> _Turn:
    if isinstance(request.input, str):
        return _Turn([("user", request.input)], [])
    turn = _Turn([], [])
    for i, item in enumerate(request.input):
        kind = item.get("type", "message")
        if kind in ("image_generation_call", "reasoning"):  # earlier output echoed back: context is threaded
            continue
        role = item.get("role")
        if kind != "message" or role not in ROLES:
            raise InvalidRequest(f"input[{i}] must be a message with a role of {', '.join(sorted(ROLES))}.",
                                 param=f"input[{i}]")
        content = item.get("content")
        if isinstance(content, str):
            turn.messages.append((role, content))
            continue
        if not isinstance(content, list):
            raise InvalidRequest(f"input[{i}].content must be a string or a list of parts.",
                                 param=f"input[{i}].content")
        texts = []
        for j, part in enumerate(content):
            param = f"input[{i}].content[{j}]"
            part_type = part.get("type") if isinstance(part, dict) else None
            if part_type in ("input_text", "output_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part_type == "input_image" and role == "user":
                reference = {k: part[k] for k in ("image_url", "file_id") if part.get(k) is not None}
                detail = part.get("detail") or "auto"
                if detail not in ("auto", "low", "high", "original"):
                    raise InvalidRequest(f"Invalid value for '{param}.detail'.", param=f"{param}.detail")
                turn.images.append((reference, param, detail))
            else:
                raise InvalidRequest(f"Unsupported content part in '{param}'.", param=f"{param}.type",
                                     code="unsupported_value")
        turn.messages.append((role, "\n".join(texts)))
    if not turn.messages and not turn.images:
        raise InvalidRequest("'input' is empty.", param="input")
    return turn


def _image_tool(request: ResponseCreateRequest) -> dict | None:
    tools = request.tools or []
    for i, tool in enumerate(tools):
        if tool.get("type") != "image_generation":
            raise InvalidRequest(f"Unsupported tool type in 'tools[{i}]': darkroom offers image_generation.",
                                 param=f"tools[{i}].type", code="unsupported_value")
        for name in tool:
            if name not in TOOL_OPTIONS:
                raise UnknownParameter(f"tools[{i}].{name}")
    choice = request.tool_choice
    if choice not in (None, "auto", "none", "required") and choice != {"type": "image_generation"}:
        raise InvalidRequest("Invalid value for 'tool_choice'.", param="tool_choice")
    if choice == "none" or not tools:
        return None
    return tools[0]


def _decode(reference: dict, param: str, tenant: Tenant, services: Services) -> intake.IntakeImage:
    limits = intake_limits(services)
    limits = intake.IntakeLimits(max_images=limits.max_images, max_image_bytes=limits.max_image_bytes,
                                 max_pixels=limits.max_pixels, formats=ANALYSIS_FORMATS)
    return intake.read_reference(reference, param=param, tenant_id=tenant.tenant_id, files=services.files,
                                 limits=limits, fetcher=services.fetcher)


def _stored_image(key: str, services: Services) -> intake.IntakeImage:
    return intake.open_image(services.store.get(key), param="previous_response_id",
                             limits=intake.IntakeLimits(formats=ANALYSIS_FORMATS))


def _text_tokens(*texts: str) -> int:
    return max(1, math.ceil(sum(len(t) for t in texts) / 4))


@dataclass
class _Plan:
    """A validated Responses request, ready to answer now or in a background job."""

    request: ResponseCreateRequest
    model: ModelEntry
    turn: _Turn
    history: dict
    images: list[tuple[intake.IntakeImage, str]]  # the turn's input images, decoded, with their detail
    image_call: _ImageCall | None  # None: the answer is text
    response_id: str = field(default_factory=lambda: "resp_" + secrets.token_hex(16))
    created_at: int = field(default_factory=lambda: int(time.time()))
    input_keys: list[str] = field(default_factory=list)  # where the input images are stored, once they are


@dataclass
class _ImageCall:
    """The image the response will produce: an Images API request, validated, and what it edits."""

    edit: bool
    options: ImageGenerateRequest | ImageEditRequest
    base: intake.IntakeImage | None = None  # edits: the image edited (an input, or the thread's latest)
    mask: intake.IntakeImage | None = None


def create_response(tenant: Tenant, request: ResponseCreateRequest, request_id: str,
                    services: Services) -> ResponseObject:
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
    for name in request.model_extra or {}:
        if name not in IGNORED_PARAMETERS:
            raise UnknownParameter(name)
    if request.background:
        if request.store is False:
            raise InvalidRequest("Background mode needs a stored response: omit 'store' or send true.",
                                 param="store", code="unsupported_value")
        if request.stream:
            raise InvalidRequest("Streaming a background response is not supported; poll GET /v1/responses/{id}.",
                                 param="stream", code="unsupported_value")
        if not services.jobs.enabled:
            raise InvalidRequest("Background mode is not enabled on this deployment.", param="background",
                                 code="unsupported_value")
    model = services.catalog.models.get(request.model)
    if model is None:
        raise ModelNotFound(request.model)
    turn = _parse_input(request)
    tool = _image_tool(request)
    history: dict = {"messages": [], "images": []}
    if request.previous_response_id:
        found = (services.responses.load(tenant.tenant_id, request.previous_response_id)
                 if RESPONSE_ID.match(request.previous_response_id) else None)
        if found is None or found.status != COMPLETED:
            raise InvalidRequest(f"Previous response '{request.previous_response_id[:40]}' not found"
                                 + ("." if found is None else f" among completed responses (it is {found.status})."),
                                 param="previous_response_id", code="previous_response_not_found")
        history = found.record["thread"]
    images = [(_decode(ref, param, tenant, services), detail) for ref, param, detail in turn.images]
    plan = _Plan(request, model, turn, history, images, image_call=None)
    if tool is not None or model.can(Capability.GENERATE) or model.can(Capability.EDIT):
        mask = tool.get("input_image_mask") if tool else None
        mask_image = _decode(mask, "tools[0].input_image_mask", tenant, services) if mask else None
        plan.image_call = _plan_image_call(plan, tool or {}, mask_image, services)
    else:
        _check_text_model(model, bool(images or history["images"]), background=bool(request.background))
    return plan


def _plan_image_call(plan: _Plan, tool: dict, mask: intake.IntakeImage | None, services: Services) -> _ImageCall:
    request, model = plan.request, plan.model
    tool_options = {k: v for k, v in tool.items() if k not in ("type", "action", "input_image_mask",
                                                              "partial_images", "model", "input_fidelity")}
    image_model = tool.get("model") or (request.model if (model.can(Capability.GENERATE)
                                                         or model.can(Capability.EDIT)) else None)
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
        base = _stored_image(plan.history["images"][-1], services)  # "now make it blue": the latest image
    edit = action == "edit" or (action == "auto" and base is not None and can_edit)
    if action == "edit" and base is None:
        raise InvalidRequest("An edit needs an input image.", param="tools[0].action")
    try:
        if edit:
            options = ImageEditRequest(prompt=prompt, model=image_model, response_format="b64_json",
                                       input_fidelity=tool.get("input_fidelity"), **tool_options)
            job = resolve_request(options, services, Capability.EDIT, input_size=base.size)
        else:
            options = ImageGenerateRequest(prompt=prompt, model=image_model, response_format="b64_json",
                                           **tool_options)
            job = resolve_request(options, services)
        check_time_budget(job, services, background=bool(request.background))
    except ValidationError as exc:
        raise _tool_error(_invalid(exc.errors(include_input=False, include_url=False))) from None
    except InvalidRequest as exc:
        named = exc.param in tool_options or exc.param == "model" and tool.get("model")
        raise _tool_error(exc) if named else exc from None
    return _ImageCall(edit, options, base if edit else None, mask if edit else None)


def _check_text_model(model: ModelEntry, has_images: bool, background: bool) -> None:
    if not background and model.endpoint is not None and model.endpoint.async_inference:
        raise InvalidRequest(f"{model.id} runs only in background mode: send \"background\": true and poll "
                             "GET /v1/responses/{id}.", param="model", code="use_background_mode")
    if has_images and not model.can(Capability.ANALYZE) and model.vision_fallback is None:
        raise InvalidRequest(f"The model '{model.id}' cannot read images.", param="model", code="model_not_supported")
    if not (model.can(Capability.TEXT) or model.can(Capability.ANALYZE)):
        raise InvalidRequest(f"The model '{model.id}' cannot answer in text.", param="model",
                             code="model_not_supported")


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
        id=plan.response_id, created_at=plan.created_at, model=request.model, output=output,
        instructions=request.instructions, metadata=request.metadata or {},
        previous_response_id=request.previous_response_id, store=request.store is not False,
        tools=request.tools or [], tool_choice=request.tool_choice or "auto", usage=usage,
        background=bool(request.background),
    )
    return response, produced, billed


def _image_answer(tenant, plan: _Plan, request_id, services: Services, admitted: Admission | None):
    call = plan.image_call
    if call.edit:
        base, mask = call.base, call.mask
        result = edit_images(tenant, EditRequest(options=call.options, images=[lambda: base],
                                                 mask=(lambda: mask) if mask else None, encoded_bytes=0),
                             request_id, services, admitted=admitted)
    else:
        result = generate_images(tenant, call.options, request_id, services, admitted=admitted)
    image = result.response.data[0]
    output = ImageGenerationCall(
        id="ig_" + secrets.token_hex(16), result=image.b64_json, url=image.url, revised_prompt=image.revised_prompt,
        action="edit" if call.edit else "generate", size=result.response.size, quality=result.response.quality,
        output_format=result.response.output_format, background=result.response.background,
    )
    usage = result.response.usage
    return [output], ResponseUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                   total_tokens=usage.total_tokens, images=1), [(output.id, result.keys[0])], \
        result.usage


def _tool_error(error: InvalidRequest) -> InvalidRequest:
    """An Images API error about an option that came from the image_generation tool, named as such."""
    param = f"tools[0].{error.param}"
    return InvalidRequest(error.message.replace(f"'{error.param}'", f"'{param}'"), param=param, code=error.code)


def _text_answer(tenant, plan: _Plan, request_id, services: Services, admitted: Admission | None):
    request, model = plan.request, plan.model
    carried = [(_stored_image(key, services), "auto") for key in plan.history["images"][-MAX_CARRIED_IMAGES:]]
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
        text = backend_for(model).respond(model, TextJob(request.instructions, messages,
                                                         [] if described else pictures, seconds))
        text_tokens = _text_tokens(request.instructions or "", *(t for _, t in messages))
        output_tokens = _text_tokens(text)
        price = model.price
        cost = (text_tokens * price.input_text_per_million + image_tokens * price.input_image_per_million
                + output_tokens * price.output_text_per_million) / 1e6
        usage = UsageEvent(
            request_id=request_id, tenant_id=tenant.tenant_id, operation="analyze" if image_tokens else "text",
            model=model.id, size="-", quality="-", images=0, input_text_tokens=text_tokens,
            input_image_tokens=image_tokens, output_tokens=output_tokens, cost_usd=cost)
        if admitted is None:
            record_usage(usage, services)
    message = OutputMessage(id="msg_" + secrets.token_hex(16), content=[OutputText(text=text)])
    return [message], ResponseUsage(input_tokens=text_tokens + image_tokens, output_tokens=output_tokens,
                                    total_tokens=text_tokens + image_tokens + output_tokens), usage


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
    answer = "\n".join(part.text for item in response.output if isinstance(item, OutputMessage)
                       for part in item.content)
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
        request = plan.request.model_dump(mode="json", exclude={"input"}, exclude_none=True)
        for tool in request.get("tools", []):
            tool.pop("input_image_mask", None)  # stored as mask_key: a data URL could be megabytes
        job = {
            "request": request, "request_id": request_id, "messages": plan.turn.messages,
            "inputs": [[key, detail] for key, (_, detail) in zip(plan.input_keys, plan.images, strict=True)],
            "image_call": call is not None, "mask": mask_key, "history": plan.history,
            "created_at": plan.created_at, "admission": [list(taken) for taken in admission.taken],
        }
        queued = ResponseObject(
            id=plan.response_id, created_at=plan.created_at, model=plan.request.model, output=[], status=QUEUED,
            background=True, instructions=plan.request.instructions, metadata=plan.request.metadata or {},
            previous_response_id=plan.request.previous_response_id, tools=plan.request.tools or [],
            tool_choice=plan.request.tool_choice or "auto",
        )
        services.responses.put(tenant.tenant_id, plan.response_id, {"response": queued.model_dump(mode="json"),
                                                                    "thread": None, "outputs": {}}, job=job)
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
    turn = _Turn([tuple(message) for message in job["messages"]], [])
    images = [(_stored_image(key, services), detail) for key, detail in job["inputs"]]
    plan = _Plan(request, model, turn, job["history"], images, image_call=None, response_id=response_id,
                 created_at=job["created_at"], input_keys=[key for key, _ in job["inputs"]])
    if job["image_call"]:
        mask = _stored_image(job["mask"], services) if job["mask"] else None
        plan.image_call = _plan_image_call(plan, _image_tool(request) or {}, mask, services)
    return plan


def answer_job(tenant: Tenant, plan: _Plan, request_id: str, admission: Admission, services: Services):
    """Run an accepted job: (the record to store, the usage to bill once it is stored, the S3 keys made)."""
    response, produced, usage = _answer(tenant, plan, request_id, services, admitted=admission)
    return _record(plan, response, produced), usage, [key for _, key in produced]


def retrieve_response(tenant: Tenant, response_id: str, services: Services) -> ResponseObject:
    """A stored response, with fresh URLs and the images read back from S3; a background one in its
    current state (output only once completed; ``error`` once failed)."""
    return _render(_load(tenant, response_id, services), services)


def _load(tenant: Tenant, response_id: str, services: Services) -> StoredResponse:
    found = services.responses.load(tenant.tenant_id, response_id) if RESPONSE_ID.match(response_id) else None
    if found is None:
        raise NotFound(f"No response '{response_id[:40]}'.", param="response_id", code="not_found")
    return found


def _render(found: StoredResponse, services: Services) -> ResponseObject:
    record = found.record
    response = ResponseObject.model_validate(record["response"])
    response.status = found.status
    if found.error:
        response.error = found.error
    for item in response.output:
        key = record["outputs"].get(item.id) if isinstance(item, ImageGenerationCall) else None
        if key:
            item.result = base64.b64encode(services.store.get(key)).decode("ascii")
            item.url = services.store.presign(key, item.output_format or "png")
    return response


def cancel_response(tenant: Tenant, response_id: str, services: Services) -> ResponseObject:
    """Cancel a background response that is queued or running; its admission is given back. A finished
    one is answered as it is; a response that was not created in background mode cannot be cancelled."""
    found = _load(tenant, response_id, services)
    if not found.background:
        raise InvalidRequest("Only responses created with background: true can be cancelled.",
                             param="response_id", code="not_cancellable")
    cancelled = services.responses.cancel(tenant.tenant_id, response_id)
    if cancelled is not None:
        refund_job(cancelled.job, services)
        logger.info("response cancelled", extra={"response_id": response_id, "was": cancelled.status})
        found = services.responses.load(tenant.tenant_id, response_id)
    return _render(found, services)


def job_admission(job: dict) -> Admission:
    """What a job's acceptance counted, as the limiter refunds it."""
    return Admission(states=(), now=0.0, taken=tuple((key, cost) for key, cost in job["admission"]))


def refund_job(job: dict, services: Services) -> None:
    """Give back what a job's acceptance counted (it failed or was cancelled before completing)."""
    services.limiter.refund(job_admission(job))


def delete_response(tenant: Tenant, response_id: str, services: Services) -> ResponseDeleted:
    if not (RESPONSE_ID.match(response_id) and services.responses.delete(tenant.tenant_id, response_id)):
        raise NotFound(f"No response '{response_id[:40]}'.", param="response_id", code="not_found")
    return ResponseDeleted(id=response_id)
