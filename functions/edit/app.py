"""POST /v1/images/edits: thin handler over :func:`darkroom.editing.edit_images` (multipart or JSON), once per
``Idempotency-Key`` (:mod:`darkroom.idempotency`)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends

from darkroom.api.errors import error_responses
from darkroom.api.http import current_request
from darkroom.api.images import ImagesResponse
from darkroom.api.resolver import authenticated_tenant, build_resolver, entrypoint, request_context
from darkroom.content_credentials import preload
from darkroom.editing import edit_images, read_edit_request
from darkroom.idempotency import images_outcome, images_replay, respond_once
from darkroom.intake import request_decode_budget
from darkroom.services import services
from darkroom.snapstart import prime
from darkroom.tenancy import Tenant

app = build_resolver()


@app.post(
    "/v1/images/edits",
    summary="Edit images (multipart/form-data as the openai SDK sends it, or JSON with image references)",
    tags=["images"],
    responses={
        200: {
            "description": "The edited images, or with stream true their event stream (text/event-stream)",
            "content": {"application/json": {"model": ImagesResponse}},
        },
        **error_responses(400, 401, 403, 404, 409, 429, 500, 502, 503, 504),
    },
)
def edit_image(tenant: Annotated[Tenant, Depends(authenticated_tenant)]):  # the body is read by darkroom.editing
    container = services()
    ports = container.images
    # 400s before any idempotency record
    http = current_request(app)
    request = read_edit_request(http, tenant.tenant_id, ports.settings, container.sources)
    if request.options.stream:
        from darkroom.api.image_events import image_stream_response

        context = request_context(app, streamed=True)
        return image_stream_response(
            "image_edit",
            request.options,
            http.idempotency_key,
            lambda run: edit_images(context, request, ports, stream=run),
        )
    return respond_once(
        app,
        tenant,
        "POST /v1/images/edits",
        render=images_replay(ports.store),
        produce=lambda: images_outcome(edit_images(request_context(app), request, ports)),
    )


lambda_handler = entrypoint(app, per_request=request_decode_budget)
# Before a SnapStart snapshot (darkroom.snapstart): what the first request would build.
prime(lambda: (services().authenticator, services().images, services().sources, preload()))
