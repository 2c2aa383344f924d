"""``multipart/form-data`` request bodies as darkroom reads them: the parsed :class:`Form` (parsed by
:mod:`darkroom.api.form_parser`, with python-multipart, imported only by the functions that read forms), and
its text fields typed as a request model takes them. The body's bytes come from
:class:`darkroom.api.http.HttpRequest`.

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

from darkroom.api.errors import InvalidRequest

MAX_PARTS = 64
MAX_FIELD_BYTES = 64 * 1024
_OBJECT_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[[A-Za-z_][A-Za-z0-9_]*\])+)$")  # svg[reasoning][effort]
_INTEGER = re.compile(r"^[+-]?[0-9]{1,32}$")  # ASCII digits only: int() also takes "1_0" and other scripts' digits


@dataclass
class FilePart:
    name: str
    filename: str | None
    content_type: str | None  # as declared by the client: informational only, never trusted
    data: bytes

    def take(self) -> bytes:
        """The part's bytes, handed over: the part (and so the form) keeps none, and they live only as long as
        the caller holds them (an edit's image: until it is decoded)."""
        data, self.data = self.data, b""
        return data


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[FilePart]] = field(default_factory=dict)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


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
