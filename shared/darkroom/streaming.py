"""Server-sent events for ``POST /v1/responses`` with ``stream: true``, and for a stored response's replay.

:func:`response_events` is the complete event sequence of a finished response: what a replay (``GET
/v1/responses/{id}?stream=true``) sends, and what a streamed text answer sends once its text exists (no backend
streams text tokens yet). An image call's events are sent as they happen (:mod:`darkroom.responses.live`), with
this module's :class:`Sequencer` and shapes.

Shapes follow the SDK's event types (``openai/types/responses/response_*_event.py``) and its stream helper
(``openai/lib/streaming/responses/_responses.py``), which requires ``response.created`` first, an
``output_item.added`` (message) and ``content_part.added`` (``output_text``) before any ``output_text.delta`` at the
same indexes, and a terminal ``response.completed`` for ``get_final_response()``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from darkroom.api.responses import ImageGenerationCall, OutputMessage, ResponseObject, response_error
from darkroom.content_credentials import Provenance
from darkroom.partial_images import partial_images

MAX_TEXT_DELTAS = 4
# The whole stream is one Lambda response (6 MB, as sent: JSON-escaped, headers included). The final image
# is in it twice (output_item.done, response.completed); partials get what is left below this budget.
STREAM_BUDGET_BYTES = 5_500_000
_WORD_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")


class Sequencer:
    """Hands out ``sequence_number`` 0, 1, 2, ... and collects the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event_type: str, **payload: Any) -> dict[str, Any]:
        event = {"type": event_type, "sequence_number": len(self.events), **payload}
        self.events.append(event)
        return event


