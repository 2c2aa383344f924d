"""``Idempotency-Key`` on POST routes: a retried request gets the first request's answer instead of a second run.

Built on Powertools idempotency (:func:`idempotent_function` over a :class:`DynamoDBPersistenceLayer` on
``settings.idempotency_table``). What is remembered is a *reference*, never the answer itself: the
S3 keys of the images and the ``ImagesResponse`` without ``b64_json``/``url``/``revised_prompt``, a
file object, an upload without its presigned POST, a stored response's id. A replay *renders* the
reference into the same answer (same status and body, fresh presigned URLs, ``b64_json`` read back
from S3) plus the header ``idempotent-replayed: true``. No image bytes, base64, presigned URLs,
prompts or keys are stored (the record id is a sha256 of tenant, route and key).

Rules, per tenant + route + key:

- no header: the route runs as before, with no DynamoDB call at all;
- the key must be 1 to 255 printable ASCII characters, else 400 ``invalid_idempotency_key``;
- same key, different request (see :func:`request_fingerprint`): 400 ``idempotency_key_reused``;
- same key while the first request still runs: 409 ``idempotency_request_in_progress`` with
  ``retry-after`` (the openai SDK retries a 409 by itself, honouring ``retry-after``). A Lambda that
  dies mid-request frees the key when its remaining time is up (``register_lambda_context``);
- only successes are remembered: a raised error deletes the in-progress record, so a retry runs again;
- records expire after 24 hours.

Using it in a handler (``produce`` does the work and returns an :class:`Outcome`: the answer to send
now plus its reference; ``render`` turns a stored reference back into that answer)::

    return respond_once(app, tenant, "POST /v1/images/generations",
                        produce=lambda: images_outcome(generate_images(context, body, ports)),
                        render=images_replay(ports.store))

For ``POST /v1/responses``, whose result is a stored response, the reference is its id and a replay
reads it back, as ``GET /v1/responses/{id}`` does (a background job's replay then shows the job's
current state, which is what a client retrying a create wants)::

    def produce() -> Outcome:
        response = create_response(context, body, ports)
        return Outcome(answer(response), {"response_id": response.id})

    def render(reference: dict) -> Response:
        return answer(retrieve_response(tenant, reference["response_id"], ports))

    return respond_once(app, tenant, "POST /v1/responses", produce, render)

where ``answer`` builds the JSON (or, with ``body.stream``, the event-stream) ``Response``; the body
is the same on a replay, since a different body is a 400. A response that is not stored
(``store: false``) cannot be read back: give it a reference that carries what its answer needs
(never its text or images), or leave that case without ``Idempotency-Key`` support.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from pydantic import BaseModel

from darkroom import config
from darkroom.api.errors import InvalidRequest, RequestInProgress, ServiceUnavailable
from darkroom.api.http import HttpRequest, current_request, json_response
from darkroom.api.images import ImagesResponse
from darkroom.api.rendering import B64_OMITTED_HEADER, images_headers, images_response
from darkroom.observability import IDEMPOTENT_REPLAYS, count, logger
from darkroom.ports import ImageStorage
from darkroom.tenancy import Tenant

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from darkroom.api.files import Upload
    from darkroom.files import FileStore
    from darkroom.generation import ImagesResult

REPLAYED_HEADER = "idempotent-replayed"
EXPIRES_AFTER_SECONDS = 24 * 3600
RETRY_AFTER_SECONDS = 5
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_RECORD_PREFIX = "darkroom"  # record ids are "darkroom#<sha256 of tenant, route and key>"
# Headers of an images answer that describe the answer itself (rate-limit headers describe the moment).
_REPLAYED_IMAGE_HEADERS = (B64_OMITTED_HEADER,)


@dataclass(frozen=True)
class Outcome:
    """What a first run produced: the answer to send now, and the small JSON a replay renders it from."""

    response: Response[Any]
    reference: dict[str, Any]


def respond_once(
    app: ApiGatewayResolver,
    tenant: Tenant,
    route: str,
    produce: Callable[[], Outcome],
    render: Callable[[dict[str, Any]], Response[Any]],
) -> Response[Any]:
    """The route's answer, produced at most once per ``Idempotency-Key`` (see the module docstring)."""
    request = current_request(app)
    return run_once(
        request.idempotency_key,
        tenant_id=tenant.tenant_id,
        route=route,
        fingerprint=lambda: request_fingerprint(request),
        produce=produce,
        render=render,
        lambda_context=app.lambda_context,
    )


