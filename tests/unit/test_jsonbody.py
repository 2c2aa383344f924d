"""The strict JSON parser's edges: what is still accepted right at each limit, and the first thing past it."""

import pytest

from darkroom.api.jsonbody import MAX_DEPTH, MAX_INTEGER_DIGITS, MalformedJson, loads


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_limits_are_inclusive():
    assert loads(_nested(MAX_DEPTH)) is not None
    with pytest.raises(MalformedJson):
        loads(_nested(MAX_DEPTH + 1))
    assert loads("9" * MAX_INTEGER_DIGITS) == int("9" * MAX_INTEGER_DIGITS)
    assert loads("-" + "9" * MAX_INTEGER_DIGITS) < 0
    with pytest.raises(MalformedJson):
        loads("9" * (MAX_INTEGER_DIGITS + 1))


def test_ordinary_documents_are_unchanged():
    text = '{"a": [1, 2.5, -3e10, true, null, "\\u00e9 \\ud83d\\ude00"], "b": {"c": {}}}'
    assert loads(text) == loads(text.encode()) == {"a": [1, 2.5, -3e10, True, None, "é 😀"], "b": {"c": {}}}


def test_duplicate_keys_name_their_path_and_refuse_in_nested_objects():
    with pytest.raises(MalformedJson) as caught:
        loads('{"tools": [{"type": "a", "type": "b"}]}')
    assert caught.value.param == "type"
    with pytest.raises(MalformedJson) as caught:
        loads('{"x' + "y" * 100 + '": 1, "x' + "y" * 100 + '": 2}')
    assert caught.value.param is None  # a long key is the client's text: not repeated


def test_a_surrogate_in_a_nested_string_names_its_path():
    with pytest.raises(MalformedJson) as caught:
        loads('{"input": {"text": "\\udc00"}}')
    assert caught.value.param == "input.text"
