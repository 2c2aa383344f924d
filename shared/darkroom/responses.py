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
from dataclasses import dataclass

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
from darkroom.generation import generate_images, input_image_tokens
from darkroom.inference import InputImage, TextJob, backend_for
from darkroom.metering import UsageEvent
from darkroom.observability import logger
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


def create_response(tenant: Tenant, request: ResponseCreateRequest, request_id: str,
                    services: Services) -> ResponseObject:
    """Answer one Responses API request (and store it unless ``store`` is false)."""
    for name in request.model_extra or {}:
        if name not in IGNORED_PARAMETERS:
            raise UnknownParameter(name)
    model = services.catalog.models.get(request.model)
    if model is None:
        raise ModelNotFound(request.model)
    turn = _parse_input(request)
    tool = _image_tool(request)
    history: dict = {"messages": [], "images": []}
    if request.previous_response_id:
        found = (services.responses.get(tenant.tenant_id, request.previous_response_id)
                 if RESPONSE_ID.match(request.previous_response_id) else None)
        if found is None:
            raise InvalidRequest(f"Previous response '{request.previous_response_id[:40]}' not found.",
                                 param="previous_response_id", code="previous_response_not_found")
        history = found["thread"]
    response_id = "resp_" + secrets.token_hex(16)
    images = [(_decode(ref, param, tenant, services), detail) for ref, param, detail in turn.images]
    if tool is not None or model.can(Capability.GENERATE) or model.can(Capability.EDIT):
        output, usage, produced = _image_call(tenant, request, model, tool or {}, turn, images, history, request_id,
                                              services)
    else:
        output, usage = _text_answer(tenant, request, model, turn, images, history, request_id, services)
        produced = []
    response = ResponseObject(
        id=response_id, created_at=int(time.time()), model=request.model, output=output,
        instructions=request.instructions, metadata=request.metadata or {},
        previous_response_id=request.previous_response_id, store=request.store is not False,
        tools=request.tools or [], tool_choice=request.tool_choice or "auto", usage=usage,
    )
    if response.store:
        _store(tenant, response, turn, images, history, produced, services)
    return response


def _image_call(tenant, request, model: ModelEntry, tool: dict, turn: _Turn, images, history, request_id,
                services: Services):
    options = {k: v for k, v in tool.items() if k not in ("type", "action", "input_image_mask", "partial_images",
                                                         "model", "input_fidelity")}
    image_model = tool.get("model") or (request.model if (model.can(Capability.GENERATE)
                                                         or model.can(Capability.EDIT)) else None)
    action = tool.get("action", "auto")
    if action not in ("auto", "generate", "edit"):
        raise InvalidRequest("Invalid value for 'tools[0].action': generate, edit or auto.", param="tools[0].action")
    prompt = "\n".join(text for role, text in turn.messages if role == "user" and text).strip()
    if not prompt:
        raise InvalidRequest("The input has no text to draw from.", param="input")
    edit_model = services.catalog.models.get(image_model or services.catalog.defaults.get(Capability.EDIT, ""))
    can_edit = edit_model is not None and edit_model.can(Capability.EDIT)
    base = images[0][0] if images else None
    if base is None and history["images"] and action != "generate":
        base = _stored_image(history["images"][-1], services)  # "now make it blue": the latest image
    edit = action == "edit" or (action == "auto" and base is not None and can_edit)
    if action == "edit" and base is None:
        raise InvalidRequest("An edit needs an input image.", param="tools[0].action")
    try:
        if edit:
            mask = tool.get("input_image_mask")
            edit_options = ImageEditRequest(prompt=prompt, model=image_model, response_format="b64_json",
                                            input_fidelity=tool.get("input_fidelity"), **options)
            mask_image = _decode(mask, "tools[0].input_image_mask", tenant, services) if mask else None
            result = edit_images(tenant, EditRequest(options=edit_options, images=[lambda: base],
                                                     mask=(lambda: mask_image) if mask_image else None,
                                                     encoded_bytes=0), request_id, services)
        else:
            result = generate_images(tenant, ImageGenerateRequest(prompt=prompt, model=image_model,
                                                                  response_format="b64_json", **options),
                                     request_id, services)
    except ValidationError as exc:
        raise _tool_error(_invalid(exc.errors(include_input=False, include_url=False))) from None
    except InvalidRequest as exc:
        if exc.param in options or exc.param == "model" and tool.get("model"):
            raise _tool_error(exc) from None
        raise
    image = result.response.data[0]
    call = ImageGenerationCall(
        id="ig_" + secrets.token_hex(16), result=image.b64_json, url=image.url, revised_prompt=image.revised_prompt,
        action="edit" if edit else "generate", size=result.response.size, quality=result.response.quality,
        output_format=result.response.output_format, background=result.response.background,
    )
    usage = result.response.usage
    return [call], ResponseUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                 total_tokens=usage.total_tokens, images=1), [(call.id, result.keys[0])]


