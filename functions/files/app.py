"""/v1/files and /v1/uploads: thin handlers over :class:`darkroom.files.FileStore`; the POSTs run once per
``Idempotency-Key`` (:mod:`darkroom.idempotency`)."""

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from darkroom.api.errors import InvalidRequest, UnknownParameter, error_responses
from darkroom.api.files import FileDeleted, FileList, FileObject, Upload, UploadCompleteRequest, UploadCreateRequest
from darkroom.api.http import current_request
from darkroom.api.resolver import authenticated_tenant, build_resolver, entrypoint, json_response
from darkroom.files import expiry_refused, parse_file_form
from darkroom.idempotency import replay_stored, respond_once, stored_outcome, upload_outcome, upload_replay
from darkroom.intake import request_decode_budget
from darkroom.services import services
from darkroom.snapstart import prime
from darkroom.tenancy import Tenant

app = build_resolver()


def _ok(description: str, model: type) -> dict:
    return {200: {"description": description, "content": {"application/json": {"model": model}}}}


@app.post(
    "/v1/files",
    summary="Upload an image file (multipart/form-data: file, purpose=vision|user_data; at most ~6 MB)",
    description="Only still png, jpeg, webp and gif images are stored. Larger files: POST /v1/uploads.",
    tags=["files"],
    responses={**_ok("The stored file", FileObject), **error_responses(400, 401, 403, 409, 500, 503)},
)
def create_file(tenant: Annotated[Tenant, Depends(authenticated_tenant)]):
    # The body is multipart (base64 from API Gateway's binary media types), so Powertools does not parse it.
    filename, purpose, data = parse_file_form(current_request(app).form)
    return respond_once(
        app,
        tenant,
        "POST /v1/files",
        render=replay_stored,
        produce=lambda: stored_outcome(services().files.create(tenant.tenant_id, filename, purpose, data)),
    )


@app.get(
    "/v1/files",
    summary="List files (ordered by id)",
    tags=["files"],
    responses={**_ok("One page of files", FileList), **error_responses(400, 401, 403)},
)
def list_files(
    tenant: Annotated[Tenant, Depends(authenticated_tenant)],
    limit: Annotated[int, Query(ge=1, le=10000, description="Pages hold at most 100 files.")] = 100,
    after: Annotated[str | None, Query(max_length=64, description="The last file id of the previous page.")] = None,
    order: Annotated[
        Literal["asc", "desc"] | None, Query(description="Refused: files are listed in id order only.")
    ] = None,
    purpose: Annotated[str | None, Query(max_length=64, description="Refused: no purpose filter.")] = None,
):
    # The SDK's files.list() parameters darkroom cannot honour: refused, rather than ignored into a wrong answer.
    if order is not None:
        raise InvalidRequest(
            "Files are listed in file id order only; omit 'order'.", param="order", code="unsupported_value"
        )
    if purpose is not None:
        raise InvalidRequest(
            "Listing files by purpose is not supported; omit 'purpose'.", param="purpose", code="unsupported_value"
        )
    page = services().files.list(tenant.tenant_id, limit=limit, after=after)
    return json_response(200, page.model_dump_json(exclude_none=True))


@app.get(
    "/v1/files/<file_id>",
    summary="Retrieve a file",
    tags=["files"],
    responses={**_ok("The file", FileObject), **error_responses(401, 403, 404)},
)
def retrieve_file(file_id: str, tenant: Annotated[Tenant, Depends(authenticated_tenant)]):
    return json_response(200, services().files.get(tenant.tenant_id, file_id).model_dump_json(exclude_none=True))


@app.delete(
    "/v1/files/<file_id>",
    summary="Delete a file",
    tags=["files"],
    responses={**_ok("The file is deleted", FileDeleted), **error_responses(401, 403, 404)},
)
def delete_file(file_id: str, tenant: Annotated[Tenant, Depends(authenticated_tenant)]):
    return json_response(200, services().files.delete(tenant.tenant_id, file_id))


@app.post(
    "/v1/uploads",
    summary="Create an upload: a presigned S3 POST (upload_url) for a file too large for POST /v1/files",
    tags=["uploads"],
    responses={**_ok("The pending upload", Upload), **error_responses(400, 401, 403, 409, 500, 503)},
)
def create_upload(
    body: Annotated[UploadCreateRequest, Body()],
    tenant: Annotated[Tenant, Depends(authenticated_tenant)],
):
    if body.model_extra:
        raise UnknownParameter(next(iter(body.model_extra)))
    if body.expires_after is not None:
        raise expiry_refused()
    return respond_once(
        app,
        tenant,
        "POST /v1/uploads",
        render=upload_replay(services().files, tenant.tenant_id, body.mime_type),
        produce=lambda: upload_outcome(
            services().files.create_upload(
                tenant.tenant_id,
                filename=body.filename,
                purpose=body.purpose,
                size=body.bytes,
                mime_type=body.mime_type,
            )
        ),
    )


@app.post(
    "/v1/uploads/<upload_id>/complete",
    summary="Complete an upload: the staged bytes become a file",
    tags=["uploads"],
    responses={
        **_ok("The completed upload and its file", Upload),
        **error_responses(400, 401, 403, 404, 409, 500, 503),
    },
)
def complete_upload(
    upload_id: str,
    tenant: Annotated[Tenant, Depends(authenticated_tenant)],
    body: Annotated[UploadCompleteRequest | None, Body()] = None,
):
    if body is not None and body.model_extra:
        raise UnknownParameter(next(iter(body.model_extra)))
    return respond_once(
        app,
        tenant,
        "POST /v1/uploads/{upload_id}/complete",
        render=replay_stored,
        produce=lambda: stored_outcome(
            services().files.complete_upload(tenant.tenant_id, upload_id, md5=body.md5 if body else None)
        ),
    )


lambda_handler = entrypoint(app, per_request=request_decode_budget)
# Before a SnapStart snapshot (darkroom.snapstart): what the first request would build.
prime(lambda: (services().authenticator, services().files))