def split_text(text: str, parts: int = MAX_TEXT_DELTAS) -> list[str]:
    """Split ``text`` at word boundaries into at most ``parts`` chunks whose concatenation is ``text``."""
    if not text:
        return []
    words = _WORD_BOUNDARY.split(text)
    count = min(parts, len(words))
    size, extra = divmod(len(words), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        chunks.append("".join(words[start:end]))
        start = end
    return chunks


def in_progress_response(response: ResponseObject) -> dict[str, Any]:
    body = response.model_dump(mode="json")
    body.update(status="in_progress", output=[], error=None, incomplete_details=None)
    body.pop("usage", None)  # no usage yet: the spec's Response.usage is optional but never null
    return body


def _message_events(seq: Sequencer, index: int, item: OutputMessage) -> None:
    added = item.model_dump(mode="json")
    added.update(status="in_progress", content=[])
    seq.emit("response.output_item.added", output_index=index, item=added)
    for content_index, part in enumerate(item.content):
        where = {"item_id": item.id, "output_index": index, "content_index": content_index}
        empty = part.model_dump(mode="json")
        empty.update(text="", annotations=[], logprobs=[])
        seq.emit("response.content_part.added", **where, part=empty)
        for delta in split_text(part.text):
            seq.emit("response.output_text.delta", **where, delta=delta, logprobs=[])
        seq.emit("response.output_text.done", **where, text=part.text, logprobs=[])
        seq.emit("response.content_part.done", **where, part=part.model_dump(mode="json"))


def image_call_opened(seq: Sequencer, index: int, item_id: str) -> list[dict[str, Any]]:
    """An image call's first events: its item added (in progress), ``in_progress``, ``generating``."""
    where = {"item_id": item_id, "output_index": index}
    return [
        seq.emit(
            "response.output_item.added",
            output_index=index,
            item={"type": "image_generation_call", "id": item_id, "status": "in_progress", "result": None},
        ),
        seq.emit("response.image_generation_call.in_progress", **where),
        seq.emit("response.image_generation_call.generating", **where),
    ]


def _image_call_events(seq: Sequencer, index: int, item: ImageGenerationCall, partials: int, model: str) -> None:
    image_call_opened(seq, index, item.id)
    where = {"item_id": item.id, "output_index": index}
    if item.result is not None:
        # Exactly the partial_images asked (none when unset), partial_image_index 0..n-1. They are made from the
        # final image, coarse to fine (darkroom.partial_images): the model's own steps are not streamed yet.
        # Partials that would push the one-body stream past Lambda's 6 MB are left out, the finest first:
        # fewer partials rather than a 502 (true streaming, with no such cap, is a later change).
        extras = {k: getattr(item, k) for k in ("background", "output_format", "quality", "size")}
        room = STREAM_BUDGET_BYTES - 2 * len(item.result)
        fitting = []
        for partial in partial_images(item.result, partials, item.output_format, Provenance(model)):
            room -= len(partial)
            if room < 0:
                break
            fitting.append(partial)
        for partial_index, partial in enumerate(fitting):
            seq.emit(
                "response.image_generation_call.partial_image",
                **where,
                partial_image_index=partial_index,
                partial_image_b64=partial,
                **{k: v for k, v in extras.items() if v is not None},
            )
    seq.emit("response.image_generation_call.completed", **where)


def partials_asked(response: ResponseObject) -> int:
    """The image_generation tool's ``partial_images`` (validated 0-3 when the request was accepted), else 0."""
    tool = next((t for t in response.tools if t.get("type") == "image_generation"), {})
    return int(tool.get("partial_images") or 0)


def image_model(response: ResponseObject) -> str:
    """The image_generation tool's model as asked, else the response's (what its partials' credentials name)."""
    tool = next((t for t in response.tools if t.get("type") == "image_generation"), {})
    return str(tool.get("model") or response.model)


def response_events(response: ResponseObject) -> list[dict[str, Any]]:
    """The full event sequence for a finished ``response``.

    ``response.created`` and ``response.in_progress`` (status ``in_progress``, empty output, no usage); per output
    item ``response.output_item.added`` (in progress), then for a message, per content part,
    ``content_part.added`` / ``output_text.delta`` x N / ``output_text.done`` / ``content_part.done``, or for an
    image call ``image_generation_call.in_progress`` / ``.generating`` / ``.partial_image`` x partial_images /
    ``.completed``;
    then ``response.output_item.done`` (final item); finally ``response.completed`` (full response).
    ``sequence_number`` starts at 0 and increases by one per event.
    """
    seq = Sequencer()
    seq.emit("response.created", response=in_progress_response(response))
    seq.emit("response.in_progress", response=in_progress_response(response))
    for index, item in enumerate(response.output):
        if isinstance(item, OutputMessage):
            _message_events(seq, index, item)
        else:
            _image_call_events(seq, index, item, partials_asked(response), image_model(response))
        seq.emit("response.output_item.done", output_index=index, item=item.model_dump(mode="json"))
    seq.emit("response.completed", response=response.model_dump(mode="json"))
    return seq.events


def failed_events(response_id: str, model: str, created_at: int, error: dict[str, Any]) -> list[dict[str, Any]]:
    """``response.created`` then ``response.failed`` for a response that failed after the request was accepted.

    The failed response has ``status: "failed"``, ``output: []`` and ``error: {code, message}`` (the SDK's
    ``ResponseError``; ``code`` is a ``ResponseErrorCode``, see :func:`darkroom.api.responses.response_error`).

    Why no top-level ``"error"`` key: the SDK (``openai/_streaming.py``, ``Stream.__stream__``) raises ``APIError``
    for any SSE ``data`` JSON with a truthy top-level ``"error"``, and otherwise yields the event. The real API puts
    a failure's error *inside* the response (``{"type": "response.failed", "response": {..., "error": {...}}}``), so
    with the real API ``client.responses.create(stream=True)`` yields a ``response.failed`` event rather than
    raising, and the ``responses.stream()`` helper passes it through, after which ``get_final_response()`` raises
    ``RuntimeError`` (no ``response.completed``). darkroom matches that: the events here have no top-level
    ``"error"`` key, so clients see exactly what they would see from OpenAI. Errors known before any work starts
    are not streamed at all; they are plain HTTP error responses.
    """
    failure = response_error(error)
    base = ResponseObject(id=response_id, model=model, created_at=created_at, output=[])
    seq = Sequencer()
    seq.emit("response.created", response=in_progress_response(base))
    failed = base.model_dump(mode="json")
    failed.update(status="failed", error=failure)
    failed.pop("usage", None)
    seq.emit("response.failed", response=failed)
    return seq.events


def sse(events: list[dict[str, Any]]) -> str:
    """Serialise events as a ``text/event-stream`` body: ``event: <type>`` + one compact ``data:`` line each.

    The event name equals the type: SDKs since 1.97.2 ignore it, older ones (1.66-1.97.1) need it to start with
    ``response.``. No ``data: [DONE]`` sentinel: the Responses API ends after the terminal event and the SDK needs
    none. ``json.dumps`` escapes newlines (and non-ASCII), so each data line is a single line.
    """
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events)
