"""POST /v1/images/generations: thin handler over :func:`darkroom.generation.generate_images`, once per
``Idempotency-Key`` (:mod:`darkroom.idempotency`)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body

from darkroom.api.errors import error_responses
from darkroom.api.http import current_request
from darkroom.api.images import ImageGenerateRequest, ImagesResponse
from darkroom.api.resolver import authenticated_tenant, build_resolver, entrypoint, request_context
from darkroom.content_credentials import preload
from darkroom.generation import generate_images
from darkroom.idempotency import images_outcome, images_replay, respond_once
from darkroom.intake import request_decode_budget
from darkroom.services import services
from darkroom.snapstart import prime
from darkroom.tenancy import Tenant

app = build_resolver()


@app.post(
    "/v1/images/generations",
    summary="Create images from a prompt",
    tags=["images"],
    responses={
        200: {
            "description": "The images, or with stream true their event stream (text/event-stream)",
            "content": {"application/json": {"model": ImagesResponse}},
        },
        **error_responses(400, 401, 403, 404, 409, 429, 500, 502, 503, 504),
    },
)
def create_image(
    body: Annotated[ImageGenerateRequest, Body()],
    tenant: Annotated[Tenant, Depends(authenticated_tenant)],
):  # the 200 schema is declared in responses=; the body is already JSON
    ports = services().images
    if body.stream:
        from darkroom.api.image_events import image_stream_response

        context = request_context(app, streamed=True)
        return image_stream_response(
            "image_generation",
            body,
            current_request(app).idempotency_key,
            lambda run: generate_images(context, body, ports, stream=run),
        )
    return respond_once(
        app,
        tenant,
        "POST /v1/images/generations",
        render=images_replay(ports.store),
        produce=lambda: images_outcome(generate_images(request_context(app), body, ports)),
    )


lambda_handler = entrypoint(app, per_request=request_decode_budget)
# Before a SnapStart snapshot (darkroom.snapstart): what the first request would build.
prime(lambda: (services().authenticator, services().images, preload()))
