"""Change hints out to NATS (`concord.crm.changed.<org>`, core NATS, traced) and the org leases
(KV `LEASES`) that keep one subscriber per org across crm-connector replicas."""

from __future__ import annotations

import hashlib
import logging

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.trace import SpanKind, TracerProvider

from concord.events.v1 import events_pb2
from concord_crm_connector.changes.model import CrmHint
from concord_events import EventBus, Lease, LeaseLost, crm_changed
from concord_events.bus import CONTENT_TYPE, HEADER_CONTENT_TYPE, HEADER_MESSAGE_TYPE, HEADER_MSG_ID
from concord_telemetry import attributes as attrs
from concord_telemetry import inject

__all__ = ["NatsHints", "NatsOrgLeases", "crm_changed_message"]

log = logging.getLogger(__name__)


def _org_id(org: str) -> str:
    return org.removeprefix("orgs/")


def crm_changed_message(hint: CrmHint) -> events_pb2.CrmChanged:
    message = events_pb2.CrmChanged(
        org=_org_id(hint.org),
        sobject_type=min(hint.sobject_types, default=""),
        sobject_types=sorted(hint.sobject_types),
        ids=list(hint.record_ids),
        owner_ids=sorted(hint.owner_ids),
        everyone=hint.everyone,
        reason=hint.reason,
    )
    if hint.latest_commit is not None:
        stamp = Timestamp()
        stamp.FromDatetime(hint.latest_commit)
        message.commit_time.CopyFrom(stamp)
    return message


class NatsHints:
    """`HintSink` on core NATS: a lost hint costs latency, never a change (the schedule and
    the cursors catch up), so hints are not kept on a stream."""

    def __init__(self, bus: EventBus, tracer_provider: TracerProvider | None = None) -> None:
        self._bus = bus
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    async def publish(self, hint: CrmHint) -> None:
        message = crm_changed_message(hint)
        subject = crm_changed(message.org)
        data = message.SerializeToString()
        msg_id = "crm-changed-" + hashlib.sha256(data).hexdigest()[:32]
        with self._tracer.start_as_current_span(
            f"{subject} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                attrs.MESSAGING_SYSTEM: attrs.MESSAGING_SYSTEM_NATS,
                attrs.MESSAGING_DESTINATION_NAME: subject,
                attrs.MESSAGING_OPERATION_TYPE: "publish",
                attrs.MESSAGING_OPERATION_NAME: "publish",
                attrs.MESSAGING_MESSAGE_BODY_SIZE: len(data),
                attrs.MESSAGING_MESSAGE_ID: msg_id,
            },
        ):
            headers = {
                HEADER_CONTENT_TYPE: CONTENT_TYPE,
                HEADER_MESSAGE_TYPE: message.DESCRIPTOR.full_name,
                HEADER_MSG_ID: msg_id,
            }
            inject(headers)
            await self._bus.client.publish(subject, data, headers=headers)


class NatsOrgLeases:
    """`OrgLeases` on the KV bucket LEASES (`change-streams.<org>`), renewed at each rescan."""

    def __init__(self, bus: EventBus, owner: str) -> None:
        self._bus = bus
        self._owner = owner
        self._held: dict[str, Lease] = {}

    async def hold(self, org: str) -> bool:
        held = self._held.get(org)
        if held is not None:
            try:
                await held.renew()
                return True
            except LeaseLost:
                del self._held[org]
        leases = await self._bus.leases()
        # Reclaimed: a replica restarted under its own name resumes its orgs' streams at once.
        lease = await leases.acquire(f"change-streams.{_org_id(org)}", self._owner, reclaim=True)
        if lease is None:
            return False
        self._held[org] = lease
        return True

    async def release(self, org: str) -> None:
        lease = self._held.pop(org, None)
        if lease is not None:
            try:
                await lease.release()
            except Exception:
                log.debug("lease of %s not released", org, exc_info=True)
