from __future__ import annotations

import copy
from typing import Any

import pytest

from concord_mapping.adapters.packaged import DEFAULT_FILES, read_table_file, table_data
from concord_mapping.domain.model import InvalidTable, Kind, TableName, TableVersion
from concord_mapping.domain.service import MappingTables
from concord_mapping.domain.table import Direction, TableSchemaError, parse_table
from concord_mapping.domain.validation import validate_table

pytestmark = pytest.mark.unit

DATA = table_data()
EVENTS = TableName("demo", Kind.CALENDAR_ITEM)


def event_content() -> dict[str, Any]:
    content = copy.deepcopy(read_table_file("event.yaml"))
    content.pop("default_version")
    return content


def check(content: dict[str, Any], name: TableName = EVENTS) -> list[tuple[str, str]]:
    with pytest.raises(InvalidTable) as caught:
        MappingTables(None, DATA).check(name, content)  # type: ignore[arg-type]
    return caught.value.field_violations


@pytest.mark.parametrize("kind", list(Kind))
def test_every_default_fits_the_schema_and_its_describe(kind: Kind) -> None:
    table = DATA.defaults[kind]
    assert table.rules
    assert table.kind_prefix == kind.payload
    assert validate_table(table, DATA.describes) == []
    assert table.default_version >= 1
    assert DEFAULT_FILES[kind].endswith(".yaml")


def test_email_is_one_way_and_task_of_type_email_is_a_valid_alternative() -> None:
    assert DATA.defaults[Kind.EMAIL].direction is Direction.MAIL_TO_CRM
    alternative = parse_table(read_table_file("email-as-task.yaml"), DATA.schema)
    assert alternative.target_sobject == "Task"
    assert validate_table(alternative, DATA.describes) == []


def test_schema_violations_name_every_field_at_once() -> None:
    content = event_content()
    content["direction"] = "SIDEWAYS"
    content["rules"][0]["crm_field"] = "Not a field"
    del content["rules"][1]["mail_field"]
    paths = [path for path, _ in check(content)]
    assert paths == ["table.direction", "table.rules[0].crm_field", "table.rules[1]"]
    with pytest.raises(TableSchemaError):
        parse_table({"target_sobject": "Event"}, DATA.schema)


def test_describe_violations_give_the_exact_field_and_reason() -> None:
    content = event_content()
    content["rules"] += [
        {"mail_field": "calendar_item.subject", "crm_field": "Subjekt"},
        {"mail_field": "calendar_item.subject", "crm_field": "IsArchived"},
        {
            "mail_field": "calendar_item.start",
            "crm_field": "Location",
            "to_crm": {"name": "event_start"},
        },
        {
            "mail_field": "calendar_item.show_as",
            "crm_field": "ShowAs",
            "to_crm": {"name": "picklist", "params": {"values": {"SHOW_AS_FREE": "Gratis"}}},
        },
        {
            "mail_field": "calendar_item.subject",
            "crm_field": "Subject",
            "to_crm": {"name": "rot13"},
        },
    ]
    first = len(content["rules"]) - 5
    problems = dict(check(content))
    assert problems[f"table.rules[{first}].crm_field"] == "Event has no field Subjekt"
    assert problems[f"table.rules[{first + 1}].crm_field"] == "Event.IsArchived is read-only"
    assert (
        "Location is string; event_start writes datetime"
        in problems[f"table.rules[{first + 2}].crm_field"]
    )
    assert problems[f"table.rules[{first + 3}].to_crm.params"] == (
        "'Gratis' is not a value of Event.ShowAs"
    )
    assert problems[f"table.rules[{first + 4}].to_crm.name"] == "unknown transform 'rot13'"


def test_read_only_field_is_fine_when_it_only_flows_to_the_mailbox() -> None:
    content = event_content()
    content["rules"].append(
        {
            "mail_field": "calendar_item.ical_uid",
            "crm_field": "IsArchived",
            "direction": "SYNC_DIRECTION_CRM_TO_MAIL",
        }
    )
    MappingTables(None, DATA).check(EVENTS, content)  # type: ignore[arg-type]


def test_custom_fields_by_name_and_custom_objects() -> None:
    content = event_content()
    content["rules"].append(
        {"mail_field": "calendar_item.online_meeting_url", "crm_field": "Teams_Link__c"}
    )
    MappingTables(None, DATA).check(EVENTS, content)  # type: ignore[arg-type]
    custom: dict[str, Any] = {
        "target_sobject": "Custom__c",
        "direction": "SYNC_DIRECTION_MAIL_TO_CRM",
        "rules": [
            {"mail_field": "calendar_item.subject", "crm_field": "Name"},
            {"mail_field": "calendar_item.location", "crm_field": "CustomField__c"},
        ],
    }
    MappingTables(None, DATA).check(EVENTS, custom)  # type: ignore[arg-type]
    custom["rules"].append({"mail_field": "calendar_item.body_text", "crm_field": "Missing__c"})
    assert check(custom) == [("table.rules[2].crm_field", "Custom__c has no field Missing__c")]


def test_mail_fields_must_exist_in_the_canonical_item() -> None:
    content = event_content()
    content["rules"].append({"mail_field": "calendar_item.subjekt", "crm_field": "Subject"})
    content["rules"].append(
        {"mail_field": "calendar_item.organizer.address", "crm_field": "Location"}
    )
    assert check(content) == [
        (
            f"table.rules[{len(content['rules']) - 2}].mail_field",
            "is not a field of the canonical item",
        )
    ]


def test_a_table_maps_the_kind_it_is_named_for() -> None:
    assert check(event_content(), TableName("demo", Kind.TASK))[0][0] == "table.rules[0].mail_field"
    unknown = {"target_sobject": "Opportunity", "direction": "SYNC_DIRECTION_TWO_WAY", "rules": []}
    assert check(unknown)[0][0] == "table.target_sobject"


def test_field_direction_never_widens_a_one_way_table() -> None:
    table = DATA.defaults[Kind.EMAIL]
    rule = table.rules[0]
    assert rule.to_crm_in(table.direction)
    assert not rule.to_mail_in(table.direction)
    organizer = next(
        r
        for r in DATA.defaults[Kind.CALENDAR_ITEM].rules
        if r.crm_field == "concord.OrganizerEmail"
    )
    assert organizer.to_crm_in(Direction.TWO_WAY)
    assert not organizer.to_mail_in(Direction.TWO_WAY)


async def test_records_come_back_through_the_table_that_owns_their_object() -> None:
    class Overrides:
        async def version(self, name: TableName, version: int) -> Any:
            if name.kind is not Kind.CALENDAR_ITEM:
                return None
            content = event_content()
            content["target_sobject"] = "Task"
            content["rules"] = [{"mail_field": "calendar_item.subject", "crm_field": "Subject"}]
            return TableVersion(name, 3, content, "e3", None, "admin")

        async def newest(self, org: str) -> Any:
            return {Kind.CALENDAR_ITEM: 3}

    tables = MappingTables(Overrides(), DATA)  # type: ignore[arg-type]
    chosen = await tables.by_object("demo", 0)
    assert chosen["Task"][0] is Kind.TASK
    assert chosen["EmailMessage"][0] is Kind.EMAIL
    assert "Event" not in chosen
