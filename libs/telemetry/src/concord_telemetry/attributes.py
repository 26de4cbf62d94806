"""Every span and log attribute name Concord sets, in one place.

Dashboards and tests match on these strings; defining them once keeps a rename from silently
splitting one attribute into two.
"""

from __future__ import annotations

from typing import Final

# Concord's own attributes. Only identifiers: never addresses, subjects or bodies.
MAILBOX: Final = "concord.mailbox"
SESSION_ID: Final = "concord.session.id"
SESSION_TRIGGER: Final = "concord.session.trigger"
ORG: Final = "concord.org"
ATTEMPT: Final = "concord.attempt"
OUTCOME: Final = "concord.outcome"
LEASE_KEY: Final = "concord.lease.key"

# OpenTelemetry messaging semantic conventions, as used for NATS JetStream.
MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_SYSTEM_NATS: Final = "nats"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_MESSAGE_BODY_SIZE: Final = "messaging.message.body.size"
MESSAGING_CONSUMER_GROUP_NAME: Final = "messaging.consumer.group.name"
MESSAGING_DELIVERY_COUNT: Final = "messaging.nats.message.delivery_count"
MESSAGING_STREAM_NAME: Final = "messaging.nats.stream.name"
