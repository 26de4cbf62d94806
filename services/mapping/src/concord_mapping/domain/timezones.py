"""Windows <-> IANA zone names, from CLDR's windowsZones as shipped by `tzlocal.windows_tz`.

The table is CLDR data (Unicode licence) that tzlocal (MIT) regenerates on each CLDR release;
depending on it keeps the mapping maintained instead of copied.
"""

from __future__ import annotations

import functools
import zoneinfo

from tzlocal.windows_tz import tz_win, win_tz

from concord_mapping.domain.errors import MappingFailure

__all__ = ["UNKNOWN_TIME_ZONE", "iana_zone", "windows_zone", "zone"]

UNKNOWN_TIME_ZONE = "UNKNOWN_TIME_ZONE"


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
