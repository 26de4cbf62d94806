"""What `concord` prints: aligned tables for people, JSON (protobuf's JSON mapping) for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from concord.common.v1 import resources_pb2 as res
from concord.gateway.v1 import gateway_service_pb2 as gw
from concord.reconciler.v1 import resources_pb2 as rres

__all__ = [
    "Progress",
    "ServiceHealth",
    "change_stream_line",
    "conflicts_table",
    "dashboard",
    "dumps",
    "item_errors_table",
    "mailboxes_table",
    "message_dict",
    "org_health_block",
    "overview_table",
    "session_block",
    "sessions_table",
    "settings_block",
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


def state(session: rres.Session) -> str:
    return _enum(session.state, rres.SessionState, "SESSION_STATE_")


def _when(stamp: timestamp_pb2.Timestamp, present: bool) -> str:
    if not present:
        return _NONE
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(session: rres.Session, now: datetime | None = None) -> str:
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


def _side(counts: rres.SideCounts) -> str:
    return (
        f"created {counts.created}, updated {counts.updated}, deleted {counts.deleted}, "
        f"errors {counts.errors}"
    )


def _failure(session: rres.Session) -> str:
    if not session.failure_reason:
        return ""
    code = f" ({session.failure_code})" if session.failure_code else ""
    return session.failure_reason + code


def session_block(session: rres.Session, *, timed_out: bool = False) -> str:
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


def sessions_table(sessions: Sequence[rres.Session]) -> str:
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


def mailboxes_table(mailboxes: Sequence[rres.Mailbox]) -> str:
    rows = [
        (
            m.mailbox_id or m.name.removeprefix("mailboxes/"),
            m.org.removeprefix("orgs/"),
            m.owner_user_id,
            _enum(m.provider, res.MailProvider, "MAIL_PROVIDER_"),
            _mailbox_state(m),
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


def _mailbox_state(m: rres.Mailbox) -> str:
    reason = f" ({m.suspended_reason})" if m.suspended_reason else ""
    return _enum(m.state, rres.MailboxState, "MAILBOX_STATE_") + reason


def item_errors_table(errors: Sequence[rres.ItemError]) -> str:
    rows = [
        (
            e.name.rsplit("/", 1)[-1],
            _enum(e.ref.kind, res.ObjectKind, "OBJECT_KIND_"),
            _enum(e.side, res.SyncSide, "SYNC_SIDE_"),
            e.reason or _NONE,
            str(e.attempts),
            "yes" if e.quarantined else "no",
            _when(e.last_seen_time, e.HasField("last_seen_time")),
            e.message or _NONE,
        )
        for e in errors
    ]
    headers = ("ITEM", "KIND", "SIDE", "REASON", "ATTEMPTS", "QUARANTINED", "LAST SEEN", "MESSAGE")
    return table(headers, rows)


def _shown(value: struct_pb2.Value) -> str:
    if value.WhichOneof("kind") in (None, "null_value"):
        return _NONE
    if value.WhichOneof("kind") == "string_value":
        return value.string_value
    return json.dumps(json_format.MessageToDict(value), ensure_ascii=False)


def conflicts_table(conflicts: Sequence[rres.Conflict]) -> str:
    """One row per field in conflict, both values side by side."""
    rows = [
        (
            c.name.rsplit("/", 1)[-1],
            _enum(c.kind, res.ObjectKind, "OBJECT_KIND_"),
            f.field,
            _shown(f.mail_value),
            _shown(f.crm_value),
            "yes" if c.resolution_pending else "no",
        )
        for c in conflicts
        for f in c.fields
    ]
    headers = ("CONFLICT", "KIND", "FIELD", "MAILBOX VALUE", "SALESFORCE VALUE", "RESOLVED")
    return table(headers, rows)


def dashboard(status: gw.MailboxStatus) -> str:
    """One mailbox: its state and schedule, last sessions, items in error."""
    m = status.mailbox
    rows = [
        ("mailbox", m.mailbox_id or m.name.removeprefix("mailboxes/")),
        ("owner", m.owner_user_id or _NONE),
        ("state", _mailbox_state(m)),
        ("push", _enum(status.push_state, res.PushState, "PUSH_STATE_")),
        ("next sync", _when(status.next_sync_time, status.HasField("next_sync_time"))),
        ("item errors", str(status.item_error_count)),
    ]
    width = max(len(key) for key, _ in rows)
    parts = ["\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)]
    parts.append("\nlast sessions\n" + sessions_table(status.recent_sessions))
    if status.item_errors:
        parts.append("\nitems in error\n" + item_errors_table(status.item_errors))
    return "\n".join(parts)


def _setting_value(message: Message, field: Any) -> list[str]:
    """A field as people read and `settings set` takes it: lines (several for a list of
    messages such as `sharing`), `-` when unset."""
    value = getattr(message, field.name)
    if field.is_repeated:
        items = list(value)
        if field.message_type is not None:
            return [_pairs(item) for item in items] or [_NONE]
        return [", ".join(_scalar(field, v) for v in items) or _NONE]
    if field.message_type is not None:
        if not message.HasField(field.name):
            return [_NONE]
        if field.message_type.full_name == "google.protobuf.Duration":
            return [_seconds(value.ToTimedelta().total_seconds())]
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return [_when(value, True)]
        return [_pairs(value)]
    return [_scalar(field, value) if value != "" else _NONE]


def _scalar(field: Any, value: Any) -> str:
    if field.enum_type is not None:
        # As `settings set` takes them: crm_wins, not CONFLICT_POLICY_CRM_WINS.
        prefix = enum_prefix([v.name for v in field.enum_type.values])
        return str(field.enum_type.values_by_number[value].name).removeprefix(prefix).lower()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pairs(message: Message) -> str:
    """`key=value` for each field that is set, e.g. `kind=task enabled=true direction=two_way`."""
    parts = []
    for field in message.DESCRIPTOR.fields:
        lines = _setting_value(message, field)
        # Booleans stay even when false: `enabled=false` is the point of a sharing entry.
        if lines != [_NONE] and not lines[0].endswith("unspecified"):
            parts.append(f"{field.name}={'+'.join(lines).replace(', ', '+')}")
    return " ".join(parts) or _NONE


def _seconds(total: float) -> str:
    """The largest unit that divides it: 30d, 15m, 90s (what `settings set` takes back)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{int(total // size)}{unit}"
    return f"{total:g}s"


def enum_prefix(names: Sequence[str]) -> str:
    """What every value name of an enum starts with, up to a `_`: `CONFLICT_POLICY_`."""
    if not names:
        return ""
    first, last = min(names), max(names)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[: first.rfind("_", 0, size + 1) + 1] if size else ""


def settings_block(settings: Message) -> str:
    """Every field as `name  value`; locked ones marked (user settings carry locked_fields)."""
    locked = set(getattr(settings, "locked_fields", ()))
    rows: list[tuple[str, str]] = []
    for field in settings.DESCRIPTOR.fields:
        if field.name in ("locked_fields", "etag"):
            continue
        if field.name == "settings_access_disabled" and not getattr(settings, field.name):
            # Only an admin ever reads it set (the owner is refused), so it is news only then.
            continue
        lines = _setting_value(settings, field)
        lines[0] += "  (locked by the org)" if field.name in locked else ""
        rows.append((field.name, lines[0]))
        rows.extend(("", line) for line in lines[1:])
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


class Progress:
    """`sync --wait`'s live display: one line each time the session changes state."""

    def __init__(self, out: Callable[[str], None] | None) -> None:
        self._out = out
        self._last: int | None = None

    def show(self, session: rres.Session, *, coalesced: bool = False) -> None:
        if self._out is None or session.state == self._last:
            return
        self._last = session.state
        note = " (joined a session already queued)" if coalesced else ""
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self._out(f"{stamp}  {session.session_id}  {state(session)}{note}")


def org_health_block(health: rres.OrgHealth) -> str:
    """An org's condition: state and why, mailboxes by state, failures, Salesforce API budget,
    and the change stream that brings Salesforce edits in seconds."""
    budget = health.budget
    by_state = ", ".join(
        f"{_enum(c.state, rres.MailboxState, 'MAILBOX_STATE_')} {c.count}" for c in health.mailboxes
    )
    rows = [
        ("org", health.org.removeprefix("orgs/")),
        ("state", _enum(health.state, rres.HealthState, "HEALTH_STATE_")),
        ("reasons", "; ".join(health.reasons) or _NONE),
        ("mailboxes", by_state or _NONE),
        ("failed sessions (24h)", str(health.failed_sessions_24h)),
        ("quarantined items", str(health.quarantined_items)),
    ]
    if health.HasField("budget"):
        share = f"{budget.concord_share:.0%}"
        rows.append(
            (
                "api budget",
                f"{budget.used} of {budget.limit} used; Concord {budget.concord_used} "
                f"(allowed {share})",
            )
        )
    if health.HasField("change_stream"):
        rows.append(("change stream", change_stream_line(health.change_stream)))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def change_stream_line(stream: res.ChangeStream) -> str:
    """`streaming, 0.4 s behind (last change 2026-12-05 09:00:01Z)`, or the state and why."""
    line = _enum(stream.state, res.ChangeStreamState, "CHANGE_STREAM_STATE_")
    if stream.state == res.CHANGE_STREAM_STATE_STREAMING and stream.HasField("lag"):
        line += f", {stream.lag.ToTimedelta().total_seconds():.1f} s behind"
    if stream.reason:
        line += f": {stream.reason}"
    if stream.HasField("last_commit_time"):
        line += f" (last change {_when(stream.last_commit_time, True)})"
    if stream.HasField("resync_time"):
        line += f"; every mailbox synced {_when(stream.resync_time, True)}: {stream.resync_reason}"
    return line


def overview_table(statuses: Sequence[gw.MailboxStatus]) -> str:
    """One line per mailbox: state, last session, items in error and the latest reason."""
    rows = []
    for st in statuses:
        m = st.mailbox
        last = st.recent_sessions[0] if st.recent_sessions else None
        latest = st.item_errors[0] if st.item_errors else None
        rows.append(
            (
                m.mailbox_id or m.name.removeprefix("mailboxes/"),
                _mailbox_state(m),
                f"{state(last)} {_when(last.request_time, last.HasField('request_time'))}"
                if last
                else _NONE,
                str(st.item_error_count),
                f"{latest.reason}: {latest.message}" if latest else _NONE,
            )
        )
    return table(("MAILBOX", "STATE", "LAST SESSION", "ITEM ERRORS", "LATEST ERROR"), rows)
