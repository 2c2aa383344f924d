"""darkroom.api.multipart.typed_fields (multipart text -> the strict model's types) and darkroom.end_users."""

import pytest

from darkroom.api.errors import InvalidRequest
from darkroom.api.images import ImageEditRequest
from darkroom.api.multipart import typed_fields
from darkroom.end_users import end_user_id


def test_fields_are_typed_by_the_parameter_and_objects_nested():
    fields = {
        "prompt": "7",
        "n": "2",
        "stream": "FALSE",
        "size": "256x256",
        "svg[model]": "author",
        "svg[reasoning][effort]": "low",
        "seed": "12",
    }
    assert typed_fields(ImageEditRequest, fields) == {
        "prompt": "7",
        "n": 2,
        "stream": False,
        "size": "256x256",
        "seed": "12",  # unknown names stay text
        "svg": {"model": "author", "reasoning": {"effort": "low"}},
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"svg": "x", "svg[model]": "y"},
        {"svg[model]": "y", "svg": "x"},
        {"svg[reasoning][effort]": "low", "svg[reasoning]": "x"},
    ],
)
def test_a_name_sent_as_value_and_object_is_refused(fields):
    with pytest.raises(InvalidRequest) as raised:
        typed_fields(ImageEditRequest, fields)
    assert (raised.value.param, raised.value.code) == ("svg", "duplicate_parameter")


def test_end_user_ids_are_opaque_per_tenant_and_fall_back_to_user():
    assert end_user_id("tnt_a", None) is None and end_user_id("tnt_a", "", "") is None
    assert end_user_id("tnt_a", "", "bob") == end_user_id("tnt_a", "bob")  # an empty safety_identifier: user
    assert end_user_id("tnt_a", "alice", "bob") == end_user_id("tnt_a", "alice")
    assert end_user_id("tnt_a", "alice") != end_user_id("tnt_b", "alice")
    assert "alice" not in end_user_id("tnt_a", "alice") and len(end_user_id("tnt_a", "alice")) == 35
