"""GET /v1/models and GET /v1/models/{model}: the catalog, for clients that list models first."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Depends

from darkroom.api.errors import ModelNotFound, error_responses
from darkroom.api.models import ModelList, ModelObject, model_list, model_object
from darkroom.api.resolver import authenticated_tenant, build_resolver, entrypoint
from darkroom.services import services
from darkroom.snapstart import prime
from darkroom.tenancy import Tenant

app = build_resolver()


@app.get(
    "/v1/models",
    summary="List models",
    tags=["models"],
    responses={
        200: {"description": "The catalog's models", "content": {"application/json": {"model": ModelList}}},
        **error_responses(401, 403),
    },
)
def list_models(tenant: Annotated[Tenant, Depends(authenticated_tenant)]) -> ModelList:
    return model_list(services().catalog)


@app.get(
    "/v1/models/<model>",
    summary="Retrieve a model",
    tags=["models"],
    responses={
        200: {"description": "The model", "content": {"application/json": {"model": ModelObject}}},
        **error_responses(401, 403, 404),
    },
)
def retrieve_model(model: str, tenant: Annotated[Tenant, Depends(authenticated_tenant)]) -> ModelObject:
    entry = services().catalog.models.get(model)
    if entry is None:
        raise ModelNotFound(model)
    return model_object(entry)


lambda_handler = entrypoint(app)
# Before a SnapStart snapshot (darkroom.snapstart): what the first request would build.
prime(lambda: (services().authenticator, services().catalog))
