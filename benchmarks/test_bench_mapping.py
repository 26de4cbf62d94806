"""Mapping throughput and fidelity, printed as measured in one run (never gated on times).

- items mapped per second on one core, per object type, through the servicer (protobuf in and
  out, the default tables, recurrence conversion included), against the issue's targets
  (events >= 5,000/s, contacts and tasks >= 20,000/s);
- over the real calendars inside the icalendar and recurring-ical-events wheels, the share of
  events that round-trip mailbox -> canonical -> Salesforce -> canonical -> mailbox with no
  loss, and the share refused as unsupported with a reason (none may be silently altered).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from google.protobuf import json_format

from concord.common.v1 import resources_pb2 as res
from concord.mapping.v1 import mapping_service_pb2 as pb
from concord_mapping.adapters.packaged import table_data
from concord_mapping.api.servicer import MappingServicer
from concord_mapping.domain.model import Kind, TableName, TableVersion
from concord_mapping.domain.service import MappingTables
from services.mapping.tests.fidelity import canonical, events, measure

BATCH = 200
SECONDS = 1.5
TARGETS = {"calendar-item": 5_000, "task": 20_000, "contact": 20_000, "email": 20_000}


class NoOverrides:
    async def version(self, name: TableName, version: int) -> TableVersion | None:
        return None

    async def newest(self, org: str) -> Mapping[Kind, int]:
        return {}

    async def versions(self, name: TableName, before: int, limit: int) -> Sequence[TableVersion]:
        return []

    async def add(self, version: TableVersion) -> None:
        raise AssertionError("the benchmark stores nothing")


def _input(kind: res.ObjectKind.ValueType, **payload: Any) -> pb.MapToCrmInput:
    item = res.MailItem(ref=res.ItemRef(kind=kind, native_id="n", link_id="l"))
    json_format.ParseDict(payload, item)
    return pb.MapToCrmInput(item=item)


def real_events() -> list[pb.MapToCrmInput]:
    """The real calendars' events that map, recurring series included."""
    found = []
    for _, event in events():
        if event is None or "DTSTART" not in event:
            continue
        try:
            item = canonical(event)
        except Exception:
            continue
        found.append(_input(res.OBJECT_KIND_CALENDAR_ITEM, calendar_item=item))
    return found


def samples() -> dict[str, list[pb.MapToCrmInput]]:
    task = {
        "subject": "Send the revised quote",
        "due_date": "2026-12-01",
        "status": "TASK_STATUS_IN_PROGRESS",
        "priority": "TASK_PRIORITY_HIGH",
        "body_text": "Include the volume discount.",
        "reminder_time": "2026-11-30T08:00:00Z",
    }
    contact = {
        "given_name": "Ann",
        "family_name": "Lee",
        "email_addresses": [{"address": "ann@corp.example", "primary": True}],
        "phone_numbers": [
            {"number": "+1 555 0100", "type": "PHONE_TYPE_WORK"},
            {"number": "+1 555 0101", "type": "PHONE_TYPE_MOBILE"},
        ],
        "postal_addresses": [
            {"type": "POSTAL_ADDRESS_TYPE_WORK", "street": "1 Main St", "city": "Springfield"}
        ],
        "company": "Acme",
        "job_title": "CTO",
    }
    email = {
        "subject": "Re: pricing",
        "from_address": {"address": "ann@corp.example", "display_name": "Ann"},
        "to": [{"address": "bob@example.com"}],
        "body_text": "Hello",
        "sent_time": "2026-01-05T10:00:00Z",
        "internet_message_id": "<m1@example.com>",
    }
    return {
        "calendar-item": real_events(),
        "task": [_input(res.OBJECT_KIND_TASK, task=task)],
        "contact": [_input(res.OBJECT_KIND_CONTACT, contact=contact)],
        "email": [_input(res.OBJECT_KIND_EMAIL, email=email)],
    }


async def _rate(servicer: MappingServicer, inputs: list[pb.MapToCrmInput]) -> float:
    batch = (inputs * (BATCH // len(inputs) + 1))[:BATCH]
    request = pb.MapToCrmRequest(org="orgs/bench", inputs=batch)
    mapped = 0
    started = time.process_time()
    while time.process_time() - started < SECONDS:
        response = await servicer.MapToCrm(request, None)  # type: ignore[arg-type]
        mapped += len(response.results)
    return mapped / (time.process_time() - started)


@pytest.mark.timeout(300)
async def test_mapping_throughput_and_fidelity() -> None:
    servicer = MappingServicer(MappingTables(NoOverrides(), table_data()))
    print("\nmapping throughput, one core (CPU time), batches of 200:")
    for kind, inputs in samples().items():
        # Only items that map: refused ones return early and would flatter the rate.
        first = await servicer.MapToCrm(pb.MapToCrmRequest(org="orgs/b", inputs=inputs), None)  # type: ignore[arg-type]
        inputs = [i for i, r in zip(inputs, first.results, strict=True) if not r.HasField("error")]
        rate = await _rate(servicer, inputs)
        target = TARGETS[kind]
        print(f"  {kind:14s} {rate:10,.0f} items/s  = {rate / target:5.2f} x target {target:,}/s")
    report = measure()
    counts = report.counts
    print(
        f"fidelity on {len(report.outcomes)} real calendar events: "
        f"{report.share('exact'):.1%} round-trip with no loss, "
        f"{report.share('lossy'):.1%} with reported losses, "
        f"{report.share('unsupported'):.1%} reported unsupported, "
        f"{counts['altered']} silently altered, {counts['unreadable']} unreadable inputs"
    )
    for reason, count in report.reasons("unsupported").most_common():
        print(f"  unsupported: {reason:24s} {count}")
    assert counts["altered"] == 0
