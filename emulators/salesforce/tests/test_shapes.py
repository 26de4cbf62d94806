"""The shape comparison the conformance tests rely on does catch differences."""

from __future__ import annotations

import pytest

from .shapes import shape_mismatches

pytestmark = pytest.mark.unit


def test_equal_shapes_with_other_values_pass() -> None:
    assert shape_mismatches({"a": 1, "b": [{"c": "x"}]}, {"a": 2.5, "b": [{"c": "y"}, {}]}) == []


@pytest.mark.parametrize(
    ("recorded", "ours"),
    [
        ({"a": 1}, {"a": 1, "extra": 2}),
        ({"a": 1, "b": 2}, {"a": 1}),
        ({"a": "text"}, {"a": 5}),
        ({"a": True}, {"a": 1}),
        ([{"errorCode": "X", "message": "m"}], [{"errorCode": "X"}]),
        ({"a": {"b": []}}, {"a": {"b": {}}}),
    ],
)
def test_differences_are_found(recorded: object, ours: object) -> None:
    assert shape_mismatches(recorded, ours) != []


def test_hand_edited_recordings_only_need_their_own_keys() -> None:
    assert shape_mismatches({"a": 1}, {"a": 1, "b": 2}, hand_edited=True) == []
    assert shape_mismatches({"a": 1, "c": 3}, {"a": 1}, hand_edited=True) != []
