"""`field=value` arguments of `concord settings set` -> a settings message and its update mask.

Values are read the way people type them and handed to protobuf's JSON parser, so the message
definitions stay the only schema:

- enums by their short name, any case: `conflict_policy=crm_wins`;
- durations as `90s`, `30m`, `12h`, `7d`: `sync_interval=15m`;
- repeated fields as a comma list (empty for none): `blacklist=spam.test,ann@x.test`;
- booleans `true/false` (`yes/no`, `on/off`), numbers as numbers;
- anything else as JSON: `auto_resolve={"unknownAddressAction": "CREATE_LEAD"}`, or a JSON list
  for `sharing`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from concord_cli.output import enum_prefix

__all__ = ["OUTPUT_ONLY", "settable_fields", "settings_change"]

M = TypeVar("M", bound=Message)

#: Set by the server; a mask naming them is refused there, so refuse it here with a clear line.
OUTPUT_ONLY = frozenset(
    {"name", "locked_fields", "update_time", "etag", "settings_access_disabled"}
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def settable_fields(message_type: type[Message]) -> list[str]:
    return [f.name for f in message_type.DESCRIPTOR.fields if f.name not in OUTPUT_ONLY]


def settings_change(message_type: type[M], assignments: Sequence[str]) -> tuple[M, list[str]]:
    """The message holding the new values, and the paths to change (in the order given)."""
    if not assignments:
        raise ValueError("nothing to set: give field=value (fields: " + _fields(message_type) + ")")
    data: dict[str, Any] = {}
    paths: list[str] = []
    for assignment in assignments:
        name, equals, text = assignment.partition("=")
        name = name.strip()
        # The stubs type a descriptor as the Python or the upb class; both have what we use.
        field = cast(FieldDescriptor | None, message_type.DESCRIPTOR.fields_by_name.get(name))
        if not equals:
            raise ValueError(f"{assignment!r} is not field=value")
        if field is None or name in OUTPUT_ONLY:
            raise ValueError(f"{name!r} is not a setting (settable: {_fields(message_type)})")
        if name in paths:
            raise ValueError(f"{name} is set twice")
        data[field.json_name] = _json_value(field, text.strip())
        paths.append(name)
    message = message_type()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from None
    return message, paths


def _fields(message_type: type[Message]) -> str:
    return ", ".join(settable_fields(message_type))


def _json_value(field: FieldDescriptor, text: str) -> Any:
    name = field.name
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: not valid JSON ({exc.msg})") from None
    if field.is_repeated:
        return [_scalar(field, part.strip()) for part in text.split(",") if part.strip()]
    return _scalar(field, text)


def _scalar(field: FieldDescriptor, text: str) -> Any:
    name = field.name
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Duration":
            return _duration(name, text)
        raise ValueError(f"{name} takes JSON, e.g. {name}='{{...}}'")
    if field.enum_type is not None:
        return _enum(field, text)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{name} is true or false, got {text!r}")
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name} is a number, got {text!r}") from None
    if field.type == FieldDescriptor.TYPE_STRING:
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} is a whole number, got {text!r}") from None


def _duration(name: str, text: str) -> str:
    match = _DURATION.fullmatch(text.lower())
    if match is None:
        raise ValueError(f"{name} is a duration such as 90s, 30m, 12h or 7d, got {text!r}")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return f"{int(seconds)}s" if seconds.is_integer() else f"{seconds:.3f}s"


def _enum(field: FieldDescriptor, text: str) -> str:
    wanted = text.upper().replace("-", "_")
    enum = field.enum_type
    assert enum is not None  # _scalar sends enums only
    names = [v.name for v in enum.values if not v.name.endswith("_UNSPECIFIED")]
    matches = [n for n in names if n == wanted or n.endswith(f"_{wanted}")]
    if len(matches) != 1:
        prefix = enum_prefix(names)
        allowed = ", ".join(n.removeprefix(prefix).lower() for n in names)
        raise ValueError(f"{field.name} is one of {allowed}; got {text!r}")
    return matches[0]
