"""What a client does with a response once it is stored: retrieve it (images read back, fresh URLs),
cancel it (a background one; its admission given back) and delete it. Another tenant's id, or one that is
not a response id, is not found."""

from __future__ import annotations

import base64

from darkroom.api.errors import InvalidRequest, NotFound
from darkroom.api.responses import ImageGenerationCall, ResponseDeleted, ResponseObject, response_error
from darkroom.observability import logger
from darkroom.ports import Admitter, ResponsePorts
from darkroom.response_store import RESPONSE_ID, QueuedJob, StoredResponse
from darkroom.responses.background import job_admission
from darkroom.tenancy import Tenant


def retrieve_response(tenant: Tenant, response_id: str, ports: ResponsePorts) -> ResponseObject:
    """A stored response, with fresh URLs and the images read back from S3; a background one in its
    current state (output only once completed; ``error`` once failed)."""
    return _render(_load(tenant, response_id, ports), ports)


def _load(tenant: Tenant, response_id: str, ports: ResponsePorts) -> StoredResponse:
    found = ports.records.load(tenant.tenant_id, response_id) if RESPONSE_ID.match(response_id) else None
    if found is None:
        raise NotFound(f"No response '{response_id[:40]}'.", param="response_id", code="not_found")
    return found


def _render(found: StoredResponse, ports: ResponsePorts) -> ResponseObject:
    record, store = found.record, ports.images.store
    response = ResponseObject.model_validate(record.response)
    response.status = found.status
    if found.error:
        response.error = response_error(found.error)  # stored with darkroom's code; sent as a ResponseErrorCode
    for item in response.output:
        key = record.outputs.get(item.id) if isinstance(item, ImageGenerationCall) else None
        if isinstance(item, ImageGenerationCall) and key:
            item.result = base64.b64encode(store.get(key)).decode("ascii")
            item.url = store.presign(key, item.output_format or "png")
    return response


def cancel_response(tenant: Tenant, response_id: str, ports: ResponsePorts) -> ResponseObject:
    """Cancel a background response that is queued or running; its admission is given back. A finished
    one is answered as it is; a response that was not created in background mode cannot be cancelled."""
    found = _load(tenant, response_id, ports)
    if not found.background:
        raise InvalidRequest(
            "Only responses created with background: true can be cancelled.",
            param="response_id",
            code="not_cancellable",
        )
    cancelled = ports.records.cancel(tenant.tenant_id, response_id)
    if cancelled is not None and cancelled.job is not None:
        refund_job(cancelled.job, ports.images.admission)
        logger.info("response cancelled", extra={"response_id": response_id, "was": cancelled.status})
        found = _load(tenant, response_id, ports)
    return _render(found, ports)


def refund_job(job: QueuedJob, admitter: Admitter) -> None:
    """Give back what a job's acceptance counted (it failed or was cancelled before completing)."""
    admitter.refund(job_admission(job))


def delete_response(tenant: Tenant, response_id: str, ports: ResponsePorts) -> ResponseDeleted:
    if not (RESPONSE_ID.match(response_id) and ports.records.delete(tenant.tenant_id, response_id)):
        raise NotFound(f"No response '{response_id[:40]}'.", param="response_id", code="not_found")
    return ResponseDeleted(id=response_id)
