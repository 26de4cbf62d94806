"""Push hints out to NATS: `MailChanged` on `concord.mail.changed.<mailbox>`, core NATS.

A hint is not kept on a stream (libs/events: a lost hint costs latency only, the schedule catches
up), but it carries `Nats-Msg-Id` so that a JetStream stream put over the subject later, or two
replicas watching one mailbox, collapse repeats within a coalescing window.
"""

from __future__ import annotations

import asyncio
import logging

import nats
import nats.errors
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.trace import SpanKind, TracerProvider

from concord.common.v1 import resources_pb2 as r
from concord.events.v1 import events_pb2
from concord_events import mail_changed, servers
from concord_events.bus import CONTENT_TYPE, HEADER_CONTENT_TYPE, HEADER_MESSAGE_TYPE, HEADER_MSG_ID
from concord_mail_connector.domain.model import Kind
from concord_mail_connector.domain.push import MailChangedNote
from concord_telemetry import attributes as attrs
from concord_telemetry import inject

__all__ = ["NatsChangePublisher", "connect", "mail_changed_message"]

_log = logging.getLogger(__name__)

_KINDS = {
    Kind.CALENDAR_ITEM: r.OBJECT_KIND_CALENDAR_ITEM,
    Kind.TASK: r.OBJECT_KIND_TASK,
    Kind.CONTACT: r.OBJECT_KIND_CONTACT,
    Kind.EMAIL: r.OBJECT_KIND_EMAIL,
}


def mail_changed_message(note: MailChangedNote) -> events_pb2.MailChanged:
    """`kind` is set when one kind changed, unspecified when several did or any may have (a poll,
    a catch-up after a lost subscription); `hint` names the sources and, with several kinds,
    lists them. Never anything of the items themselves."""
    stamp = Timestamp()
    stamp.FromDatetime(note.time)
    kinds = sorted(note.kinds)
    hint = note.hint
    if len(kinds) > 1:
        hint += ";kinds=" + ",".join(kinds)
    return events_pb2.MailChanged(
        mailbox=note.mailbox,
        kind=_KINDS[kinds[0]] if len(kinds) == 1 else r.OBJECT_KIND_UNSPECIFIED,
        hint=hint,
        notify_time=stamp,
    )


class NatsChangePublisher:
    """Publishes on `client`, given now or attached once connected."""

    def __init__(
        self, client: Client | None = None, tracer_provider: TracerProvider | None = None
    ) -> None:
        self._client = client
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    def attach(self, client: Client) -> None:
        self._client = client

    async def close(self) -> None:
        """Flush what is pending, then disconnect."""
        if self._client is not None and not self._client.is_closed:
            await self._client.drain()

    async def publish(self, note: MailChangedNote) -> None:
        if self._client is None:
            raise ConnectionError("not connected to NATS yet")
        subject = mail_changed(note.mailbox)
        message = mail_changed_message(note)
        data = message.SerializeToString()
        msg_id = f"mail-changed-{note.mailbox}-{note.dedupe_key}"
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
            await self._client.publish(subject, data, headers=headers)


async def connect(url: str, name: str, *, retry_seconds: float = 2.0) -> Client:
    """A NATS connection, waiting for the server as long as it takes: push is a hint, so the
    service serves syncs meanwhile, and later drops reconnect on their own."""
    while True:
        try:
            return await nats.connect(
                servers(url), name=name, max_reconnect_attempts=-1, reconnect_time_wait=1
            )
        except (OSError, nats.errors.Error) as exc:
            _log.warning(
                "push: NATS not reachable yet (%s); again in %.0fs",
                type(exc).__name__,
                retry_seconds,
            )
            await asyncio.sleep(retry_seconds)
