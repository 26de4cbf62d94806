"""The org's object model: recorded describes, the demo org's custom field, synthetic objects."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from concord_salesforce_emulator import catalog, synthetic

Describe = dict[str, Any]
FieldDescribe = dict[str, Any]

RECORDED = ("Account", "Case", "Contact", "Event", "Lead", "Opportunity", "OpportunityContactRole")
LINK_FIELD = "Concord_Link_Id__c"
LINKED_OBJECTS = ("Event", "Task", "Contact", "Lead", "EmailMessage")

# Fields Salesforce maintains itself: a client may read but never write them.
SYSTEM_FIELDS = frozenset(
    {
        "Id",
        "IsDeleted",
        "CreatedDate",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "SystemModstamp",
    }
)


@dataclass(frozen=True)
class SObjectType:
    name: str
    key_prefix: str
    describe: Describe
    fields: dict[str, FieldDescribe]  # keyed by lower-case name: API names are case-insensitive

    def field(self, name: str) -> FieldDescribe | None:
        return self.fields.get(name.lower())

    def relationship(self, name: str) -> FieldDescribe | None:
        """The reference field behind a parent relationship name (`Who`, `Account`)."""
        lowered = name.lower()
        for candidate in self.fields.values():
            relationship = candidate.get("relationshipName")
            if relationship and relationship.lower() == lowered:
                return candidate
        return None


class Schema:
    def __init__(self, describes: list[Describe]) -> None:
        self.types: dict[str, SObjectType] = {}
        self.by_prefix: dict[str, SObjectType] = {}
        for describe in describes:
            sobject = SObjectType(
                name=describe["name"],
                key_prefix=describe["keyPrefix"],
                describe=describe,
                fields={f["name"].lower(): f for f in describe["fields"]},
            )
            self.types[sobject.name.lower()] = sobject
            self.by_prefix[sobject.key_prefix] = sobject
        template = resources.files(__package__).joinpath("describes/_global_entry_template.json")
        self._global_keys = list(json.loads(template.read_text()))

    def get(self, name: str) -> SObjectType | None:
        return self.types.get(name.lower())

    def type_of_id(self, record_id: str) -> SObjectType | None:
        return self.by_prefix.get(record_id[:3])

    def global_describe(self, version: str) -> dict[str, Any]:
        sobjects = []
        for sobject in sorted(self.types.values(), key=lambda s: s.name):
            entry = {k: sobject.describe.get(k) for k in self._global_keys if k != "urls"}
            entry["urls"] = {
                "sobject": f"/services/data/v{version}/sobjects/{sobject.name}",
                "describe": f"/services/data/v{version}/sobjects/{sobject.name}/describe",
                "rowTemplate": f"/services/data/v{version}/sobjects/{sobject.name}/{{ID}}",
            }
            sobjects.append(entry)
        return {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}

    def describe(self, sobject: SObjectType, version: str) -> Describe:
        # Recorded describes say `vxx.0`; answer in the version the client speaks.
        text = json.dumps(sobject.describe).replace("/vxx.0/", f"/v{version}/")
        result: Describe = json.loads(text)
        return result


def load_schema() -> Schema:
    folder = resources.files(__package__).joinpath("describes")
    describes = [json.loads(folder.joinpath(f"{name}.json").read_text()) for name in RECORDED]
    event = next(d for d in describes if d["name"] == "Event")
    object_template = {k: v for k, v in event.items() if k != "fields"}
    describes.extend(synthetic.describes(_template_field(describes), object_template))
    known = {d["name"] for d in describes}
    describes.extend(catalog.describes(known, _template_field(describes), object_template))
    catalog.add_child_relationships(describes, RECORDED)
    catalog.apply_global_flags(describes, RECORDED)
    for describe in describes:
        if describe["name"] in LINKED_OBJECTS:
            describe["fields"].append(synthetic.link_field(_template_field(describes)))
    return Schema(describes)


def _template_field(describes: list[Describe]) -> FieldDescribe:
    event = next(d for d in describes if d["name"] == "Event")
    subject = next(f for f in event["fields"] if f["name"] == "Subject")
    return copy.deepcopy(subject)
