"""Time zones as Graph names them: Windows ids (what Exchange stores) or IANA names."""

from __future__ import annotations

import datetime as dt
import functools
import json
import pathlib
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["UnknownZone", "to_windows", "zone"]


class UnknownZone(ValueError):
    """A zone name neither table knows; Graph answers 400 for such a write."""


@functools.cache
def _windows() -> dict[str, str]:
    path = pathlib.Path(__file__).parent / "windows_zones.json"
    zones: dict[str, str] = json.loads(path.read_text())["zones"]
    return zones


@functools.cache
def _iana_to_windows() -> dict[str, str]:
    out: dict[str, str] = {}
    for windows, iana in sorted(_windows().items()):
        out.setdefault(iana, windows)
    return out


def zone(name: str) -> dt.tzinfo:
    """The tzinfo of a Windows or IANA zone name; UnknownZone otherwise."""
    if name in ("", "UTC", "Etc/UTC", "Coordinated Universal Time"):
        return dt.UTC
    iana = _windows().get(name, name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownZone(name) from None


def to_windows(name: str) -> str:
    """The Windows id Exchange would store for a zone given by either name."""
    if name in _windows() or name == "UTC":
        return name
    zone(name)  # raises for names no table knows
    return _iana_to_windows().get(name, name)
