"""Mapping tables as data: rules read from YAML/JSON, checked against the table JSON Schema."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["Direction", "FieldRule", "Table", "TableSchemaError", "TransformSpec", "parse_table"]


class Direction(StrEnum):
    TWO_WAY = "SYNC_DIRECTION_TWO_WAY"
    MAIL_TO_CRM = "SYNC_DIRECTION_MAIL_TO_CRM"
    CRM_TO_MAIL = "SYNC_DIRECTION_CRM_TO_MAIL"
    NONE = "SYNC_DIRECTION_NONE"

    @property
    def to_crm(self) -> bool:
        return self in (Direction.TWO_WAY, Direction.MAIL_TO_CRM)

    @property
    def to_mail(self) -> bool:
        return self in (Direction.TWO_WAY, Direction.CRM_TO_MAIL)


@dataclass(frozen=True)
class TransformSpec:
    name: str = "copy"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldRule:
    mail_field: str
    crm_field: str
    to_crm: TransformSpec
    to_mail: TransformSpec
    # None: the table's direction applies.
    direction: Direction | None = None

    @functools.cached_property
    def mail_key(self) -> str:
        """The path inside the payload (`subject` of `calendar_item.subject`)."""
        return self.mail_field.split(".", 1)[1]

    def to_crm_in(self, table: Direction) -> bool:
        """A field flows only where both it and its object do: a one-way table stays one way."""
        return (self.direction or table).to_crm and table.to_crm

    def to_mail_in(self, table: Direction) -> bool:
        return (self.direction or table).to_mail and table.to_mail


@dataclass(frozen=True)
class Table:
    target_sobject: str
    direction: Direction
    rules: Sequence[FieldRule]
    default_version: int = 0

    @functools.cached_property
    def crm_rules(self) -> tuple[FieldRule, ...]:
        """The rules that write to Salesforce, worked out once per table, not per item."""
        return tuple(r for r in self.rules if r.to_crm_in(self.direction))

    @functools.cached_property
    def mail_rules(self) -> tuple[FieldRule, ...]:
        return tuple(r for r in self.rules if r.to_mail_in(self.direction))

    @property
    def kind_prefix(self) -> str:
        """The payload every rule reads, e.g. `calendar_item`."""
        return self.rules[0].mail_field.split(".", 1)[0] if self.rules else ""


class TableSchemaError(ValueError):
    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {p}" for f, p in violations))
        self.violations = list(violations)


def parse_table(content: Mapping[str, Any], schema: Mapping[str, Any]) -> Table:
    """The table in `content` (snake_case JSON form), or every schema violation at once."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(content), key=lambda e: list(e.absolute_path))
    if errors:
        raise TableSchemaError(
            [(_path(e.absolute_path), e.message) for e in errors],
        )
    rules = [
        FieldRule(
            mail_field=r["mail_field"],
            crm_field=r["crm_field"],
            to_crm=_transform(r.get("to_crm")),
            to_mail=_transform(r.get("to_mail")),
            direction=Direction(r["direction"]) if r.get("direction") else None,
        )
        for r in content.get("rules", [])
    ]
    payloads = {r.mail_field.split(".", 1)[0] for r in rules}
    if len(payloads) > 1:
        raise TableSchemaError([("rules", f"mix item kinds {sorted(payloads)}")])
    return Table(
        target_sobject=content["target_sobject"],
        direction=Direction(content["direction"]),
        rules=rules,
        default_version=int(content.get("default_version", 0)),
    )


def _transform(data: Mapping[str, Any] | None) -> TransformSpec:
    if not data:
        return TransformSpec()
    return TransformSpec(data["name"], dict(data.get("params") or {}))


def _path(parts: Sequence[str | int] | Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
