"""The model server's answers as values (:class:`Reply`), its error bodies, and the body reading and decoding that
``/invocations`` and the runtime emulator share."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from PIL import Image
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from darkroom_endpoint.contract import ContractError, error_body

JSON = "application/json"
INTERNAL_CODE = "internal_error"
INTERNAL_MESSAGE = "The model server failed to process the request."


@dataclass(frozen=True)
class Reply:
    """What the container answers: the runtime emulator forwards it, ``/invocations`` sends it as is."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = JSON

    def response(self) -> Response:
        """As a Starlette response."""
        return Response(self.body, status_code=self.status, headers=dict(self.headers), media_type=self.content_type)


def json_reply(status: int, document: object, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON answer, compact (an answer of several base64 images should not carry indentation)."""
    return Reply(status, json.dumps(document, separators=(",", ":")).encode("utf-8"), headers or {})


def error_reply(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """The contract's error object for the server's own refusals (413, 415, 429, 503, 500)."""
    return json_reply(status, error_body(status, code, message), headers)


def decode_json(body: bytes) -> object:
    """The body as JSON, or a 400: invalid UTF-8 or JSON, and nesting too deep for the parser, are the client's."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ContractError("The request body is nested too deeply.", code="invalid_json") from None
    except ValueError:  # UnicodeDecodeError included; also integers of more than 4300 digits
        raise ContractError("The request body is not valid JSON.", code="invalid_json") from None


def b64png(image: Image.Image) -> str:
    """An image as base64 PNG text."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 once it exceeds ``limit``: by its Content-Length before any byte is
    read, and while reading, so a chunked body or a lying Content-Length cannot get past it either."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ContractError("The Content-Length header is not a number.")
        if int(declared) > limit:
            raise ContractError(f"The request body is larger than {limit} bytes.", code="request_too_large", status=413)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ContractError(
                    f"The request body is larger than {limit} bytes.", code="request_too_large", status=413
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise ContractError("The request body was not received completely.") from None
    return b"".join(chunks)
