"""Protobuf conversions on the mapping path, each giving exactly what the generic one gives.

`message_to_dict`: a message's protobuf JSON form, as `json_format.MessageToDict(message,
preserving_proto_field_name=True)` gives it, without re-reading descriptors for every field.
How each field of a message type converts is worked out once per type. Types with a field this
module does not convert itself (bytes, floats, maps, extensions, closed enums, well-known types
other than Timestamp and Duration) are left to json_format, as is any message whose conversion
fails, so the result and the errors are always json_format's own.

`fill_struct`: `struct.update(values)` for a fresh Struct, with null, text and boolean values
encoded straight into the Struct's wire form and parsed in one call rather than set one by one
(other values, and text that cannot be encoded, are left to `update`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import descriptor_pool, json_format, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["fill_struct", "message_to_dict"]

_Convert = Callable[[Any], Any]
# Per message type: field -> (JSON name, value converter or None for values kept as they are);
# None for types json_format converts.
_Plan = dict[FieldDescriptor, tuple[str, _Convert | None]]
_PLANS: dict[Descriptor, _Plan | None] = {}

# Values json_format hands over unchanged (`str(text)` and `bool(flag)` are the values).
_AS_IS = frozenset(
    {
        FieldDescriptor.CPPTYPE_STRING,
        FieldDescriptor.CPPTYPE_BOOL,
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_UINT32,
    }
)
_AS_TEXT = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
# Well-known types whose JSON is their ToJsonString(), as in json_format.
_JSON_STRING_TYPES = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


def message_to_dict(message: Message) -> dict[str, Any]:
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    try:
        plan = _PLANS[descriptor]
    except KeyError:
        plan = _PLANS[descriptor] = _plan(descriptor)
    if plan is not None:
        try:
            js: dict[str, Any] = {}
            for field, value in message.ListFields():
                name, convert = plan[field]
                js[name] = value if convert is None else convert(value)
            return js
        except Exception:
            pass  # json_format's own answer below, or its own error
    return _slow(message)


def _slow(message: Message) -> dict[str, Any]:
    found: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return found


class _NotHere(Exception):
    """A field json_format converts (the whole message then goes to json_format)."""


def _plan(message: Descriptor) -> _Plan | None:
    if message.full_name.startswith("google.protobuf.") or message.GetOptions().map_entry:
        return None
    if _has_json_enum_names():
        return None
    plan: _Plan = {}
    try:
        for field in message.fields:
            convert = _value(field)
            if field.is_repeated:
                convert = list if convert is None else _each(convert)
            plan[field] = (field.name, convert)
    except _NotHere:
        return None
    return plan


def _value(field: FieldDescriptor) -> _Convert | None:
    """How one value of the field converts (None: unchanged)."""
    cpp = field.cpp_type
    if cpp in _AS_IS and field.type != FieldDescriptor.TYPE_BYTES:
        return None
    if cpp in _AS_TEXT:
        return str
    enum = field.enum_type
    if cpp == FieldDescriptor.CPPTYPE_ENUM and enum is not None:
        if enum.is_closed or enum.full_name == "google.protobuf.NullValue":
            raise _NotHere
        names = {number: value.name for number, value in enum.values_by_number.items()}
        return lambda number: names.get(number, number)
    inner = field.message_type
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE and inner is not None:
        if inner.full_name in _JSON_STRING_TYPES:
            return _json_string
        if inner.GetOptions().map_entry or inner.full_name.startswith("google.protobuf."):
            raise _NotHere
        return message_to_dict
    raise _NotHere


def _json_string(message: Any) -> str:
    text: str = message.ToJsonString()
    return text


def _each(convert: _Convert) -> _Convert:
    return lambda values: [convert(value) for value in values]


def _has_json_enum_names() -> bool:
    """Whether enum values may carry JSON names of their own (json_format prints those)."""
    try:
        descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return False
    return True


# Struct wire form: `fields` (1) holds map entries of key (1) and Value (2); a Value is one of
# null_value (1, varint), string_value (3, length-delimited), bool_value (4, varint).
_ENTRY = b"\x0a"
_VALUE = b"\x12"
_NULL = b"\x12\x02\x08\x00"
_TRUE = b"\x12\x02\x20\x01"
_FALSE = b"\x12\x02\x20\x00"
_TEXT = b"\x1a"
_SMALL = [bytes((n,)) for n in range(0x80)]
# Encoded keys (and whole entries of keys set to null) by field name; Salesforce field names
# are few, but the caches stop growing at this size whatever comes.
_CACHE_LIMIT = 4096
_KEYS: dict[str, bytes] = {}
_NULL_ENTRIES: dict[str, bytes] = {}


def fill_struct(struct: struct_pb2.Struct, values: Mapping[str, Any]) -> None:
    """`struct.update(values)` for an empty `struct`."""
    parts: list[bytes] = []
    rest: dict[str, Any] = {}
    for key, value in values.items():
        try:
            if value is None:
                entry = _NULL_ENTRIES.get(key)
                if entry is None:
                    entry = _entry(_key(key) + _NULL)
                    if len(_NULL_ENTRIES) < _CACHE_LIMIT:
                        _NULL_ENTRIES[key] = entry
                parts.append(entry)
            elif value.__class__ is str:
                text = value.encode()
                size = len(text)
                name = _KEYS.get(key) or _key(key)
                if len(name) + size < 124:
                    # Every length fits one byte: the entry in one piece.
                    head = bytes((len(name) + size + 4,))
                    parts.append(_ENTRY + head + name + bytes((0x12, size + 2, 0x1A, size)) + text)
                else:
                    data = _TEXT + _varint(size) + text
                    parts.append(_entry(name + _VALUE + _varint(len(data)) + data))
            elif value is True or value is False:
                parts.append(_entry(_key(key) + (_TRUE if value else _FALSE)))
            else:
                rest[key] = value
        except (AttributeError, UnicodeEncodeError):
            # A key that is not text, or text with lone surrogates: update decides.
            rest[key] = value
    struct.MergeFromString(b"".join(parts))
    if rest:
        struct.update(rest)


def _key(key: str) -> bytes:
    found = _KEYS.get(key)
    if found is None:
        data = key.encode()
        found = _ENTRY + _varint(len(data)) + data
        if len(_KEYS) < _CACHE_LIMIT:
            _KEYS[key] = found
    return found


def _entry(body: bytes) -> bytes:
    return _ENTRY + _varint(len(body)) + body


def _varint(number: int) -> bytes:
    if number < 0x80:
        return _SMALL[number]
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
