"""Restriction evaluation, field order and update semantics on item XML, without a server."""

from __future__ import annotations

import pytest
from lxml import etree

from concord_exchange_emulator import items as it
from concord_exchange_emulator.schema import field_order
from concord_exchange_emulator.xmlns import T

pytestmark = pytest.mark.unit

ITEM = f"""<t:CalendarItem xmlns:t="{T}">
  <t:Subject>Review</t:Subject>
  <t:Categories><t:String>Salesforce</t:String><t:String>Team</t:String></t:Categories>
  <t:Start>2030-01-01T09:00:00Z</t:Start>
  <t:End>2030-01-01T10:00:00+01:00</t:End>
  <t:IsAllDayEvent>true</t:IsAllDayEvent>
</t:CalendarItem>"""


def _restriction(xml: str) -> etree._Element:
    return etree.fromstring(f'<t:R xmlns:t="{T}">{xml}</t:R>')[0]


def _eq(uri: str, value: str, op: str = "IsEqualTo") -> str:
    return (
        f'<t:{op}><t:FieldURI FieldURI="{uri}"/>'
        f'<t:FieldURIOrConstant><t:Constant Value="{value}"/></t:FieldURIOrConstant></t:{op}>'
    )


@pytest.mark.parametrize(
    ("restriction", "expected"),
    [
        (_eq("item:Subject", "review"), True),
        (_eq("item:Subject", "Other"), False),
        (_eq("calendar:Start", "2030-01-01T08:00:00Z", "IsGreaterThan"), True),
        (_eq("calendar:Start", "2030-01-01T10:00:00+01:00", "IsGreaterThanOrEqualTo"), True),
        (_eq("calendar:End", "2030-01-01T09:00:00Z", "IsLessThanOrEqualTo"), True),
        (_eq("calendar:End", "2030-01-01T08:59:00Z", "IsLessThanOrEqualTo"), False),
        (_eq("item:Categories", "team"), True),
        (_eq("calendar:IsAllDayEvent", "1"), True),
        (_eq("calendar:IsAllDayEvent", "false"), False),
        (_eq("item:Categories", "Salesforce", "IsNotEqualTo"), False),
        (
            '<t:Contains ContainmentMode="FullString" ContainmentComparison="IgnoreCase">'
            '<t:FieldURI FieldURI="item:Categories"/><t:Constant Value="salesforce"/></t:Contains>',
            True,
        ),
        (
            '<t:Contains ContainmentMode="Substring" ContainmentComparison="Exact">'
            '<t:FieldURI FieldURI="item:Subject"/><t:Constant Value="view"/></t:Contains>',
            True,
        ),
        ('<t:Exists><t:FieldURI FieldURI="calendar:Location"/></t:Exists>', False),
        (f"<t:Not>{_eq('item:Subject', 'Review')}</t:Not>", False),
        (f"<t:Or>{_eq('item:Subject', 'x')}{_eq('item:Subject', 'Review')}</t:Or>", True),
        (f"<t:And>{_eq('item:Subject', 'x')}{_eq('item:Subject', 'Review')}</t:And>", False),
    ],
)
def test_restrictions(restriction: str, expected: bool) -> None:
    assert it.matches(etree.fromstring(ITEM), _restriction(restriction)) is expected


def test_an_operand_other_than_a_constant_is_refused() -> None:
    restriction = _restriction(
        '<t:IsEqualTo><t:FieldURI FieldURI="item:Subject"/>'
        '<t:FieldURIOrConstant><t:FieldURI FieldURI="item:Body"/></t:FieldURIOrConstant>'
        "</t:IsEqualTo>"
    )
    with pytest.raises(it.QueryNotSupported) as caught:
        it.matches(etree.fromstring(ITEM), restriction)
    assert caught.value.code == "ErrorUnsupportedQueryFilter"


def test_children_are_put_in_schema_order_and_booleans_normalised() -> None:
    item = it.sort_children(etree.fromstring(ITEM.replace(">true<", ">1<")))
    names = [etree.QName(c).localname for c in item if isinstance(c.tag, str)]
    order = field_order("CalendarItemType")
    assert names == sorted(names, key=order.index)
    assert item.findtext(f"{{{T}}}IsAllDayEvent") == "true"


def test_set_and_delete_item_field() -> None:
    item = etree.fromstring(ITEM)
    updates = etree.fromstring(
        f'<t:Updates xmlns:t="{T}">'
        '<t:SetItemField><t:FieldURI FieldURI="calendar:Location"/>'
        "<t:CalendarItem><t:Location>Berlin</t:Location></t:CalendarItem></t:SetItemField>"
        '<t:DeleteItemField><t:FieldURI FieldURI="item:Categories"/></t:DeleteItemField>'
        "</t:Updates>"
    )
    assert it.apply_updates(item, updates) == {"Location", "Categories"}
    assert item.findtext(f"{{{T}}}Location") == "Berlin"
    assert item.find(f"{{{T}}}Categories") is None
