"""Held conflicts on the wire (concord.reconciler.v1.Conflict)."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.kernel.errors import InvalidRequest
from concord_reconciler.mirror.domain.conflicts import conflict_name, held_fields
from concord_reconciler.mirror.domain.sync import Link, Side, Value

__all__ = ["conflict_to_proto", "side_from_proto"]

_SIDES: dict[int, Side] = {res.SYNC_SIDE_MAIL: Side.MAIL, res.SYNC_SIDE_CRM: Side.CRM}


def _plain(value: Value) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _value(value: Value) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    holder.update({"value": _plain(value)})
    return holder.fields["value"]


def conflict_to_proto(link: Link) -> rres.Conflict:
    held = held_fields(link)
    return rres.Conflict(
        name=conflict_name(link.mailbox_id, link.link_id),
        kind=link.kind,
        mail_ref=res.ItemRef(
            kind=link.kind,
            native_id=link.mail_id or "",
            version=link.mail_version,
            link_id=link.link_id,
        ),
        crm_record_id=link.crm_id or "",
        fields=[
            rres.ConflictField(
                field=c.field, mail_value=_value(c.mail_value), crm_value=_value(c.crm_value)
            )
            for c in held
        ],
        resolution_pending=link.resolution is not None
        and all(link.resolution.side_for(c.field) is not None for c in held),
    )


def side_from_proto(side: int, field: str) -> Side:
    found = _SIDES.get(side)
    if found is None:
        raise InvalidRequest(field, "must be SYNC_SIDE_MAIL or SYNC_SIDE_CRM")
    return found
