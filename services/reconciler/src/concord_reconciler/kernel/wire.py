"""Times (google.protobuf.Timestamp) and reasons on the wire, for every room's messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


# A reason shown to people (a suspension's, a session's failure) is cut to this many characters
# on the way out. The API's limits keep new ones far shorter; this bounds what was stored
# before them: one 20 MiB suspension reason made every later status read of its org fail
# (`Received message larger than max`), and the session it cancelled repeated it.
REASON_SHOWN = 4_000


def shown_reason(reason: str) -> str:
    if len(reason) <= REASON_SHOWN:
        return reason
    return reason[: REASON_SHOWN - 1] + "\u2026"
