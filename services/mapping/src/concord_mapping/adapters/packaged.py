"""The data shipped inside the package: default tables, their JSON Schema, recorded describes."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml

from concord.common.v1 import resources_pb2
from concord_mapping.domain.describe import SObjectDescribe
from concord_mapping.domain.model import Kind
from concord_mapping.domain.service import TableData
from concord_mapping.domain.table import parse_table

__all__ = ["DEFAULT_FILES", "read_table_file", "table_data"]

DEFAULT_FILES = {
    Kind.CALENDAR_ITEM: "event.yaml",
    Kind.TASK: "task.yaml",
    Kind.CONTACT: "contact.yaml",
    Kind.EMAIL: "email.yaml",
}


def read_table_file(name: str) -> dict[str, Any]:
    text = resources.files("concord_mapping.tables").joinpath(name).read_text("utf-8")
    content: dict[str, Any] = yaml.safe_load(text)
    return content


@functools.cache
def table_data() -> TableData:
    """Read once at start-up; a default that breaks the schema stops the process."""
    tables = resources.files("concord_mapping.tables")
    schema = json.loads(tables.joinpath("mapping-table.schema.json").read_text("utf-8"))
    contents = {kind: read_table_file(name) for kind, name in DEFAULT_FILES.items()}
    defaults = {kind: parse_table(content, schema) for kind, content in contents.items()}
    describes: dict[str, SObjectDescribe] = {}
    for entry in resources.files("concord_mapping.describes").iterdir():
        if entry.name.endswith(".json"):
            describe = SObjectDescribe.from_json(json.loads(entry.read_text("utf-8")))
            describes[describe.name] = describe
    return TableData(schema, contents, defaults, describes, mail_fields())


def mail_fields() -> frozenset[str]:
    """Every field path of MailItem's payloads, two levels deep (`calendar_item.organizer` and
    `calendar_item.organizer.address`), read from the generated descriptors."""
    paths: set[str] = set()
    item = resources_pb2.MailItem.DESCRIPTOR
    for payload in item.oneofs_by_name["payload"].fields:
        assert payload.message_type is not None  # every payload is a message
        for field in payload.message_type.fields:
            path = f"{payload.name}.{field.name}"
            paths.add(path)
            if field.message_type is not None:
                paths.update(f"{path}.{inner.name}" for inner in field.message_type.fields)
    return frozenset(paths)
