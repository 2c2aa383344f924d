"""Every check a Responses request gets before any work: parameters, model, input, tool options, time budget.

Routing is by the catalog's capabilities, never by model names: the ``image_generation`` tool (or an
image model named directly) plans an image call through the Images API's own resolution; any other model
must answer in text, reading images itself or through its ``vision_fallback``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from darkroom import intake
from darkroom.api.errors import InvalidRequest, ModelNotFound
from darkroom.api.errors import invalid_from_validation as _invalid
from darkroom.api.images import ImageEditRequest, ImageGenerateRequest
from darkroom.api.responses import ResponseCreateRequest
from darkroom.catalog import Capability, ModelEntry
from darkroom.editing import intake_limits
from darkroom.end_users import identify
from darkroom.image_job import check_time_budget, resolve_request
from darkroom.ports import RequestContext, ResponsePorts
from darkroom.response_store import COMPLETED, RESPONSE_ID, Thread
from darkroom.responses.input import Turn, check_options, image_tool, parse_input
from darkroom.responses.thread import ANALYSIS_FORMATS, stored_images

# Tool keys that are the Responses API's own, not Images API options.
_TOOL_ONLY = ("type", "action", "input_image_mask", "partial_images", "model", "input_fidelity")


@dataclass
class ImageCall:
    """The image the response will produce: an Images API request, validated, and what it edits."""

    edit: bool
    options: ImageGenerateRequest | ImageEditRequest
    base: intake.IntakeImage | None = None  # edits: the image edited (an input, or the thread's latest)
    mask: intake.IntakeImage | None = None
    call_id: str = field(default_factory=lambda: "ig_" + secrets.token_hex(16))  # the output item's id


@dataclass
class Plan:
    """A validated Responses request, ready to answer now or in a background job."""

    request: ResponseCreateRequest
    model: ModelEntry
    turn: Turn
    history: Thread
    images: list[tuple[intake.IntakeImage, str]]  # the turn's input images, decoded, with their detail
    image_call: ImageCall | None  # None: the answer is text
    response_id: str = field(default_factory=lambda: "resp_" + secrets.token_hex(16))
    created_at: int = field(default_factory=lambda: int(time.time()))
    input_keys: list[str] = field(default_factory=list)  # where the input images are stored, once they are
    end_user: str | None = None  # darkroom.end_users' opaque id for safety_identifier/user (never the raw value)
    message_id: str = field(default_factory=lambda: "msg_" + secrets.token_hex(16))  # a text answer's output item


def plan_request(context: RequestContext, request: ResponseCreateRequest, ports: ResponsePorts) -> Plan:
    """The plan for ``request``, or the 400 that refuses it; images are read (and charged) here."""
    check_options(request)
    tenant = context.tenant
    end_user = identify(tenant.tenant_id, request.safety_identifier, request.user)
    if request.background:
        _check_background(request, ports)
    model = ports.images.catalog.models.get(request.model)
    if model is None:
        raise ModelNotFound(request.model)
    turn = parse_input(request)
    tool = image_tool(request)
    history = _history(context, request, ports)
    headers = [(_read(ref, param, context, ports), detail) for ref, param, detail in turn.images]
    mask_ref = tool.get("input_image_mask") if tool else None
    mask = _read(mask_ref, "tools[0].input_image_mask", context, ports) if mask_ref else None  # a header
    images = [(header.decode(), detail) for header, detail in headers]  # every header read (and charged) first
    plan = Plan(request, model, turn, history, images, image_call=None, end_user=end_user)
    if tool is not None or model.can(Capability.GENERATE) or model.can(Capability.EDIT):
        plan.image_call = plan_image_call(plan, tool or {}, mask.decode() if mask else None, ports)
    else:
        check_text_model(model, bool(images or history.images), background=bool(request.background))
    return plan


def _check_background(request: ResponseCreateRequest, ports: ResponsePorts) -> None:
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
    if not ports.jobs.enabled:
        raise InvalidRequest(
            "Background mode is not enabled on this deployment.", param="background", code="unsupported_value"
        )


def _history(context: RequestContext, request: ResponseCreateRequest, ports: ResponsePorts) -> Thread:
    previous = request.previous_response_id
    if not previous:
        return Thread()
    found = ports.records.load(context.tenant.tenant_id, previous) if RESPONSE_ID.match(previous) else None
    if found is None or found.status != COMPLETED or found.record.thread is None:
        raise InvalidRequest(
            f"Previous response '{previous[:40]}' not found"
            + ("." if found is None else f" among completed responses (it is {found.status})."),
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return found.record.thread


def _read(reference: Any, param: str, context: RequestContext, ports: ResponsePorts) -> intake.ImageHeader:
    return intake.read_reference(
        reference,
        param=param,
        tenant_id=context.tenant.tenant_id,
        files=ports.sources.files,
        limits=replace(intake_limits(ports.images.settings), formats=ANALYSIS_FORMATS),
        fetcher=ports.sources.fetcher,
    )


def plan_image_call(
    plan: Plan, tool: dict[str, Any], mask: intake.IntakeImage | None, ports: ResponsePorts
) -> ImageCall:
    """The image call: generate, or edit the turn's first image (or the thread's latest), as the tool's
    ``action`` says; its options validated as the Images API validates them, errors named as tool options."""
    request, model, catalog = plan.request, plan.model, ports.images.catalog
    tool_options = {k: v for k, v in tool.items() if k not in _TOOL_ONLY}
    image_model = tool.get("model") or (
        request.model if (model.can(Capability.GENERATE) or model.can(Capability.EDIT)) else None
    )
    action = tool.get("action", "auto")
    if action not in ("auto", "generate", "edit"):
        raise InvalidRequest("Invalid value for 'tools[0].action': generate, edit or auto.", param="tools[0].action")
    prompt = "\n".join(text for role, text in plan.turn.messages if role == "user" and text).strip()
    if not prompt:
        raise InvalidRequest("The input has no text to draw from.", param="input")
    edit_model = catalog.models.get(image_model or catalog.defaults.get(Capability.EDIT, ""))
    can_edit = edit_model is not None and edit_model.can(Capability.EDIT)
    base = plan.images[0][0] if plan.images else None
    if base is None and plan.history.images and action != "generate":
        base = stored_images(plan.history.images[-1:], ports.images.store)[0]  # "now make it blue": the latest
    edit = action == "edit" or (action == "auto" and base is not None and can_edit)
    if edit and base is None:
        raise InvalidRequest("An edit needs an input image.", param="tools[0].action")
    options: ImageGenerateRequest | ImageEditRequest
    try:
        if base is not None and edit:
            options = ImageEditRequest(
                prompt=prompt,
                model=image_model,
                response_format="b64_json",
                input_fidelity=tool.get("input_fidelity"),
                **tool_options,
            )
            job = resolve_request(options, catalog, Capability.EDIT, input_size=base.size)
        else:
            options = ImageGenerateRequest(prompt=prompt, model=image_model, response_format="b64_json", **tool_options)
            job = resolve_request(options, catalog)
        check_time_budget(
            job, ports.images.settings, background=bool(request.background), streamed=bool(request.stream)
        )
    except ValidationError as exc:
        raise tool_error(_invalid(exc.errors(include_url=False))) from None  # names the type only
    except InvalidRequest as exc:
        named = exc.param in tool_options or exc.param == "model" and tool.get("model")
        raise tool_error(exc) if named else exc from None
    return ImageCall(edit, options, base if edit else None, mask if edit else None)


def check_text_model(model: ModelEntry, has_images: bool, background: bool) -> None:
    if not background and model.async_inference:
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


def tool_error(error: InvalidRequest) -> InvalidRequest:
    """An Images API error about an option that came from the image_generation tool, named as such."""
    param = f"tools[0].{error.param}"
    return InvalidRequest(error.message.replace(f"'{error.param}'", f"'{param}'"), param=param, code=error.code)
