"""A Responses create request, read: its input as one turn of messages and image references, its
``image_generation`` tool, and the SDK's other create parameters (typed, refused, or honoured elsewhere).

Nothing here reads an image or calls a service; :mod:`darkroom.responses` plans and answers from what
these return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from darkroom.api.errors import InvalidRequest, UnknownParameter
from darkroom.api.errors import invalid_from_validation as _invalid
from darkroom.api.responses import ResponseCreateRequest, ResponseOptions
from darkroom.partial_images import MAX_PARTIAL_IMAGES

TOOL_OPTIONS = frozenset(
    {
        "type",
        "model",
        "size",
        "quality",
        "output_format",
        "output_compression",
        "background",
        "moderation",
        "action",
        "input_image_mask",
        "partial_images",
        "input_fidelity",
        "complexity",
        "frame_count",
        "frame_duration_ms",
        "svg",
    }
)
ROLES = frozenset({"user", "assistant", "system", "developer"})


@dataclass
class Turn:
    messages: list[tuple[str, str]]  # (role, text) of this request's input
    images: list[tuple[dict[str, Any], str, str]]  # (reference, param, detail)


def parse_input(request: ResponseCreateRequest) -> Turn:
    if isinstance(request.input, str):
        return Turn([("user", request.input)], [])
    turn = Turn([], [])
    for i, item in enumerate(request.input):
        kind = item.get("type", "message")
        if kind in ("image_generation_call", "reasoning"):  # earlier output echoed back: context is threaded
            continue
        role = item.get("role")
        if kind != "message" or role not in ROLES:
            raise InvalidRequest(
                f"input[{i}] must be a message with a role of {', '.join(sorted(ROLES))}.", param=f"input[{i}]"
            )
        content = item.get("content")
        if isinstance(content, str):
            turn.messages.append((role, content))
            continue
        if not isinstance(content, list):
            raise InvalidRequest(
                f"input[{i}].content must be a string or a list of parts.", param=f"input[{i}].content"
            )
        texts = []
        for j, part in enumerate(content):
            param = f"input[{i}].content[{j}]"
            part_type = part.get("type") if isinstance(part, dict) else None
            if part_type in ("input_text", "output_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part_type == "input_image" and role == "user":
                reference = {k: part[k] for k in ("image_url", "file_id") if part.get(k) is not None}
                detail = part.get("detail") or "auto"
                if detail not in ("auto", "low", "high", "original"):
                    raise InvalidRequest(f"Invalid value for '{param}.detail'.", param=f"{param}.detail")
                turn.images.append((reference, param, detail))
            else:
                raise InvalidRequest(
                    f"Unsupported content part in '{param}'.", param=f"{param}.type", code="unsupported_value"
                )
        turn.messages.append((role, "\n".join(texts)))
    if not turn.messages and not turn.images:
        raise InvalidRequest("'input' is empty.", param="input")
    return turn


def image_tool(request: ResponseCreateRequest) -> dict[str, Any] | None:
    tools = request.tools or []
    for i, tool in enumerate(tools):
        if tool.get("type") != "image_generation":
            raise InvalidRequest(
                f"Unsupported tool type in 'tools[{i}]': darkroom offers image_generation.",
                param=f"tools[{i}].type",
                code="unsupported_value",
            )
        for name in tool:
            if name not in TOOL_OPTIONS:
                raise UnknownParameter(f"tools[{i}].{name}")
        partials = tool.get("partial_images")
        if partials is not None and (type(partials) is not int or not 0 <= partials <= MAX_PARTIAL_IMAGES):
            raise InvalidRequest(
                f"Invalid value for 'tools[{i}].partial_images': an integer from 0 to {MAX_PARTIAL_IMAGES}.",
                param=f"tools[{i}].partial_images",
            )
    choice = request.tool_choice
    if choice not in (None, "auto", "none", "required") and choice != {"type": "image_generation"}:
        raise InvalidRequest("Invalid value for 'tool_choice'.", param="tool_choice")
    if choice == "none" or not tools:
        return None
    return tools[0]


def check_options(request: ResponseCreateRequest) -> None:
    """The SDK's other create parameters (the request's extra keys): typed as :class:`ResponseOptions` types
    them, an unknown one ``unknown_parameter``, and a value darkroom cannot honour ``unsupported_value``."""
    try:
        options = ResponseOptions.model_validate(request.model_extra or {})
    except ValidationError as exc:
        raise _invalid(exc.errors(include_url=False)) from None  # the input's type is named, never its value
    refused = {
        "conversation": "Conversations are not supported; chain turns with previous_response_id.",
        "prompt": "Prompt templates are not supported; send input and instructions.",
        "moderation": "No moderation model runs over Responses input or output here; omit 'moderation'.",
    }
    for name, message in refused.items():
        if getattr(options, name) is not None:
            raise InvalidRequest(message, param=name, code="unsupported_value")
    if options.access_programs and options.access_programs.cyber not in (None, "standard"):
        raise InvalidRequest(
            "Only the 'standard' access program is available here.",
            param="access_programs.cyber",
            code="unsupported_value",
        )
    if options.background_options and options.background_options.completion_window not in (None, "soonest"):
        raise InvalidRequest(
            "Background jobs run as soon as they can: completion_window 'soonest' is the only one.",
            param="background_options.completion_window",
            code="unsupported_value",
        )
    if options.image and options.image.context_compression == "enabled":
        raise InvalidRequest(
            "Image context compression is not available; send 'auto' or 'disabled'.",
            param="image.context_compression",
            code="unsupported_value",
        )
