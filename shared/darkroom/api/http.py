"""One HTTP request as the edge read it, and the JSON answer: what every layer below the resolver sees of HTTP.

The entry point builds one :class:`HttpRequest` per API Gateway event, before routing, and puts it in the
router's context (:func:`current_request`). Its header names are lower-cased once; its body is decoded from
base64 at most once, and parsed (JSON or ``multipart/form-data``) at most once, on first use. The edit
request, the ``Idempotency-Key`` fingerprint and the body limits all read this one object, so no
use case sees an API Gateway event and no body is decoded or parsed twice.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

from darkroom.api import jsonbody
from darkroom.api.errors import InvalidRequest
from darkroom.api.multipart import Form, media_type

CONTEXT_KEY = "http_request"  # the router context's entry the entry point sets and current_request reads


@dataclass(frozen=True)
class HttpRequest:
    """One request: lower-cased headers, path parameters, and the body as sent (decoded and parsed on first use)."""

    headers: dict[str, str]
    path_parameters: dict[str, str] = field(default_factory=dict)
    encoded_body: str = ""  # the event's body: text, or base64 for the API's binary media types
    base64_encoded: bool = False

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> HttpRequest:
        """The request an API Gateway proxy event carries; reads no body yet."""
        return cls(
            headers={name.lower(): value for name, value in (event.get("headers") or {}).items()},
            path_parameters=dict(event.get("pathParameters") or {}),
            encoded_body=event.get("body") or "",
            base64_encoded=bool(event.get("isBase64Encoded")),
        )

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type") or ""

    @property
    def media_type(self) -> str:
        """The content type without its parameters, lower-cased (``""`` without one)."""
        return media_type(self.content_type)

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header as sent, or None; :mod:`darkroom.idempotency` checks it."""
        return self.headers.get("idempotency-key")

    @cached_property
    def body(self) -> bytes:
        """The raw body (binary media types arrive base64-encoded); a body that is not base64 is a 400."""
        if not self.base64_encoded:
            return self.encoded_body.encode("utf-8")
        try:
            # b64decode(validate=True) less its ASCII copy of the text: a2b_base64 reads an ASCII str in place.
            return binascii.a2b_base64(self.encoded_body, strict_mode=True)
        except ValueError:  # API Gateway sends valid base64; a hand-written event may not
            if self.media_type == "application/json":
                raise jsonbody.MalformedJson("The request body could not be read.") from None
            raise InvalidRequest("The request body could not be read.", code="invalid_body") from None

    @property
    def size(self) -> int:
        """The raw body's length in bytes."""
        return len(self.body)

    @cached_property
    def text(self) -> str:
        """The body as UTF-8 text: the event's own string, or the base64 body decoded once (400 ``invalid_json``
        if those bytes are not UTF-8). This string is what the route's JSON validation reads too."""
        if not self.base64_encoded:
            return self.encoded_body
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise jsonbody.MalformedJson("The request body is not valid UTF-8.") from None

    @cached_property
    def json(self) -> Any:
        """The body as strict JSON (:func:`darkroom.api.jsonbody.loads`; 400 ``invalid_json`` if it is not)."""
        return jsonbody.loads(self.text)

    @cached_property
    def form(self) -> Form:
        """The body as ``multipart/form-data`` (400 ``invalid_multipart`` if it is not). Its parts are the copy
        kept: the decoded body is released once parsed (:attr:`body` decodes it again if it is read later)."""
        from darkroom.api.form_parser import parse_form  # python-multipart: only the functions that read forms

        try:
            return parse_form(self.content_type, self.body)
        finally:
            self.__dict__.pop("body", None)  # the cached_property's value


def current_request(app: ApiGatewayResolver) -> HttpRequest:
    """The request the entry point built for the event ``app`` is resolving."""
    request: HttpRequest = app.context[CONTEXT_KEY]
    return request


def json_response(status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body if isinstance(body, str) else json.dumps(body, separators=(",", ":")),
        headers=headers or {},
    )
