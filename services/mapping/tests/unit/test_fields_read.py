"""What a table reads of a Salesforce record: a listing that selects only those fields must map
as one that selects every field of the describe (issue #18: a first sync's pages carried the
whole describe, most of it never read)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord_mapping.adapters.packaged import table_data
from concord_mapping.domain.describe import FieldDescribe
from concord_mapping.domain.errors import MappingFailure
from concord_mapping.domain.mapper import MappedFields, crm_fields_read, map_to_mail
from concord_mapping.domain.model import Kind
from concord_mapping.domain.table import Table

pytestmark = pytest.mark.unit

DATA = table_data()
MAPPED_BACK = [k for k in Kind if DATA.defaults[k].direction.to_mail]


class Recorded(Mapping[str, Any]):
    """A record that remembers every field name the mapping looked at."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = dict(fields)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._fields[key]

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return key in self._fields

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self._fields.get(key, default)

    def __iter__(self) -> Iterator[str]:
        # Reading the whole record would read fields no list names.
        self.read.add("*")
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


def _value(found: FieldDescribe | None) -> st.SearchStrategy[Any]:
    kind = found.type if found else "string"
    if kind == "boolean":
        return st.booleans()
    if kind == "datetime":
        return st.sampled_from(
            ["2026-03-08T14:00:00.000+0000", "2026-03-09T00:00:00.000+0000", "2025-12-31T23:30:00Z"]
        )
    if kind == "date":
        return st.sampled_from(["2026-03-08", "2026-03-09", "2027-01-31"])
    if kind in ("int", "double"):
        return st.integers(0, 127)
    if found is not None and found.picklist_values:
        return st.sampled_from(found.picklist_values)
    name = found.name if found is not None else ""
    if name.endswith("TimeZoneSidKey") or name.endswith("PatternTimeZone"):
        return st.sampled_from(["Europe/London", "America/New_York", "Nowhere/Else"])
    if name == "Recurrence2PatternText":
        return st.sampled_from(["RRULE:FREQ=WEEKLY;BYDAY=MO", "RRULE:FREQ=DAILY;COUNT=3", "bad"])
    return st.text(max_size=8)


@st.composite
def records(draw: st.DrawFn) -> tuple[Table, dict[str, Any]]:
    kind = draw(st.sampled_from(MAPPED_BACK))
    table = DATA.defaults[kind]
    describe = DATA.describes[table.target_sobject]
    names = sorted(set(describe.fields) | set(crm_fields_read(table)))
    fields: dict[str, Any] = {}
    for name in names:
        if draw(st.booleans()):
            fields[name] = draw(st.none() | _value(describe.field(name)))
    return table, fields


def _mapped(table: Table, fields: Mapping[str, Any]) -> MappedFields | tuple[str, str]:
    describe = DATA.describes[table.target_sobject]
    try:
        return map_to_mail(table, describe, fields, "Europe/Paris")
    except MappingFailure as failure:
        return failure.reason, failure.message


@settings(max_examples=400, deadline=None)
@given(records())
def test_a_record_listed_with_the_fields_a_table_reads_maps_as_one_listed_in_full(
    case: tuple[Table, dict[str, Any]],
) -> None:
    table, fields = case
    named = set(crm_fields_read(table))
    recorded = Recorded(fields)
    full = _mapped(table, recorded)
    # `concord.*` keys are Concord's own (a path through `concord` when absent).
    assert {n for n in recorded.read if n.split(".")[0] != "concord"} - named == set()
    listed = {name: value for name, value in fields.items() if name in named}
    assert _mapped(table, listed) == full


def test_the_default_tables_read_a_fraction_of_the_describe() -> None:
    event = crm_fields_read(DATA.defaults[Kind.CALENDAR_ITEM])
    assert {"Subject", "StartDateTime", "IsAllDayEvent", "RecurrenceType"} <= set(event)
    assert "WhoId" not in event
    assert "OwnerId" not in event
    assert not any(name.startswith("concord.") for name in event)
    contact = crm_fields_read(DATA.defaults[Kind.CONTACT])
    assert {"MobilePhone", "MailingCity", "OtherPostalCode"} <= set(contact)
    # A table that never maps back (emails are shared one way) reads nothing.
    one_way = [k for k in Kind if k not in MAPPED_BACK]
    assert one_way
    assert all(crm_fields_read(DATA.defaults[k]) == [] for k in one_way)
