"""What a session did, in numbers: per side, per kind, in all (the dashboard's figures)."""

from __future__ import annotations

from dataclasses import dataclass, field

from concord_reconciler.kernel.kinds import Kind


@dataclass(frozen=True)
class SideCounts:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    errors: int = 0


@dataclass(frozen=True)
class KindCounts:
    """What a session saw and did for one object kind."""

    kind: Kind  # concord.common.v1.ObjectKind
    mail_changes_seen: int = 0
    crm_changes_seen: int = 0
    mail: SideCounts = field(default_factory=SideCounts)
    crm: SideCounts = field(default_factory=SideCounts)
    conflicts: int = 0
    quarantined: int = 0
    skipped: int = 0
    guarded: bool = False


@dataclass(frozen=True)
class SessionCounts:
    mail_changes_seen: int = 0
    crm_changes_seen: int = 0
    mail: SideCounts = field(default_factory=SideCounts)
    crm: SideCounts = field(default_factory=SideCounts)
    conflicts: int = 0
    quarantined: int = 0
    guarded: int = 0
    # Items left alone on purpose: outside the window, private, of a direction not synced.
    skipped: int = 0
    kinds: tuple[KindCounts, ...] = ()
