"""POST /v1/responses, GET and DELETE /v1/responses/{response_id}, POST /v1/responses/{response_id}/cancel:
thin handlers over darkroom.responses."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from darkroom.api.errors import InvalidRequest, error_responses
from darkroom.api.event_stream import open_stream
from darkroom.api.http import current_request
from darkroom.api.resolver import authenticated_tenant, build_resolver, entrypoint, json_response, request_context
from darkroom.api.responses import ResponseCreateRequest, ResponseDeleted, ResponseObject
from darkroom.content_credentials import preload
from darkroom.idempotency import Outcome, respond_once
from darkroom.intake import request_decode_budget
from darkroom.ports import ResponsePorts
from darkroom.responses import cancel_response, create_response, delete_response, retrieve_response
from darkroom.services import services
from darkroom.snapstart import prime
from darkroom.streaming import response_events, sse
from darkroom.tenancy import Tenant

app = build_resolver()


def _ports() -> ResponsePorts:
    return services().response_ports


@app.post(
    "/v1/responses",
    summary="Create a response (text, image analysis, image generation and editing)",
    tags=["responses"],
    responses={
        200: {
            "description": "The response (status queued when background is true), or its event stream "
            "when stream is true",
            "content": {"application/json": {"model": ResponseObject}},
        },
        **error_responses(400, 401, 403, 404, 409, 429, 500, 502, 503, 504),
    },
)
def create(body: Annotated[ResponseCreateRequest, Body()], tenant: Annotated[Tenant, Depends(authenticated_tenant)]):
    def answer(response: ResponseObject) -> Response:
        if body.stream:  # a keyed request: its whole event sequence, once the work is done
            return open_stream(iter([sse(response_events(response)).encode()]))
        return json_response(200, response.model_dump_json(exclude_none=True))

    if body.stream and not body.background and current_request(app).idempotency_key is None:
        # Events as they happen (darkroom.responses.live). With an Idempotency-Key the answer is produced once and
        # then sent whole, so that a retry replays the same events.
        from darkroom.responses.live import stream_response

        return open_stream(stream_response(request_context(app, streamed=True), body, _ports()))

    def produce() -> Outcome:
        if body.store is False and current_request(app).idempotency_key is not None:
            raise InvalidRequest(
                "Idempotency-Key needs a stored response: omit 'store' or send true.",
                param="store",
                code="unsupported_value",
            )
        response = create_response(request_context(app), body, _ports())
        return Outcome(answer(response), {"response_id": response.id})

    # A retry gets the stored response as it is now (a background job: its current state).
    return respond_once(
        app,
        tenant,
        "POST /v1/responses",
        produce,
        render=lambda reference: answer(retrieve_response(tenant, reference["response_id"], _ports())),
    )


@app.get(
    "/v1/responses/<response_id>",
    summary="Retrieve a stored response",
    tags=["responses"],
    responses={
        200: {
            "description": "The stored response, or with stream=true its event stream",
            "content": {"application/json": {"model": ResponseObject}},
        },
        **error_responses(400, 401, 403, 404),
    },
)
def retrieve(
    response_id: str,
    tenant: Annotated[Tenant, Depends(authenticated_tenant)],
    stream: Annotated[bool | None, Query(description="Replay a completed response as its event stream.")] = None,
    starting_after: Annotated[
        int | None, Query(ge=0, description="With stream: only the events after this sequence_number.")
    ] = None,
):  # include and include_obfuscation (SDK) change nothing here: the stored response is returned whole, unpadded
    response = retrieve_response(tenant, response_id, _ports())
    if not stream:
        return json_response(200, response.model_dump_json(exclude_none=True))
    if response.status != "completed":  # the events of unfinished work do not exist yet: poll instead
        raise InvalidRequest(
            f"Only a completed response can be replayed as a stream (this one is {response.status}).",
            param="stream",
            code="unsupported_value",
        )
    events = [
        event
        for event in response_events(response)
        if starting_after is None or event["sequence_number"] > starting_after
    ]
    return Response(status_code=200, content_type="text/event-stream; charset=utf-8", body=sse(events))


@app.post(
    "/v1/responses/<response_id>/cancel",
    summary="Cancel a background response",
    tags=["responses"],
    responses={
        200: {
            "description": "The response, cancelled (or as it finished)",
            "content": {"application/json": {"model": ResponseObject}},
        },
        **error_responses(400, 401, 403, 404, 409, 503),
    },
)
def cancel(response_id: str, tenant: Annotated[Tenant, Depends(authenticated_tenant)]):
    def produce() -> Outcome:
        response = cancel_response(tenant, response_id, _ports())
        return Outcome(json_response(200, response.model_dump_json(exclude_none=True)), {"response_id": response.id})

    # Cancelling is idempotent by nature; with a key, a retry is answered like any keyed POST.
    return respond_once(
        app,
        tenant,
        "POST /v1/responses/{response_id}/cancel",
        produce,
        render=lambda reference: json_response(
            200, retrieve_response(tenant, reference["response_id"], _ports()).model_dump_json(exclude_none=True)
        ),
    )


@app.delete(
    "/v1/responses/<response_id>",
    summary="Delete a stored response",
    tags=["responses"],
    responses={
        200: {"description": "Deleted", "content": {"application/json": {"model": ResponseDeleted}}},
        **error_responses(401, 403, 404),
    },
)
def delete(response_id: str, tenant: Annotated[Tenant, Depends(authenticated_tenant)]) -> ResponseDeleted:
    return delete_response(tenant, response_id, _ports())


lambda_handler = entrypoint(app, per_request=request_decode_budget)
# Before a SnapStart snapshot (darkroom.snapstart): what the first request would build.
prime(lambda: (services().authenticator, services().response_ports, preload()))
