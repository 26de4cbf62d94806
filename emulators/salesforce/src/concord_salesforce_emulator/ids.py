"""Salesforce record ids: 15-character case-sensitive ids plus the 3-character case-safe suffix.

The suffix encodes, for each 5-character chunk, which characters are upper case, so a client
that compares ids case-insensitively (Excel, many databases) still tells them apart.
"""

from __future__ import annotations

import re

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_SHAPE = re.compile(r"^[0-9A-Za-z]{15}([0-9A-Za-z]{3})?$")

# The pod part of every id this emulator mints; real orgs use an instance code here.
_POD = "5e"


def checksum(id15: str) -> str:
    suffix = ""
    for chunk in range(3):
        bits = 0
        for position in range(5):
            char = id15[chunk * 5 + position]
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix += _SUFFIX_ALPHABET[bits]
    return suffix


def mint(key_prefix: str, sequence: int) -> str:
    """The 18-character id of the `sequence`-th record minted for an object."""
    digits = ""
    value = sequence
    for _ in range(9):
        value, remainder = divmod(value, 62)
        digits = _BASE62[remainder] + digits
    if value:
        raise OverflowError("record sequence exhausted")
    id15 = key_prefix + _POD + "0" + digits
    return id15 + checksum(id15)


def normalize(raw: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or None when it is not an id.

    An 18-character id whose suffix disagrees with its case is not an id either, as in Salesforce.
    """
    if not _ID_SHAPE.match(raw):
        return None
    id15 = raw[:15]
    expected = id15 + checksum(id15)
    if len(raw) == 18 and raw[15:].upper() != expected[15:]:
        return None
    return expected
