"""A change event's payload, whatever bytes arrive: read as a change event, or refused as
unreadable (ValueError, which the stream turns into a resync of the org) — never another error
that would fail the stream and meet the same event again at every retry."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from eventbus.v1 import pubsub_api_pb2 as pb
from hypothesis import given
from hypothesis import strategies as st

from concord_crm_connector.adapters.pubsub import decode_event

pytestmark = pytest.mark.unit

# The shape of Salesforce's `EventChangeEvent` schema, cut to the fields Concord reads.
SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "EventChangeEvent",
        "namespace": "com.sforce.eventbus",
        "fields": [
            {
                "name": "ChangeEventHeader",
                "type": {
                    "type": "record",
                    "name": "ChangeEventHeader",
                    "fields": [
                        {"name": "entityName", "type": "string"},
                        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
                        {"name": "changeType", "type": "string"},
                        {"name": "changeOrigin", "type": "string"},
                        {"name": "commitTimestamp", "type": "long"},
                    ],
                },
            },
            {"name": "OwnerId", "type": ["null", "string"], "default": None},
        ],
    }
)
CHANNEL = "/data/EventChangeEvent"


def _payload(record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, SCHEMA, record)
    return buffer.getvalue()


def _event(payload: bytes) -> pb.ConsumerEvent:
    return pb.ConsumerEvent(event=pb.ProducerEvent(payload=payload), replay_id=b"\x01")


GOOD = _payload(
    {
        "ChangeEventHeader": {
            "entityName": "Event",
            "recordIds": ["00U000000000001AAA"],
            "changeType": "UPDATE",
            "changeOrigin": "com/salesforce/api/rest/60.0",
            "commitTimestamp": 1_764_900_000_000,
        },
        "OwnerId": "005000000000001AAA",
    }
)


def test_a_well_formed_payload_reads_as_its_header_and_owner() -> None:
    event = decode_event(CHANNEL, _event(GOOD), SCHEMA)
    assert (event.entity, event.change_type, event.record_ids, event.owner_id) == (
        "Event",
        "UPDATE",
        ("00U000000000001AAA",),
        "005000000000001AAA",
    )
    assert event.commit_time is not None


@given(
    cut=st.integers(min_value=0, max_value=len(GOOD) - 1),
    flips=st.lists(
        st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=0, max_size=6
    ),
    tail=st.binary(max_size=16),
)
def test_a_broken_payload_is_read_or_refused_as_unreadable(
    cut: int, flips: list[tuple[int, int]], tail: bytes
) -> None:
    broken = bytearray(GOOD)
    for at, value in flips:
        broken[at] = value
    _read_or_refused(bytes(broken[:cut]) + tail)


@given(st.binary(max_size=64))
def test_any_bytes_are_read_or_refused_as_unreadable(payload: bytes) -> None:
    _read_or_refused(payload)


def _read_or_refused(payload: bytes) -> None:
    """Read (the event keeps its replay id), or refused with ValueError saying so; any other
    exception fails the test."""
    refused = ""
    try:
        event = decode_event(CHANNEL, _event(payload), SCHEMA)
    except ValueError as error:
        refused = str(error)
    if refused:
        assert refused.startswith("unreadable change event payload (")
    else:
        assert event.replay_id == b"\x01"
