"""A Responses answer as the API sends it (``ResponseObject``), and as a stored response keeps it: the same
object minus image bytes and URLs, plus the thread and where each produced image is in S3."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from darkroom.api.rendering import b64_or_none
from darkroom.api.responses import ImageGenerationCall, OutputMessage, ResponseObject, ResponseUsage
from darkroom.response_store import QUEUED, ResponseRecord
from darkroom.responses.planning import Plan
from darkroom.responses.thread import next_thread

if TYPE_CHECKING:
    from darkroom.generation import ImagesResult

OutputItem = OutputMessage | ImageGenerationCall


def response_object(plan: Plan, output: OutputItem | None, usage: ResponseUsage | None) -> ResponseObject:
    """The response to ``plan``'s request: answered (its output and usage), or queued (``output`` None: a
    background response that has none yet)."""
    request = plan.request
    return ResponseObject(
        id=plan.response_id,
        created_at=plan.created_at,
        model=request.model,
        output=[output] if output is not None else [],
        status="completed" if output is not None else QUEUED,
        instructions=request.instructions,
        metadata=request.metadata or {},
        previous_response_id=request.previous_response_id,
        tools=request.tools or [],
        tool_choice=request.tool_choice or "auto",
        background=bool(request.background),
        store=request.store is not False,  # a background request cannot send false
        usage=usage,
    )


def record(plan: Plan, response: ResponseObject, produced: Sequence[tuple[str, str]]) -> ResponseRecord:
    """What a stored response keeps: the response minus image bytes, the thread, where its images are
    (``produced``: (output item id, S3 key))."""
    answer = "\n".join(
        part.text for item in response.output if isinstance(item, OutputMessage) for part in item.content
    )
    thread = next_thread(plan.history, plan.turn.messages, answer, [*plan.input_keys, *(key for _, key in produced)])
    body = response.model_dump(mode="json")
    for item in body["output"]:
        item.pop("result", None)
        item.pop("url", None)
    return ResponseRecord(response=body, thread=thread, outputs=dict(produced))


def image_generation_call(result: ImagesResult, action: str, call_id: str | None = None) -> ImageGenerationCall:
    """The Responses API output item for the (single) image a Responses image tool call produced (``call_id``:
    the id a stream announced before the image existed)."""
    image = result.images[0]
    return ImageGenerationCall(
        id=call_id or "ig_" + secrets.token_hex(16),
        result=b64_or_none(image.data),
        url=image.url,
        revised_prompt=image.revised_prompt,
        action="edit" if action == "edit" else "generate",
        size=result.size,
        quality=result.quality,
        output_format=result.output_format,
        background=result.background,
    )
