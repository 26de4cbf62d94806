"""The generated library matches protos/ and is usable as typed code."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2

import concord
from concord.common.v1 import resources_pb2
from concord.reconciler.v1 import reconciler_service_pb2, reconciler_service_pb2_grpc
from concord.reconciler.v1 import resources_pb2 as rres

pytestmark = pytest.mark.unit

PROTOS = Path(__file__).resolve().parents[3] / "protos"
PROTO_FILES = sorted(PROTOS.rglob("*.proto"))


def _module_for(proto: Path, suffix: str) -> ModuleType:
    relative = proto.relative_to(PROTOS).with_suffix("")
    return importlib.import_module(".".join(relative.parts) + suffix)


def test_every_generated_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(concord.__path__, "concord.")]
    assert any(name.endswith("_pb2_grpc") for name in names)
    for name in names:
        importlib.import_module(name)


@pytest.mark.parametrize("proto", PROTO_FILES, ids=lambda p: p.relative_to(PROTOS).as_posix())
def test_every_proto_file_is_generated(proto: Path) -> None:
    module = _module_for(proto, "_pb2")
    assert module.DESCRIPTOR.name == proto.relative_to(PROTOS).as_posix()
    declared = set(re.findall(r"^service (\w+) \{", proto.read_text(), re.MULTILINE))
    assert set(module.DESCRIPTOR.services_by_name) == declared
    if declared:
        grpc_module = _module_for(proto, "_pb2_grpc")
        for service in declared:
            assert hasattr(grpc_module, f"{service}Stub")
            assert hasattr(grpc_module, f"{service}Servicer")
            assert hasattr(grpc_module, f"add_{service}Servicer_to_server")


def test_every_service_file_declares_one_service() -> None:
    service_files = [p for p in PROTO_FILES if p.name.endswith("_service.proto")]
    assert len(service_files) == 6
    for proto in service_files:
        assert len(re.findall(r"^service ", proto.read_text(), re.MULTILINE)) == 1


def test_mail_item_round_trips_with_its_payload() -> None:
    start = timestamp_pb2.Timestamp(seconds=1_767_261_600)
    item = resources_pb2.MailItem(
        ref=resources_pb2.ItemRef(
            kind=resources_pb2.OBJECT_KIND_CALENDAR_ITEM,
            native_id="AAMk=",
            version="CQAAABYAAA",
            link_id="8c3e2d3a-7f0e-4c7a-9a55-0f9f7f1c6d21",
        ),
        calendar_item=resources_pb2.CalendarItem(
            subject="Quarterly review",
            start=start,
            time_zone="Europe/Paris",
            reminder_minutes=0,
            attendees=[
                resources_pb2.Attendee(
                    email="ann@example.com",
                    role=resources_pb2.ATTENDEE_ROLE_REQUIRED,
                    response_status=resources_pb2.RESPONSE_STATUS_ACCEPTED,
                )
            ],
            recurrence=resources_pb2.Recurrence(rules=["RRULE:FREQ=WEEKLY;BYDAY=MO"]),
        ),
    )

    decoded = resources_pb2.MailItem.FromString(item.SerializeToString())

    assert decoded == item
    assert decoded.WhichOneof("payload") == "calendar_item"
    # Explicit presence: a reminder at start (0) differs from no reminder.
    assert decoded.calendar_item.HasField("reminder_minutes")
    assert not resources_pb2.CalendarItem().HasField("reminder_minutes")


def test_crm_record_fields_keep_json_values() -> None:
    fields = struct_pb2.Struct()
    fields.update({"Subject": "Call", "DurationInMinutes": 30, "IsPrivate": False})
    record = resources_pb2.CrmRecord(sobject_type="Event", fields=fields, link_id="l-1")

    decoded = json_format.Parse(json_format.MessageToJson(record), resources_pb2.CrmRecord())

    assert decoded == record
    assert decoded.fields["DurationInMinutes"] == 30


class _Reconciler(reconciler_service_pb2_grpc.ReconcilerServiceServicer):
    async def GetSession(
        self,
        request: reconciler_service_pb2.GetSessionRequest,
        context: Any,
    ) -> reconciler_service_pb2.GetSessionResponse:
        return reconciler_service_pb2.GetSessionResponse(
            session=rres.Session(name=request.name, state=rres.SESSION_STATE_COMPLETED)
        )


def test_servicer_base_is_typed_for_asyncio() -> None:
    request = reconciler_service_pb2.GetSessionRequest(name="mailboxes/demo/sessions/s1")

    response = asyncio.run(_Reconciler().GetSession(request, cast(Any, None)))

    assert response.session.name == "mailboxes/demo/sessions/s1"
    assert response.session.state == rres.SESSION_STATE_COMPLETED
