"""``POST /v1/responses``: plan the request, then answer it now (and store it unless ``store`` is false),
or, with ``background``, accept it as a job and answer at once with its id and status ``queued``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from darkroom.api.responses import ResponseCreateRequest, ResponseObject
from darkroom.ports import RequestContext, ResponsePorts
from darkroom.responses.answering import answer
from darkroom.responses.background import enqueue, store_inputs
from darkroom.responses.planning import Plan, plan_request
from darkroom.responses.rendering import record

if TYPE_CHECKING:
    from darkroom.image_stream import StreamRun


def create_response(context: RequestContext, request: ResponseCreateRequest, ports: ResponsePorts) -> ResponseObject:
    """Answer one Responses API request (see the module docstring)."""
    plan = plan_request(context, request, ports)
    if request.background:
        return enqueue(context, plan, ports)
    return answer_now(context, plan, ports)


def answer_now(
    context: RequestContext, plan: Plan, ports: ResponsePorts, stream: StreamRun[Any] | None = None
) -> ResponseObject:
    """Answer a planned request now, and store it unless ``store`` is false (``stream``: a streamed request's
    run, :mod:`darkroom.responses.live`)."""
    response, produced, _ = answer(context, plan, ports, stream=stream)
    if response.store:
        store_inputs(context, plan, ports)
        ports.records.put(context.tenant.tenant_id, response.id, record(plan, response, produced))
    return response
