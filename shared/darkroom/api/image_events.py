"""The Images API's stream (``stream: true`` on generations and edits): its events, and the route's answer.

Event shapes are the SDK's (``openai/types/image_gen_partial_image_event.py``, ``image_gen_completed_event.py``,
``image_edit_partial_image_event.py``, ``image_edit_completed_event.py``), as the OpenAPI spec's example sends them:
``event: image_generation.partial_image`` then ``data: {"type": ..., "b64_json": ..., "partial_image_index": k,
"created_at", "size", "quality", "background", "output_format"}``, and a terminal ``*.completed`` with ``usage``
(``ImagesUsage``). Partials echo the settings as requested (they may be ``auto``, as OpenAI's do); the completed
event carries the settings the image was made with.

A failure after the stream has started is a terminal ``event: error`` whose data is ``{"type": "error", "error":
{message, type, param, code}}``: the SDK's ``Stream`` raises ``APIError`` for data with a truthy top-level
``"error"`` (``openai/_streaming.py``, ``Stream.__stream__``), so ``for event in client.images.generate(stream=True,
...)`` raises as a non-streamed call would. The work refunds its admission, as any failed request does.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from aws_lambda_powertools.event_handler import Response
from PIL import Image

from darkroom.api.errors import ApiError, InvalidRequest, error_envelope
from darkroom.api.event_stream import open_stream
from darkroom.api.images import ImageOptions
from darkroom.api.rendering import images_response
from darkroom.content_credentials import mark
from darkroom.encoding import encode
from darkroom.generation import ImagesResult
from darkroom.image_stream import StreamRun
from darkroom.observability import logger

Kind = Literal["image_generation", "image_edit"]
_INTERNAL = error_envelope(
    "The server had an error processing your request.", type_="server_error", code="internal_error"
)


def sse_event(event: dict[str, Any]) -> bytes:
    """One event: ``event: <type>`` and one compact ``data:`` line (``json.dumps`` escapes newlines)."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def error_event(error: BaseException) -> bytes:
    """The terminal ``error`` event for a failure after the stream started; internals never leave."""
    if isinstance(error, ApiError):
        envelope = error.envelope()
    else:
        logger.error("streamed request failed", extra={"error": type(error).__name__})
        envelope = _INTERNAL
    return sse_event({"type": "error", **envelope})


def image_stream_response(
    kind: Kind,
    request: ImageOptions,
    idempotency_key: str | None,
    work: Callable[[StreamRun[ImagesResult]], ImagesResult],
) -> Response[Any]:
    """Start ``work`` under a :class:`StreamRun`; answer with its events once the model runs.

    Errors before that are raised here (ordinary HTTP errors). An ``Idempotency-Key`` cannot be honoured on a
    stream (a retry would have to replay it): refused, rather than run twice."""
    if idempotency_key is not None:
        raise InvalidRequest(
            "Idempotency-Key is not supported with 'stream': omit one of the two.",
            param="stream",
            code="unsupported_value",
        )
    run: StreamRun[ImagesResult] = StreamRun(request.partial_images or 0)
    run.start(lambda: work(run))
    created = int(time.time())
    output_format = request.output_format or "png"
    transparent = request.background == "transparent"
    echoed = {
        "size": request.size or "auto",
        "quality": request.quality or "auto",
        "background": request.background or "auto",
        "output_format": output_format,
    }

    def partial(index: int, image: Image.Image) -> bytes:
        data = mark(
            encode(image, output_format, request.output_compression, transparent), output_format, run.provenance
        )
        b64 = base64.b64encode(data).decode("ascii")
        return sse_event(
            {
                "type": f"{kind}.partial_image",
                "b64_json": b64,
                "created_at": created,
                **echoed,
                "partial_image_index": index,
            }
        )

    def done(result: ImagesResult) -> bytes:
        body = images_response(result).model_dump(mode="json")
        return sse_event(
            {
                "type": f"{kind}.completed",
                "b64_json": body["data"][0]["b64_json"],
                "created_at": result.created,
                "size": result.size,
                "quality": result.quality,
                "background": result.background,
                "output_format": result.output_format,
                "usage": body["usage"],
            }
        )

    return open_stream(run.events(partial, done, error_event))