def run_once(
    key: str | None,
    *,
    tenant_id: str,
    route: str,
    fingerprint: Callable[[], str],
    produce: Callable[[], Outcome],
    render: Callable[[dict[str, Any]], Response[Any]],
    lambda_context: LambdaContext | None = None,
) -> Response[Any]:
    """``produce()``'s answer the first time; ``render(reference)`` for a retry with the same key and request.

    ``fingerprint`` is only called when there is a key (it may parse the body, which costs memory).
    """
    if key is None:
        return produce().response
    if not _KEY.fullmatch(key):
        raise InvalidRequest(
            "The Idempotency-Key header must be 1 to 255 printable ASCII characters.", code="invalid_idempotency_key"
        )
    fresh: list[Response[Any]] = []

    def first_run(request: dict[str, Any]) -> dict[str, Any]:  # ``request`` is only what Powertools hashes
        outcome = produce()
        fresh.append(outcome.response)
        return outcome.reference

    once = idempotent_function(
        first_run,
        data_keyword_argument="request",
        persistence_store=persistence_layer(),
        config=_config(lambda_context),
        key_prefix=_RECORD_PREFIX,
    )
    request = {"scope": {"tenant_id": tenant_id, "route": route, "key": key}, "fingerprint": fingerprint()}
    try:
        reference = once(request=request)
    except IdempotencyValidationError:
        raise InvalidRequest(
            "This Idempotency-Key was already used with a different request. Use a new key for a new request.",
            code="idempotency_key_reused",
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise RequestInProgress(RETRY_AFTER_SECONDS) from None
    except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as exc:
        logger.error("idempotency record failed", extra={"route": route, "error": type(exc).__name__})
        raise ServiceUnavailable("The Idempotency-Key could not be checked or recorded. Retry.") from exc
    if fresh:
        return fresh[0]
    count(IDEMPOTENT_REPLAYS)
    logger.info("idempotent replay", extra={"route": route})
    response = render(reference)
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _config(lambda_context: LambdaContext | None) -> IdempotencyConfig:
    # One per request, for the context: the persistence layer applies only the first config's settings, which
    # never change; the context bounds an in-progress record to this invocation's remaining time.
    return IdempotencyConfig(
        event_key_jmespath="scope",
        payload_validation_jmespath="fingerprint",
        expires_after_seconds=EXPIRES_AFTER_SECONDS,
        hash_function="sha256",
        lambda_context=lambda_context,
    )


def persistence_layer() -> DynamoDBPersistenceLayer:
    """The container's persistence layer, built on first use; a new client (``config.reset``) builds a new one."""
    return _layer(config.client("dynamodb"), config.get_settings().idempotency_table)


@lru_cache(maxsize=1)
def _layer(client: Any, table: str) -> DynamoDBPersistenceLayer:  # a boto3 DynamoDB client
    return DynamoDBPersistenceLayer(table_name=table, boto3_client=client)


def request_fingerprint(request: HttpRequest) -> str:
    """A sha256 of the request as parsed: path parameters plus the body.

    JSON bodies count as canonical JSON (key order and spacing do not matter). Multipart bodies count as
    their fields plus each file's name and sha256, not the raw bytes: the boundary differs on every
    retry (the openai SDK builds each attempt's body anew). Any other body counts as its bytes. The body
    is the request's own parse (:class:`~darkroom.api.http.HttpRequest`), shared with the route.
    """
    kind = request.media_type
    if kind == "multipart/form-data":
        form = request.form
        body: Any = {
            "fields": form.fields,
            "files": {
                name: [{"filename": part.filename, "sha256": hashlib.sha256(part.data).hexdigest()} for part in parts]
                for name, parts in form.files.items()
            },
        }
    else:
        try:
            body = request.json if request.body else None
        except InvalidRequest:
            body = {"sha256": hashlib.sha256(request.body).hexdigest()}
    canonical = json.dumps(
        {"path": request.path_parameters, "kind": kind, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# References and their renderings


def images_outcome(result: ImagesResult) -> Outcome:
    """An Images API answer; its reference is the S3 keys and the response without images, URLs or prompts."""
    response, headers = images_response(result), images_headers(result)
    reference = {
        "keys": list(result.keys),
        "b64_json": any(image.data is not None for image in result.images),
        "response": response.model_dump(
            mode="json", exclude_none=True, exclude={"data": {"__all__": {"b64_json", "url", "revised_prompt"}}}
        ),
        "headers": {name: value for name, value in headers.items() if name in _REPLAYED_IMAGE_HEADERS},
    }
    return Outcome(json_response(200, response.model_dump_json(exclude_none=True), headers), reference)


def images_replay(store: ImageStorage) -> Callable[[dict[str, Any]], Response[Any]]:
    """Render an images reference again: fresh presigned URLs from ``store``, and ``b64_json`` read back from
    it if the first answer had it. ``revised_prompt`` is not replayed: it is the prompt, never stored."""

    def render(reference: dict[str, Any]) -> Response[Any]:
        response = ImagesResponse.model_validate(reference["response"])
        output_format = response.output_format or "png"

        def fill(index: int) -> None:
            key = reference["keys"][index]
            response.data[index].url = store.presign(key, output_format)
            if reference["b64_json"]:
                response.data[index].b64_json = base64.b64encode(store.get(key)).decode("ascii")

        with ThreadPoolExecutor(max_workers=min(4, len(response.data))) as pool:
            list(pool.map(fill, range(len(response.data))))
        return json_response(200, response.model_dump_json(exclude_none=True), dict(reference["headers"]))

    return render


def stored_outcome(answer: BaseModel) -> Outcome:
    """An answer that is its own reference because it holds nothing secret or large (a file, a completed upload)."""
    body = answer.model_dump(mode="json", exclude_none=True)
    return Outcome(json_response(200, body), body)


def replay_stored(reference: dict[str, Any]) -> Response[Any]:
    return json_response(200, reference)


def upload_outcome(upload: Upload) -> Outcome:
    """A pending upload; its reference leaves out the presigned POST, which a replay signs afresh."""
    return Outcome(
        json_response(200, upload.model_dump_json(exclude_none=True)),
        upload.model_dump(mode="json", exclude_none=True, exclude={"upload_url"}),
    )


def upload_replay(files: FileStore, tenant_id: str, mime_type: str) -> Callable[[dict[str, Any]], Response[Any]]:
    """Render a pending upload's reference with a new signature for the same key and values (``mime_type``
    comes from the retried request, which equals the first one)."""

    from darkroom.api.files import Upload  # the files function's model: the image functions never load it

    def render(reference: dict[str, Any]) -> Response[Any]:
        upload = files.sign_upload(tenant_id, Upload.model_validate(reference), mime_type)
        return json_response(200, upload.model_dump_json(exclude_none=True))

    return render
