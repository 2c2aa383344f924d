"""``multipart/form-data`` request bodies, parsed with python-multipart (the maintained streaming parser
behind Starlette and FastAPI). The body's bytes come from :class:`darkroom.api.http.HttpRequest`.

Field names follow what the ``openai`` SDK sends: ``image`` for one file, ``image[]`` for a list,
scalars as strings, objects as ``svg[model]``-style names. Part sizes and counts are bounded while
parsing; :func:`typed_fields` gives the text fields the types the request model expects.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field

from pydantic import BaseModel
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import Field, File, FormParser, MultipartParser, MultipartState, parse_options_header

from darkroom.api.errors import InvalidRequest

MAX_PARTS = 64
MAX_FIELD_BYTES = 64 * 1024
_OBJECT_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[[A-Za-z_][A-Za-z0-9_]*\])+)$")  # svg[reasoning][effort]
_INTEGER = re.compile(r"^[+-]?[0-9]{1,32}$")  # ASCII digits only: int() also takes "1_0" and other scripts' digits


@dataclass(frozen=True)
class FilePart:
    name: str
    filename: str | None
    content_type: str | None  # as declared by the client: informational only, never trusted
    data: bytes


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[FilePart]] = field(default_factory=dict)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_form(content_type: str, body: bytes) -> Form:
    """Parse a ``multipart/form-data`` body; a malformed body is a 400 ``invalid_multipart``."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest("Expected a multipart/form-data body with a boundary.", code="invalid_multipart")
    form = Form()
    count = 0

    def on_field(part: Field) -> None:
        nonlocal count
        count += 1
        value = part.value or b""
        if count > MAX_PARTS or len(value) > MAX_FIELD_BYTES:
            raise InvalidRequest("Too many or too large form fields.", code="invalid_multipart")
        name = (part.field_name or b"").decode("utf-8", "replace")
        form.fields.setdefault(name, []).append(value.decode("utf-8", "replace"))

    def on_file(part: File) -> None:
        nonlocal count
        count += 1
        if count > MAX_PARTS:
            raise InvalidRequest("Too many form parts.", code="invalid_multipart")
        part.file_object.seek(0)
        name = (part.field_name or b"").decode("utf-8", "replace")
        filename = part.file_name.decode("utf-8", "replace") if part.file_name else None
        form.files.setdefault(name, []).append(
            FilePart(name=name, filename=filename, content_type=part.content_type, data=part.file_object.read())
        )

    # Keep parts in memory: a Lambda body is at most 6 MB, and /tmp must not collect client files.
    parser = FormParser(
        "multipart/form-data",
        on_field,
        on_file,
        boundary=boundary,
        config={"MAX_MEMORY_FILE_SIZE": float("inf"), "MAX_BODY_SIZE": len(body) + 1},
    )
    try:
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise InvalidRequest("The multipart/form-data body is malformed.", code="invalid_multipart") from exc
    inner = parser.parser
    if not isinstance(inner, MultipartParser) or inner.state != MultipartState.END:  # truncated: no closing boundary
        raise InvalidRequest("The multipart/form-data body is incomplete.", code="invalid_multipart")
    return form


def _scalar_types(annotation: object) -> tuple[object, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _typed(model: type[BaseModel], name: str, text: str) -> object:
    info = model.model_fields.get(name)
    kinds = _scalar_types(info.annotation) if info is not None else ()
    if bool in kinds:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise InvalidRequest(
            f"Invalid type for '{name}': expected a boolean ('true' or 'false').", param=name, code="invalid_type"
        )
    if int in kinds:
        if _INTEGER.match(text):
            return int(text)
        raise InvalidRequest(f"Invalid type for '{name}': expected an integer.", param=name, code="invalid_type")
    return text


def typed_fields(model: type[BaseModel], fields: dict[str, str]) -> dict[str, object]:
    """A form's text fields as ``model`` (a strict JSON request model) takes them.

    Every multipart scalar is text, so the conversion goes by the parameter's declared type, explicitly:
    an integer parameter takes ASCII digits (``"2"``; not ``"2.0"`` or ``"two"``), a boolean one ``true`` or
    ``false``; anything else stays text for the model to validate. A name such as ``svg[reasoning][effort]``
    (how the SDK sends an object) becomes the nested object ``{"svg": {"reasoning": {"effort": ...}}}``.
    A value that does not parse is a 400 ``invalid_type`` naming the parameter (never repeating the value).
    """
    typed: dict[str, object] = {}
    for name, text in fields.items():
        match = _OBJECT_FIELD.match(name)
        keys = [match.group(1), *re.findall(r"\[([^\]]+)\]", match.group(2))] if match else [name]
        target: dict[str, object] | None = typed
        for key in keys[:-1]:
            nested = target.setdefault(key, {}) if target is not None else None
            target = nested if isinstance(nested, dict) else None
        if target is None or keys[-1] in target:
            raise InvalidRequest(
                f"'{keys[0]}' was sent both as a value and as an object.", param=keys[0], code="duplicate_parameter"
            )
        target[keys[-1]] = _typed(model, name, text) if match is None else text
    return typed
