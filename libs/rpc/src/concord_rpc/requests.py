"""Checking requests: every bad field named in one INVALID_ARGUMENT, and resource names.

::

    checks = Violations(InvalidRequest)
    org = checks.name(ORG, request.org, "org")
    checks.require("user_id", request.user_id)
    checks.check("page_size", request.page_size >= 0, "must not be negative")
    checks.raise_if_any()
"""

from __future__ import annotations

import re
from collections.abc import Callable

from concord_rpc.errors import InvalidArgument

__all__ = ["RESOURCE_ID", "ResourceName", "Violations"]

# AIP-122 style ids, as the reconciler mints them: lowercase letters, digits and `-`.
RESOURCE_ID = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_VARIABLE = re.compile(r"\{[a-z_]+\}")


class ResourceName:
    """A name pattern such as `orgs/{org}/connection`; each `{variable}` is a RESOURCE_ID."""

    def __init__(self, pattern: str, *, error: type[InvalidArgument] = InvalidArgument) -> None:
        self.pattern = pattern
        self._error = error
        parts = _VARIABLE.split(pattern)
        self._regex = re.compile(f"({RESOURCE_ID})".join(re.escape(part) for part in parts))

    def parse(self, value: str, field: str) -> str:
        """The first variable's id; the error names `field` otherwise."""
        match = self._regex.fullmatch(value)
        if match is None:
            problem = (
                "is required" if not value else f"must look like `{self.pattern}`, got {value!r}"
            )
            raise self._error(f"{field} {problem}", field_violations=[(field, problem)])
        return match.group(1)


class Violations:
    """Collects every problem of a request, so one answer names all of them."""

    def __init__(self, error: type[InvalidArgument] = InvalidArgument) -> None:
        self._error = error
        self._items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self._items.append((field, description))

    def check(self, field: str, ok: bool, description: str) -> bool:
        """Records `description` for `field` unless `ok`; returns `ok`."""
        if not ok:
            self.add(field, description)
        return ok

    def require(self, field: str, value: object) -> bool:
        return self.check(field, bool(value), "is required")

    def name(self, parse: ResourceName | Callable[[str, str], str], value: str, field: str) -> str:
        """`parse(value, field)`, or "" with its violations recorded when it raises."""
        parser = parse.parse if isinstance(parse, ResourceName) else parse
        try:
            return parser(value, field)
        except InvalidArgument as exc:
            self._items.extend(exc.field_violations)
            return ""

    @property
    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def error(self) -> InvalidArgument:
        fields = ", ".join(field for field, _ in self._items)
        return self._error(f"invalid request: {fields}", field_violations=self._items)

    def raise_if_any(self) -> None:
        if self._items:
            raise self.error()
