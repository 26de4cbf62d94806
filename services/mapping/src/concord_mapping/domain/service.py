"""An org's mapping tables: overrides from the store, else the built-in defaults; updates are
checked against the table schema and the Salesforce describe before they are stored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from concord_mapping.domain.describe import SObjectDescribe
from concord_mapping.domain.model import (
    InvalidTable,
    Kind,
    MappingTableNotFound,
    StaleTable,
    TableName,
    TableVersion,
)
from concord_mapping.domain.ports import OrgSchema
from concord_mapping.domain.table import Table, TableSchemaError, parse_table
from concord_mapping.domain.validation import validate_table

__all__ = ["MappingTableStore", "MappingTables", "TableData", "VersionTaken"]


class VersionTaken(Exception):
    """Another update stored the same version first."""


class MappingTableStore(Protocol):
    async def version(self, name: TableName, version: int) -> TableVersion | None:
        """`version` 0 means the newest."""

    async def newest(self, org: str) -> Mapping[Kind, int]:
        """The newest stored version of each of the org's tables (kinds with none left out)."""

    async def versions(self, name: TableName, before: int, limit: int) -> Sequence[TableVersion]:
        """Newest first, only versions below `before` (0: no bound)."""

    async def add(self, version: TableVersion) -> None:
        """Stores a new version; raises VersionTaken if that version exists."""


@dataclass(frozen=True)
class TableData:
    """What ships with the service: the table schema, default tables, describes."""

    schema: Mapping[str, Any]
    default_content: Mapping[Kind, Mapping[str, Any]]
    defaults: Mapping[Kind, Table]
    describes: Mapping[str, SObjectDescribe]
    # Field paths of the canonical item a rule may name (from the proto descriptors), e.g.
    # `calendar_item.organizer.address`; empty skips the check.
    mail_fields: frozenset[str] = frozenset()


def content_etag(content: Mapping[str, Any], version: int) -> str:
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return f"{version}-{digest[:16]}"


