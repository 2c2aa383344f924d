"""Request bodies as strict JSON: one parser for every JSON body darkroom reads.

Python's ``json`` module is lenient where a public API must not be. It takes ``NaN`` and ``Infinity``,
keeps the last of two equal keys, turns lone surrogate escapes into strings nothing downstream can
encode, raises ``RecursionError`` on deep nesting and ``ValueError`` past 4,300 integer digits. Each of
those became a 500 or a silently changed request. Here each is a 400 ``invalid_json``:

- the bytes must be UTF-8 (JSON bodies reach Lambda byte for byte: ``application/json`` is one of
  the API's binary media types, so API Gateway does not replace bad bytes with U+FFFD);
- nesting at most :data:`MAX_DEPTH` arrays and objects;
- integers at most :data:`MAX_INTEGER_DIGITS` digits, floats finite;
- no ``NaN``, ``Infinity`` or ``-Infinity`` (they are not JSON, RFC 8259 section 6);
- no duplicate key in one object: RFC 8259 section 4 leaves their meaning to the parser, and two
  parsers that disagree (last wins, first wins) are how a check is bypassed, so darkroom refuses them;
- no unpaired surrogate escape (``"\\ud800"``), which is not a Unicode character.

Messages say what is wrong and where (``param``: the key's dotted path) but never repeat a value.
"""

from __future__ import annotations

import json
import re
from typing import Any

from darkroom.api.errors import InvalidRequest

MAX_DEPTH = 64
MAX_INTEGER_DIGITS = 32
_MAX_PARAM_LENGTH = 64
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class MalformedJson(InvalidRequest):
    default_code = "invalid_json"


def loads(data: str | bytes) -> Any:
    """Parse one JSON document under the rules above; raises :class:`MalformedJson` (400)."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedJson("The request body is not valid UTF-8.") from None
    else:
        text = data
    try:
        document = json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_int=_integer, parse_float=_float
        )
    except MalformedJson:
        raise
    except RecursionError:
        raise MalformedJson(f"The request body nests arrays and objects more than {MAX_DEPTH} deep.") from None
    except ValueError as exc:  # JSONDecodeError: the position is about the client's text, not its content
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise MalformedJson(f"The request body is not valid JSON{where}.") from None
    _check(document)
    return document


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:  # the first key that repeats one before it is the one named
            if key in seen:
                raise MalformedJson("The request body has a duplicate key in one object.", param=_param(key))
            seen.add(key)
    return document


def _constant(name: str) -> float:
    raise MalformedJson(f"'{name}' is not a JSON value; send a finite number.")


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise MalformedJson(f"The request body has an integer longer than {MAX_INTEGER_DIGITS} digits.")
    return int(digits)


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise MalformedJson("The request body has a number too large to represent.")
    return value


def _check(document: Any) -> None:
    """Depth and unpaired surrogates, without recursion (the document may be as deep as json allowed)."""
    stack: list[tuple[Any, int, str | None]] = [(document, 1, None)]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if _LONE_SURROGATE.search(value):
                raise MalformedJson("The request body has an unpaired UTF-16 surrogate escape.", param=path)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise MalformedJson(f"The request body nests arrays and objects more than {MAX_DEPTH} deep.")
        if isinstance(value, dict):
            for key, item in value.items():
                child = _param(key if path is None else f"{path}.{key}")
                if _LONE_SURROGATE.search(key):
                    raise MalformedJson("The request body has an unpaired UTF-16 surrogate escape.", param=path)
                stack.append((item, depth + 1, child))
        else:
            stack.extend((item, depth + 1, path) for item in value)


def _param(path: str) -> str | None:
    """A key path fit to repeat: short and printable, else None (keys are the client's text too)."""
    if len(path) > _MAX_PARAM_LENGTH or not path.isprintable() or _LONE_SURROGATE.search(path):
        return None
    return path
