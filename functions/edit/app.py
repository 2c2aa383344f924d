"""POST /v1/images/edits: thin handler over :func:`darkroom.editing.edit_images` (multipart or JSON)."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends

from darkroom.api.errors import error_responses
from darkroom.api.images import ImagesResponse
from darkroom.api.resolver import authenticated_tenant, build_resolver, entrypoint, json_response, request_id
from darkroom.editing import edit_images, read_edit_request
from darkroom.services import services
from darkroom.tenancy import Tenant

app = build_resolver()


@app.post(
    "/v1/images/edits",
    summary="Edit images (multipart/form-data as the openai SDK sends it, or JSON with image references)",
    tags=["images"],
    responses={200: {"description": "The edited images", "content": {"application/json": {"model": ImagesResponse}}},
               **error_responses(400, 401, 403, 404, 429, 500, 502, 503, 504)},
)
def edit_image(tenant: Annotated[Tenant, Depends(authenticated_tenant)]):  # the body is parsed by darkroom.editing
    request = read_edit_request(app.current_event.raw_event, tenant.tenant_id, services())
    result = edit_images(tenant, request, request_id(app), services())
    return json_response(200, result.response.model_dump_json(exclude_none=True), result.headers)


lambda_handler = entrypoint(app)
