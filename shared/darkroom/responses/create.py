"""``POST /v1/responses``: plan the request, then answer it now (and store it unless ``store`` is false),
or, with ``background``, accept it as a job and answer at once with its id and status ``queued``."""

from __future__ import annotations

from darkroom.api.responses import ResponseCreateRequest, ResponseObject
from darkroom.ports import RequestContext, ResponsePorts
from darkroom.responses.answering import answer
from darkroom.responses.background import enqueue, store_inputs
from darkroom.responses.planning import plan_request
from darkroom.responses.rendering import record


def create_response(context: RequestContext, request: ResponseCreateRequest, ports: ResponsePorts) -> ResponseObject:
    """Answer one Responses API request (see the module docstring)."""
    plan = plan_request(context, request, ports)
    if request.background:
        return enqueue(context, plan, ports)
    response, produced, _ = answer(context, plan, ports)
    if response.store:
        store_inputs(context, plan, ports)
        ports.records.put(context.tenant.tenant_id, response.id, record(plan, response, produced))
    return response