class MappingTables:
    def __init__(
        self, store: MappingTableStore, data: TableData, org_schema: OrgSchema | None = None
    ) -> None:
        """`org_schema` is the org's live describe that updates are checked against; without
        one (unit tests only) the shipped describes are used."""
        self._store = store
        self._data = data
        self._org_schema = org_schema
        # Stored versions never change, so their parsed rules can be kept.
        self._parsed: dict[tuple[TableName, int], Table] = {}

    @property
    def describes(self) -> Mapping[str, SObjectDescribe]:
        return self._data.describes

    def default(self, name: TableName) -> TableVersion:
        content = dict(self._data.default_content[name.kind])
        content.pop("default_version", None)
        version = self._data.defaults[name.kind].default_version
        return TableVersion(name, 0, content, f"default-{version}", None, "", is_default=True)

    async def get(self, name: TableName, version: int) -> TableVersion:
        found = await self._store.version(name, version)
        if found is not None:
            return found
        if version:
            raise MappingTableNotFound(name, version)
        return self.default(name)

    async def rules(
        self, name: TableName, version: int, newest: Mapping[Kind, int] | None = None
    ) -> tuple[Table, int]:
        """The parsed table in force (or pinned) and its version (0: the default).

        The version in force is looked up by number alone (`newest`, when the caller read the
        org's already): a stored version never changes, so its content is read and parsed once.
        """
        if not version:
            if newest is None:
                newest = await self._store.newest(name.org)
            version = newest.get(name.kind, 0)
            if not version:
                return self._data.defaults[name.kind], 0
        key = (name, version)
        if key not in self._parsed:
            found = await self.get(name, version)
            self._parsed[key] = parse_table(found.content, self._data.schema)
        return self._parsed[key], version

    def parsed(self, found: TableVersion) -> Table:
        """The rules of one version as read. Not kept: a `validate_only` answer carries a
        version number that is not stored."""
        if found.is_default:
            return self._data.defaults[found.name.kind]
        return parse_table(found.content, self._data.schema)

    async def by_object(self, org: str, version: int) -> dict[str, tuple[Kind, Table, int]]:
        """For records coming back from Salesforce: which kind's table reads each sObject.
        A record carries no kind, so when two tables target one object (e.g. calendar items
        sent to Task), a table that maps back wins, then the kind that object belongs to by
        default (a Task record is a task)."""
        found: dict[str, list[tuple[Kind, Table, int]]] = {}
        # One read of the org's versions in force for every kind's table.
        newest = None if version else await self._store.newest(org)
        for kind in Kind:
            table, used = await self.rules(TableName(org, kind), version, newest)
            found.setdefault(table.target_sobject, []).append((kind, table, used))

        def rank(entry: tuple[Kind, Table, int]) -> tuple[bool, bool]:
            kind, table, _ = entry
            native = self._data.defaults[kind].target_sobject == table.target_sobject
            return (not table.direction.to_mail, not native)

        return {sobject: min(entries, key=rank) for sobject, entries in found.items()}

    async def list_versions(
        self, name: TableName, before: int, page_size: int
    ) -> tuple[Sequence[TableVersion], int]:
        """A page of versions, newest first, and the `before` of the next page (0: none)."""
        # One more than asked tells whether another page exists without a count query.
        found = await self._store.versions(name, before, page_size + 1)
        page = found[:page_size]
        return page, page[-1].version if len(found) > page_size else 0

    async def org_describes(
        self, name: TableName, content: Mapping[str, Any]
    ) -> Mapping[str, SObjectDescribe]:
        """The org's live describe of the object the table targets, to check it against."""
        if self._org_schema is None:
            return self._data.describes
        try:
            table = parse_table(content, self._data.schema)
        except TableSchemaError:
            return {}  # check() refuses the table on its schema before any describe is used
        sobject = table.target_sobject
        return {sobject: await self._org_schema.describe(name.org, sobject)}

    def check(
        self,
        name: TableName,
        content: Mapping[str, Any],
        describes: Mapping[str, SObjectDescribe] | None = None,
    ) -> Table:
        """The table if it is valid for its kind and the org's schema (`describes`, by default
        the shipped ones); else every problem."""
        try:
            table = parse_table(content, self._data.schema)
        except TableSchemaError as bad:
            raise InvalidTable(
                f"the table breaks the mapping-table schema ({len(bad.violations)} problems)",
                field_violations=[(f"table.{f}" if f else "table", p) for f, p in bad.violations],
            ) from None
        problems = [
            (f"table.rules[{i}].mail_field", f"a {name.kind.value} table maps {name.kind.payload}")
            for i, rule in enumerate(table.rules)
            if rule.mail_field.split(".", 1)[0] != name.kind.payload
        ]
        if self._data.mail_fields:
            problems += [
                (f"table.rules[{i}].mail_field", "is not a field of the canonical item")
                for i, rule in enumerate(table.rules)
                if rule.mail_field not in self._data.mail_fields
            ]
        problems += validate_table(table, self._data.describes if describes is None else describes)
        if problems:
            raise InvalidTable(
                f"the table does not fit the Salesforce schema ({len(problems)} problems)",
                field_violations=problems,
            )
        return table

    async def update(
        self,
        name: TableName,
        content: Mapping[str, Any],
        etag: str,
        user_id: str,
        now: datetime,
        validate_only: bool = False,
    ) -> TableVersion:
        """A new version, or the one in force when a retry sends the same content again.
        Checked against the org's live describe, `validate_only` too."""
        self.check(name, content, await self.org_describes(name, content))
        current = await self.get(name, 0)
        if not current.is_default and dict(current.content) == dict(content):
            return current
        if etag != current.etag:
            raise StaleTable(
                f"the table changed since it was read (in force: version {current.version})",
                metadata={"name": str(name), "version": str(current.version)},
            )
        version = current.version + 1
        new = TableVersion(
            name, version, dict(content), content_etag(content, version), now, user_id
        )
        if validate_only:
            return new
        try:
            await self._store.add(new)
        except VersionTaken:
            raise StaleTable(
                "another update stored a version first", metadata={"name": str(name)}
            ) from None
        return new
