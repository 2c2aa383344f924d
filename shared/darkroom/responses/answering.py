"""The work of a planned response: an image call through the image tool, or a text answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from darkroom.api.responses import ResponseObject
from darkroom.limits import Admission
from darkroom.metering import UsageEvent
from darkroom.ports import RequestContext, ResponsePorts
from darkroom.responses.image_tool import image_answer
from darkroom.responses.planning import Plan
from darkroom.responses.rendering import response_object
from darkroom.responses.text import text_answer

if TYPE_CHECKING:
    from darkroom.image_stream import StreamRun


def answer(
    context: RequestContext,
    plan: Plan,
    ports: ResponsePorts,
    admission: Admission | None = None,
    stream: StreamRun[Any] | None = None,
) -> tuple[ResponseObject, list[tuple[str, str]], UsageEvent]:
    """(the response, its produced images as (output item id, S3 key), the usage).

    ``admission``: a background job's; the job refunds it on failure and bills the usage when it completes.
    Without it the work is admitted, refunded and billed here, as any synchronous request.
    ``stream``: a streamed request's run, which an image call tells when the model starts and feeds partials."""
    if plan.image_call is not None:
        call, usage, key, billed = image_answer(context, plan, ports.images, admission, stream)
        return response_object(plan, call, usage), [(call.id, key)], billed
    message, usage, billed = text_answer(context, plan, ports.images, admission, stream)
    return response_object(plan, message, usage), [], billed
