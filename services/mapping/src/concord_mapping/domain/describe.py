"""Salesforce field metadata (the parts of a describe the mapping needs)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TEXT_TYPES", "FieldDescribe", "SObjectDescribe"]

TEXT_TYPES = frozenset({"string", "textarea", "combobox", "email", "phone", "url", "picklist"})


@dataclass(frozen=True)
class FieldDescribe:
    name: str
    type: str
    length: int
    createable: bool
    updateable: bool
    picklist_values: tuple[str, ...] = ()
    restricted_picklist: bool = False

    @property
    def writable(self) -> bool:
        return self.createable or self.updateable


@dataclass(frozen=True)
class SObjectDescribe:
    name: str
    fields: Mapping[str, FieldDescribe]
    # False for describes written from the documentation rather than recorded from an org.
    recorded: bool = True
    # True for the org's own describe (from crm-connector): it lists the org's custom fields,
    # so a field it lacks does not exist. The shipped describes cannot know them.
    live: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SObjectDescribe:
        fields = {
            f["name"]: FieldDescribe(
                name=f["name"],
                type=f["type"],
                length=int(f.get("length") or 0),
                createable=bool(f.get("createable")),
                updateable=bool(f.get("updateable")),
                picklist_values=tuple(
                    p if isinstance(p, str) else p["value"]
                    for p in f.get("picklistValues") or ()
                    if isinstance(p, str) or p.get("active", True)
                ),
                restricted_picklist=bool(f.get("restrictedPicklist")),
            )
            for f in data["fields"]
        }
        return cls(name=data["name"], fields=fields, recorded=bool(data.get("recorded", True)))

    def field(self, name: str) -> FieldDescribe | None:
        return self.fields.get(name)

    @functools.cached_property
    def text_limits(self) -> Mapping[str, int]:
        """Field name -> the most characters Salesforce keeps, for text fields with a limit."""
        return {f.name: f.length for f in self.fields.values() if f.type in TEXT_TYPES and f.length}
