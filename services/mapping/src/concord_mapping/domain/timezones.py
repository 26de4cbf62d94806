"""Windows <-> IANA zone names, from CLDR's windowsZones as shipped by `tzlocal.windows_tz`.

The table is CLDR data (Unicode licence) that tzlocal (MIT) regenerates on each CLDR release;
depending on it keeps the mapping maintained instead of copied.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from tzlocal.windows_tz import tz_win, win_tz

from concord_mapping.domain.errors import MappingFailure

__all__ = [
    "UNKNOWN_TIME_ZONE",
    "UNSUPPORTED_TIME_ZONE",
    "equivalent_zone",
    "iana_zone",
    "windows_zone",
    "zone",
]

UNKNOWN_TIME_ZONE = "UNKNOWN_TIME_ZONE"
UNSUPPORTED_TIME_ZONE = "UNSUPPORTED_TIME_ZONE"
# Zones are the same for Concord when their UTC offsets agree at every sample over these years.
_SAMPLES = tuple(datetime(1995, 1, 1, tzinfo=UTC) + timedelta(days=3 * n) for n in range(5600))


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def iana_zone(name: str, field: str = "time_zone") -> str:
    """The IANA name for an IANA or Windows zone name; anything else is a clear item error."""
    if name in _iana_names():
        return name
    if name in win_tz:
        return win_tz[name]
    raise MappingFailure(UNKNOWN_TIME_ZONE, "the time zone is not an IANA or Windows zone", field)


def windows_zone(iana: str) -> str | None:
    """The Windows name Exchange expects, or None for zones CLDR gives no Windows name."""
    return tz_win.get(iana)


@functools.cache
def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(iana_zone(name))


def equivalent_zone(name: str, allowed: Iterable[str], field: str = "time_zone") -> str:
    """`name`, or a zone from `allowed` with the same offsets at every sample from 1995 to
    2040 (Salesforce's restricted list has Asia/Kolkata, not CLDR's Asia/Calcutta; GMT, not
    UTC); none is a clear item error rather than a zone that would move meetings."""
    choices = frozenset(allowed)
    if not choices or name in choices:
        return name
    found = _equivalent(name, choices)
    if found is None:
        raise MappingFailure(UNSUPPORTED_TIME_ZONE, "Salesforce offers no equivalent zone", field)
    return found


@functools.lru_cache(maxsize=512)
def _equivalent(name: str, choices: frozenset[str]) -> str | None:
    target = zone(name)
    probe = (datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 7, 15, tzinfo=UTC))
    wanted = [target.utcoffset(p) for p in probe]
    # Plain names first, so UTC becomes GMT rather than the first African zone at offset 0.
    candidates = sorted(
        (
            c
            for c in choices
            if c in _iana_names() and [zone(c).utcoffset(p) for p in probe] == wanted
        ),
        key=lambda c: ("/" in c, c),
    )
    for candidate in candidates:
        other = zone(candidate)
        if all(target.utcoffset(t) == other.utcoffset(t) for t in _SAMPLES):
            return candidate
    return None
