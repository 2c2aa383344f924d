"""``POST /v1/responses`` with ``stream: true``: events as they happen.

The request is planned first (every 400 before the stream opens). An image call then runs under a
:class:`~darkroom.image_stream.StreamRun`: admission and the inputs' decoding happen before the head is sent, and
from then on the client gets ``response.created``, ``response.in_progress``, the call's ``output_item.added`` /
``in_progress`` / ``generating`` at once, each ``partial_image`` as the model makes it, then ``completed``,
``output_item.done`` and ``response.completed``. A failure after that is a terminal ``response.failed`` (no
top-level ``error`` key: see :func:`darkroom.streaming.failed_events`); the work has refunded its admission by then.

A text answer is answered whole and then sent as its complete event sequence: no text backend streams tokens yet.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from PIL import Image

from darkroom.api.errors import ApiError
from darkroom.api.responses import ResponseCreateRequest, ResponseObject, response_error
from darkroom.encoding import encode
from darkroom.image_stream import StreamRun
from darkroom.observability import logger
from darkroom.ports import RequestContext, ResponsePorts
from darkroom.responses.create import answer_now
from darkroom.responses.planning import Plan, plan_request
from darkroom.responses.rendering import response_object
from darkroom.streaming import Sequencer, image_call_opened, in_progress_response, partials_asked, response_events

_INTERNAL = {"code": "server_error", "message": "The server had an error processing your request."}


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def stream_response(context: RequestContext, request: ResponseCreateRequest, ports: ResponsePorts) -> Iterator[bytes]:
    """The stream's chunks; raises (an ordinary HTTP error) for anything refused before the model runs."""
    plan = plan_request(context, request, ports)
    if plan.image_call is None:
        response = answer_now(context, plan, ports)
        return iter([_sse(event) for event in response_events(response)])
    shell = response_object(plan, None, None)
    run: StreamRun[ResponseObject] = StreamRun(partials_asked(shell))
    run.start(lambda: answer_now(context, plan, ports, run))
    return _image_call_events(plan, shell, run)


def _image_call_events(plan: Plan, shell: ResponseObject, run: StreamRun[ResponseObject]) -> Iterator[bytes]:
    call = plan.image_call
    assert call is not None, "streamed as an image call only when planned with one"
    seq = Sequencer()
    where = {"item_id": call.call_id, "output_index": 0}
    options = call.options
    output_format = options.output_format or "png"
    requested = {
        "background": options.background or "auto",
        "output_format": output_format,
        "quality": options.quality or "auto",
        "size": options.size or "auto",
    }
    yield _sse(seq.emit("response.created", response=in_progress_response(shell)))
    yield _sse(seq.emit("response.in_progress", response=in_progress_response(shell)))
    for event in image_call_opened(seq, 0, call.call_id):
        yield _sse(event)

    def partial(index: int, image: Image.Image) -> bytes:
        data = encode(image, output_format, options.output_compression, options.background == "transparent")
        b64 = base64.b64encode(data).decode("ascii")
        return _sse(
            seq.emit(
                "response.image_generation_call.partial_image",
                **where,
                partial_image_index=index,
                partial_image_b64=b64,
                **requested,
            )
        )

    def done(response: ResponseObject) -> bytes:
        item = response.output[0].model_dump(mode="json")
        return b"".join(
            _sse(event)
            for event in (
                seq.emit("response.image_generation_call.completed", **where),
                seq.emit("response.output_item.done", output_index=0, item=item),
                seq.emit("response.completed", response=response.model_dump(mode="json")),
            )
        )

    def failed(error: BaseException) -> bytes:
        if isinstance(error, ApiError):
            envelope = error.envelope()["error"]
        else:
            logger.error("streamed response failed", extra={"error": type(error).__name__})
            envelope = _INTERNAL
        body = shell.model_dump(mode="json")
        body.update(status="failed", output=[], error=response_error(envelope))
        body.pop("usage", None)
        return _sse(seq.emit("response.failed", response=body))

    yield from run.events(partial, done, failed)
