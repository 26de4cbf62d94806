"""What `concord` prints: aligned tables for people, JSON (protobuf's JSON mapping) for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from concord.common.v1 import resources_pb2 as res

__all__ = [
    "ServiceHealth",
    "dumps",
    "mailboxes_table",
    "message_dict",
    "session_block",
    "sessions_table",
    "status_table",
    "table",
]

_NONE = "-"


def message_dict(message: Message) -> dict[str, Any]:
    # Every field, defaults included, so scripts can rely on keys being there.
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    lines = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _enum(value: int, enum: Any, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)


def state(session: res.Session) -> str:
    return _enum(session.state, res.SessionState, "SESSION_STATE_")


def _when(stamp: timestamp_pb2.Timestamp, present: bool) -> str:
    if not present:
        return _NONE
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(session: res.Session, now: datetime | None = None) -> str:
    if not session.HasField("start_time"):
        return _NONE
    start = session.start_time.ToDatetime(tzinfo=UTC)
    if session.HasField("end_time"):
        end = session.end_time.ToDatetime(tzinfo=UTC)
    else:
        end = now or datetime.now(UTC)
    seconds = max((end - start).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _side(counts: res.SideCounts) -> str:
    return (
        f"created {counts.created}, updated {counts.updated}, deleted {counts.deleted}, "
        f"errors {counts.errors}"
    )


def _failure(session: res.Session) -> str:
    if not session.failure_reason:
        return ""
    code = f" ({session.failure_code})" if session.failure_code else ""
    return session.failure_reason + code


def session_block(session: res.Session, *, timed_out: bool = False) -> str:
    """One session as `key  value` lines."""
    counts = session.counts
    rows = [
        ("session", session.session_id or session.name),
        ("mailbox", session.mailbox),
        ("state", state(session) + ("  (still running: the wait timed out)" if timed_out else "")),
        ("trigger", _enum(session.trigger, res.SessionTrigger, "SESSION_TRIGGER_")),
        ("requested", _when(session.request_time, session.HasField("request_time"))),
        ("duration", duration(session)),
        ("changes", f"mail {counts.mail_changes_seen}, crm {counts.crm_changes_seen}"),
        ("mail writes", _side(counts.mail)),
        ("crm writes", _side(counts.crm)),
        (
            "other",
            f"conflicts {counts.conflicts}, quarantined {counts.quarantined}, "
            f"guarded {counts.guarded}",
        ),
    ]
    if session.failure_reason:
        rows.append(("failure", _failure(session)))
    if session.trace_id:
        rows.append(("trace", session.trace_id))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def sessions_table(sessions: Sequence[res.Session]) -> str:
    rows = [
        (
            s.session_id or s.name.rsplit("/", 1)[-1],
            state(s),
            _enum(s.trigger, res.SessionTrigger, "SESSION_TRIGGER_"),
            _when(s.request_time, s.HasField("request_time")),
            duration(s),
            str(s.counts.mail_changes_seen),
            str(s.counts.crm_changes_seen),
            str(s.counts.mail.errors + s.counts.crm.errors),
            _failure(s) or _NONE,
        )
        for s in sessions
    ]
    headers = (
        "SESSION",
        "STATE",
        "TRIGGER",
        "REQUESTED",
        "DURATION",
        "MAIL",
        "CRM",
        "ERRORS",
        "FAILURE",
    )
    return table(headers, rows)


def mailboxes_table(mailboxes: Sequence[res.Mailbox]) -> str:
    rows = [
        (
            m.mailbox_id or m.name.removeprefix("mailboxes/"),
            m.org.removeprefix("orgs/"),
            m.owner_user_id,
            _enum(m.provider, res.MailProvider, "MAIL_PROVIDER_"),
            _enum(m.state, res.MailboxState, "MAILBOX_STATE_")
            + (f" ({m.suspended_reason})" if m.suspended_reason else ""),
            _when(m.next_sync_time, m.HasField("next_sync_time")),
        )
        for m in mailboxes
    ]
    return table(("MAILBOX", "ORG", "OWNER", "PROVIDER", "STATE", "NEXT SYNC"), rows)


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    address: str
    status: str  # SERVING, NOT_SERVING, UNKNOWN, UNREACHABLE; for NATS: REACHABLE, UNREACHABLE

    @property
    def ok(self) -> bool:
        return self.status in ("SERVING", "REACHABLE")


def status_table(checks: Sequence[ServiceHealth]) -> str:
    return table(("SERVICE", "ADDRESS", "STATUS"), [(c.name, c.address, c.status) for c in checks])
