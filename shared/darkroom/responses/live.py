"""``POST /v1/responses`` with ``stream: true``: events as they happen.

The request is planned first (every 400 before the stream opens). An image call then runs under a
:class:`~darkroom.image_stream.StreamRun`: admission and the inputs' decoding happen before the head is sent, and
from then on the client gets ``response.created``, ``response.in_progress``, the call's ``output_item.added`` /
``in_progress`` / ``generating`` at once, each ``partial_image`` as the model makes it, then ``completed``,
``output_item.done`` and ``response.completed``. A failure after that is a terminal ``response.failed`` (no
top-level ``error`` key: see :func:`darkroom.streaming.failed_events`); the work has refunded its admission by then.

A text answer streams the same way: the message's ``output_item.added`` and ``content_part.added`` at once, an
``output_text.delta`` for each piece the backend writes (the local stand-in, OpenAI-compatible servers and Bedrock
stream their text; SageMaker answers whole, and its text is then sent in a few deltas once it exists), then
``output_text.done``, ``content_part.done``, ``output_item.done`` and ``response.completed``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image

from darkroom.api.errors import ApiError
from darkroom.api.responses import OutputMessage, ResponseCreateRequest, ResponseObject, response_error
from darkroom.content_credentials import mark
from darkroom.encoding import encode
from darkroom.image_stream import StreamRun
from darkroom.observability import logger
from darkroom.ports import RequestContext, ResponsePorts
from darkroom.responses.create import answer_now
from darkroom.responses.planning import Plan, plan_request
from darkroom.responses.rendering import response_object
from darkroom.streaming import Sequencer, image_call_opened, in_progress_response, partials_asked, split_text

_INTERNAL = {"code": "server_error", "message": "The server had an error processing your request."}


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def stream_response(context: RequestContext, request: ResponseCreateRequest, ports: ResponsePorts) -> Iterator[bytes]:
    """The stream's chunks; raises (an ordinary HTTP error) for anything refused before the model runs."""
    plan = plan_request(context, request, ports)
    shell = response_object(plan, None, None)
    run: StreamRun[ResponseObject] = StreamRun(partials_asked(shell) if plan.image_call else 0)
    run.start(lambda: answer_now(context, plan, ports, run))
    if plan.image_call is None:
        return _text_events(plan, shell, run)
    return _image_call_events(plan, shell, run)


def _failed(seq: Sequencer, shell: ResponseObject) -> Callable[[BaseException], bytes]:
    """The terminal ``response.failed`` for a failure after the stream opened (its error, never internals)."""

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

    return failed


def _text_events(plan: Plan, shell: ResponseObject, run: StreamRun[ResponseObject]) -> Iterator[bytes]:
    seq = Sequencer()
    where = {"item_id": plan.message_id, "output_index": 0, "content_index": 0}
    sent: list[str] = []
    yield _sse(seq.emit("response.created", response=in_progress_response(shell)))
    yield _sse(seq.emit("response.in_progress", response=in_progress_response(shell)))
    item = {"type": "message", "id": plan.message_id, "status": "in_progress", "role": "assistant", "content": []}
    yield _sse(seq.emit("response.output_item.added", output_index=0, item=item))
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield _sse(seq.emit("response.content_part.added", **where, part=empty))

    def delta(text: str) -> bytes:
        sent.append(text)
        return _sse(seq.emit("response.output_text.delta", **where, delta=text, logprobs=[]))

    def done(response: ResponseObject) -> bytes:
        message = response.output[0]
        assert isinstance(message, OutputMessage), "a text answer's output is its message"
        part = message.content[0]
        so_far = "".join(sent)
        # A backend that answered whole sent no deltas: its text goes now, in a few (the SDK accumulates them).
        rest = part.text[len(so_far) :] if part.text.startswith(so_far) else ""
        events = [seq.emit("response.output_text.delta", **where, delta=d, logprobs=[]) for d in split_text(rest)]
        events += [
            seq.emit("response.output_text.done", **where, text=part.text, logprobs=[]),
            seq.emit("response.content_part.done", **where, part=part.model_dump(mode="json")),
            seq.emit("response.output_item.done", output_index=0, item=message.model_dump(mode="json")),
            seq.emit("response.completed", response=response.model_dump(mode="json")),
        ]
        return b"".join(_sse(event) for event in events)

    yield from run.events(lambda index, image: b"", done, _failed(seq, shell), delta)


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
        data = mark(data, output_format, run.provenance)
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

    yield from run.events(partial, done, _failed(seq, shell))