def _tool_error(error: InvalidRequest) -> InvalidRequest:
    """An Images API error about an option that came from the image_generation tool, named as such."""
    param = f"tools[0].{error.param}"
    return InvalidRequest(error.message.replace(f"'{error.param}'", f"'{param}'"), param=param, code=error.code)


def _text_answer(tenant, request, model: ModelEntry, turn: _Turn, images, history, request_id, services: Services):
    carried = [(_stored_image(key, services), "auto") for key in history["images"][-MAX_CARRIED_IMAGES:]]
    pictures = [InputImage(i.image, i.format, detail) for i, detail in (*carried, *images)]
    messages = [*map(tuple, history["messages"]), *turn.messages]
    seconds = deadline.inference_seconds(services.settings.inference_timeout_seconds)
    image_tokens = 0
    described = bool(pictures) and not model.can(Capability.ANALYZE)
    if pictures and model.can(Capability.ANALYZE):
        image_tokens = sum(85 if p.detail == "low" else input_image_tokens([p.image.size]) for p in pictures)
    elif described and model.vision_fallback is None:
        raise InvalidRequest(f"The model '{model.id}' cannot read images.", param="model", code="model_not_supported")
    elif not (model.can(Capability.TEXT) or model.can(Capability.ANALYZE)):
        raise InvalidRequest(f"The model '{model.id}' cannot answer in text.", param="model",
                             code="model_not_supported")
    answer_model, job_images = model, ([] if described else pictures)
    admission = services.limiter.admit(tenant, 0)  # counts as a request; no images
    with services.limiter.refunded_on_failure(admission):
        if described:
            messages.append(("user", _describe(model, pictures, seconds, services)))
        text = backend_for(answer_model).respond(answer_model, TextJob(request.instructions, messages, job_images,
                                                                       seconds))
        text_tokens = _text_tokens(request.instructions or "", *(t for _, t in messages))
        output_tokens = _text_tokens(text)
        price = model.price
        cost = (text_tokens * price.input_text_per_million + image_tokens * price.input_image_per_million
                + output_tokens * price.output_text_per_million) / 1e6
        try:
            services.meter.record(UsageEvent(
                request_id=request_id, tenant_id=tenant.tenant_id, operation="analyze" if image_tokens else "text",
                model=model.id, size="-", quality="-", images=0, input_text_tokens=text_tokens,
                input_image_tokens=image_tokens, output_tokens=output_tokens, cost_usd=cost))
        except (ClientError, BotoCoreError) as exc:
            logger.error("usage record failed", extra={"error": type(exc).__name__})
            raise ServiceUnavailable("Usage could not be recorded; the request was not completed. Retry.") from exc
    message = OutputMessage(id="msg_" + secrets.token_hex(16), content=[OutputText(text=text)])
    return [message], ResponseUsage(input_tokens=text_tokens + image_tokens, output_tokens=output_tokens,
                                    total_tokens=text_tokens + image_tokens + output_tokens)


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


def _store(tenant, response: ResponseObject, turn: _Turn, images, history, produced, services: Services) -> None:
    keys = []
    for index, (image, _) in enumerate(images):
        key = f"tenants/{tenant.tenant_id}/responses/{response.id}/input-{index}.png"
        buffer = io.BytesIO()
        image.image.save(buffer, format="PNG")  # re-encoded: no input metadata is kept
        services.store.put(key, buffer.getvalue(), "png")
        keys.append(key)
    answer = "\n".join(part.text for item in response.output if isinstance(item, OutputMessage)
                       for part in item.content)
    thread = {
        "messages": [*history["messages"], *turn.messages, *([("assistant", answer)] if answer else [])],
        "images": [*history["images"], *keys, *(key for _, key in produced)][-MAX_CARRIED_IMAGES:],
    }
    body = response.model_dump(mode="json")
    for item in body["output"]:
        item.pop("result", None)
        item.pop("url", None)
    services.responses.put(tenant.tenant_id, response.id, {"response": body, "thread": thread,
                                                           "outputs": dict(produced)})


def retrieve_response(tenant: Tenant, response_id: str, services: Services) -> ResponseObject:
    """A stored response, with fresh URLs and the images read back from S3."""
    record = services.responses.get(tenant.tenant_id, response_id) if RESPONSE_ID.match(response_id) else None
    if record is None:
        raise NotFound(f"No response '{response_id[:40]}'.", param="response_id", code="not_found")
    response = ResponseObject.model_validate(record["response"])
    for item in response.output:
        key = record["outputs"].get(item.id) if isinstance(item, ImageGenerationCall) else None
        if key:
            item.result = base64.b64encode(services.store.get(key)).decode("ascii")
            item.url = services.store.presign(key, item.output_format or "png")
    return response


def delete_response(tenant: Tenant, response_id: str, services: Services) -> ResponseDeleted:
    if not (RESPONSE_ID.match(response_id) and services.responses.delete(tenant.tenant_id, response_id)):
        raise NotFound(f"No response '{response_id[:40]}'.", param="response_id", code="not_found")
    return ResponseDeleted(id=response_id)
