"""A text answer: the model reads the turn (and the thread's images, if it can analyze them; otherwise its
``vision_fallback`` describes them first), admitted as one request without images, and billed by tokens."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from darkroom.api.responses import OutputMessage, OutputText, ResponseUsage
from darkroom.catalog import Capability, ModelEntry
from darkroom.generation import input_image_tokens, record_usage
from darkroom.inference import InputImage, TextJob
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.observability import logger
from darkroom.ports import ImagePorts, RequestContext
from darkroom.responses.planning import Plan
from darkroom.responses.thread import MAX_CARRIED_IMAGES, stored_images

if TYPE_CHECKING:
    from darkroom.image_stream import StreamRun


def _text_tokens(*texts: str) -> int:
    return max(1, math.ceil(sum(len(t) for t in texts) / 4))


def text_answer(
    context: RequestContext,
    plan: Plan,
    ports: ImagePorts,
    admission: Admission | None,
    stream: StreamRun[Any] | None = None,
) -> tuple[OutputMessage, ResponseUsage, UsageEvent]:
    """(the output message, the response's usage, the usage billed or, under a job's admission, to bill).

    ``stream``: a streamed request's run, told when the model starts and given the text as the model writes it."""
    request, model = plan.request, plan.model
    carried = [(image, "auto") for image in stored_images(plan.history.images[-MAX_CARRIED_IMAGES:], ports.store)]
    pictures = [InputImage(i.image, i.format, detail) for i, detail in (*carried, *plan.images)]
    messages = [*plan.history.messages, *plan.turn.messages]
    seconds = context.deadline.inference_budget(ports.settings)
    described = bool(pictures) and not model.can(Capability.ANALYZE)
    image_tokens = 0
    if pictures and model.can(Capability.ANALYZE):
        image_tokens = sum(85 if p.detail == "low" else input_image_tokens([p.image.size]) for p in pictures)
    taken = admission or ports.admission.admit(context.tenant, 0)  # counts as a request; no images
    refund: AbstractContextManager[None] = nullcontext() if admission else ports.admission.refunded_on_failure(taken)
    with refund:
        if described:
            messages.append(("user", _describe(model, pictures, seconds, ports)))
        if stream is not None:
            stream.inference_started()
        text = ports.backends(model).respond(
            model,
            TextJob(
                request.instructions,
                messages,
                [] if described else pictures,
                seconds,
                deltas=stream.text if stream is not None else None,
            ),
        )
        text_tokens = _text_tokens(request.instructions or "", *(t for _, t in messages))
        output_tokens = _text_tokens(text)
        price = model.price
        usage = UsageEvent(
            request_id=context.request_id,
            tenant_id=context.tenant.tenant_id,
            operation="analyze" if image_tokens else "text",
            model=model.id,
            size="-",
            quality="-",
            images=0,
            input_text_tokens=text_tokens,
            input_image_tokens=image_tokens,
            output_tokens=output_tokens,
            cost_usd=(
                text_tokens * price.input_text_per_million
                + image_tokens * price.input_image_per_million
                + output_tokens * price.output_text_per_million
            )
            / 1e6,
            end_user=plan.end_user,
            key_id=context.tenant.key_id,
        )
        if admission is None:
            record_usage(usage, ports.meter)
    message = OutputMessage(id=plan.message_id, content=[OutputText(text=text)])
    response_usage = ResponseUsage(
        input_tokens=text_tokens + image_tokens,
        output_tokens=output_tokens,
        total_tokens=text_tokens + image_tokens + output_tokens,
    )
    return message, response_usage, usage


def _describe(model: ModelEntry, pictures: list[InputImage], seconds: float, ports: ImagePorts) -> str:
    """Auxiliary vision: each image described by the fallback model; a failure is a note, not a 500."""
    assert model.vision_fallback is not None, "planned only for a model with a vision_fallback"
    describer = ports.catalog.models[model.vision_fallback]
    notes = []
    for number, picture in enumerate(pictures, start=1):
        try:
            text = ports.backends(describer).respond(describer, TextJob(None, [], [picture], seconds))
            notes.append(f"[Image {number}, described by {describer.id}: {text}]")
        except Exception:  # noqa: BLE001 - one undescribable image must not fail the answer
            logger.warning("image description failed", extra={"image": number})
            notes.append(f"[Image {number} could not be described.]")
    return "\n".join(notes)
