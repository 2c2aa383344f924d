"""Parsing a ``multipart/form-data`` body into a :class:`~darkroom.api.multipart.Form`, with python-multipart
(the maintained streaming parser behind Starlette and FastAPI): its ``MultipartParser`` and transfer decoders.

A module of its own so that only the functions that read forms import python-multipart
(``tests/unit/test_import_sets.py``); :meth:`darkroom.api.http.HttpRequest.form` imports it on first use.
"""

from __future__ import annotations

import typing

from python_multipart.decoders import Base64Decoder, QuotedPrintableDecoder
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from darkroom.api.errors import InvalidRequest
from darkroom.api.multipart import MAX_FIELD_BYTES, MAX_PARTS, FilePart, Form

if typing.TYPE_CHECKING:  # a TypedDict python-multipart declares for type checkers only
    from python_multipart.multipart import MultipartCallbacks


def parse_form(content_type: str, body: bytes) -> Form:
    """Parse a ``multipart/form-data`` body; a malformed body is a 400 ``invalid_multipart``.

    Each part's bytes are copied out of ``body`` once (python-multipart's ``FormParser`` copies a file part
    three times: a slice per chunk, its in-memory file, and the read back), so parsing holds the body and its
    parts, nothing more."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest("Expected a multipart/form-data body with a boundary.", code="invalid_multipart")
    form = Form()
    parts = _Parts(form)
    # Keep parts in memory: a Lambda body is at most 6 MB, and /tmp must not collect client files.
    try:  # the parser refuses some boundaries when it is built (longer than 256 bytes, say)
        parser = MultipartParser(boundary, parts.callbacks(), max_size=len(body) + 1)
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise InvalidRequest("The multipart/form-data body is malformed.", code="invalid_multipart") from exc
    if parser.state != MultipartState.END:  # truncated: no closing boundary
        raise InvalidRequest("The multipart/form-data body is incomplete.", code="invalid_multipart")
    return form


class _Parts:
    """The parser's callbacks: each part's headers, then its bytes as views of the body (joined once, at its end),
    decoded first if the part declares a base64 or quoted-printable transfer encoding (as ``FormParser`` does)."""

    def __init__(self, form: Form) -> None:
        self.form = form
        self.count = 0
        self.header: tuple[list[bytes], list[bytes]] = ([], [])
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes | memoryview] = []
        self.decoder: Base64Decoder | QuotedPrintableDecoder | None = None
        self.field_name: bytes | None = None
        self.file_name: bytes | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.headers.clear,
            "on_header_field": lambda data, start, end: self.header[0].append(data[start:end]),
            "on_header_value": lambda data, start, end: self.header[1].append(data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def header_end(self) -> None:
        name, value = self.header
        self.headers[b"".join(name).lower()] = b"".join(value).strip(b" \t")
        name.clear()
        value.clear()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition"))
        self.field_name, self.file_name = options.get(b"name"), options.get(b"filename")
        if self.field_name is None:  # RFC 7578 section 4.2: every part names its field
            raise FormParserError("A part has no name in its Content-Disposition.")
        self.chunks = []
        # Any other encoding is read as it is, as FormParser does (UPLOAD_ERROR_ON_BAD_CTE is off by default).
        encoding = self.headers.get(b"content-transfer-encoding", b"7bit").lower()
        self.decoder = None
        if encoding == b"base64":
            self.decoder = Base64Decoder(_Chunks(self.chunks))
        elif encoding == b"quoted-printable":
            self.decoder = QuotedPrintableDecoder(_Chunks(self.chunks))

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.decoder is not None:
            self.decoder.write(data[start:end])
        else:
            self.chunks.append(memoryview(data)[start:end])  # a view: the one copy is the join at the part's end

    def part_end(self) -> None:
        if self.decoder is not None:
            self.decoder.finalize()
        value, self.chunks = b"".join(self.chunks), []
        self.count += 1
        name = (self.field_name or b"").decode("utf-8", "replace")
        file_name = self.file_name
        if file_name is None:
            if self.count > MAX_PARTS or len(value) > MAX_FIELD_BYTES:
                raise InvalidRequest("Too many or too large form fields.", code="invalid_multipart")
            self.form.fields.setdefault(name, []).append(value.decode("utf-8", "replace"))
            return
        if self.count > MAX_PARTS:
            raise InvalidRequest("Too many form parts.", code="invalid_multipart")
        declared = self.headers.get(b"content-type")
        self.form.files.setdefault(name, []).append(
            FilePart(
                name=name,
                filename=file_name.decode("utf-8", "replace") or None,
                content_type=declared.decode("latin-1") if declared is not None else None,
                data=value,
            )
        )


class _Chunks:
    """Where a transfer decoder writes a part's decoded bytes."""

    def __init__(self, chunks: list[bytes | memoryview]) -> None:
        self.chunks = chunks

    def write(self, data: bytes) -> int:
        self.chunks.append(data)
        return len(data)
