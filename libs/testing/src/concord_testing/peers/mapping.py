"""The mapping service in memory, for the part that is storage: versioned mapping tables.

It does not translate items and records: that is the mapping service's own logic, and a second
copy of it here would drift from it. A test that needs translation serves the real
`MappingServicer` in process (it needs only SQLite and a crm-connector peer for describes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from concord.common.v1 import resources_pb2 as res
from concord.mapping.v1 import mapping_service_pb2 as mapping
from concord.mapping.v1 import mapping_service_pb2_grpc as mapping_grpc
from concord_rpc import DomainError, NotFound
from concord_testing.peers.base import Peer

__all__ = ["MappingPeer"]

# The objects the real service's default tables target, by the kind in a table's name.
_DEFAULT_TARGETS = {
    "calendar-item": "Event",
    "task": "Task",
    "contact": "Contact",
    "email": "EmailMessage",
}


class NotTranslated(DomainError):
    """Asked to translate: by design this peer does not (see the module's docstring)."""

    code = "UNIMPLEMENTED"
    reason = "NOT_TRANSLATED_IN_MEMORY"


class MappingPeer(Peer, mapping_grpc.MappingServiceServicer):
    """Mapping tables by name, every version kept (`tables`, oldest first)."""

    service = "mapping"
    full_name = mapping.DESCRIPTOR.services_by_name["MappingService"].full_name
    _add_to_server = mapping_grpc.add_MappingServiceServicer_to_server

    def __init__(self, tables: Iterable[mapping.MappingTable] = ()) -> None:
        super().__init__()
        self.tables: dict[str, list[mapping.MappingTable]] = {}
        for table in tables:
            self._store(table)

    def _store(self, table: mapping.MappingTable) -> mapping.MappingTable:
        versions = self.tables.setdefault(table.name, [])
        stored = mapping.MappingTable()
        stored.CopyFrom(table)
        stored.version = len(versions) + 1
        stored.etag = f"v{stored.version}"
        versions.append(stored)
        return stored

    async def GetMappingTable(
        self, request: mapping.GetMappingTableRequest, context: Any
    ) -> mapping.GetMappingTableResponse:
        self._enter("GetMappingTable", request)
        versions = self.tables.get(request.name, [])
        if not versions and not request.version:
            return mapping.GetMappingTableResponse(table=_default(request.name))
        found = (
            [t for t in versions if t.version == request.version] if request.version else versions
        )
        if not found:
            raise NotFound(f"no mapping table {request.name} version {request.version or 'latest'}")
        return mapping.GetMappingTableResponse(table=found[-1])

    async def UpdateMappingTable(
        self, request: mapping.UpdateMappingTableRequest, context: Any
    ) -> mapping.UpdateMappingTableResponse:
        self._enter("UpdateMappingTable", request)
        if request.validate_only:
            return mapping.UpdateMappingTableResponse(table=request.table)
        return mapping.UpdateMappingTableResponse(table=self._store(request.table))

    async def ListMappingTableVersions(
        self, request: mapping.ListMappingTableVersionsRequest, context: Any
    ) -> mapping.ListMappingTableVersionsResponse:
        self._enter("ListMappingTableVersions", request)
        return mapping.ListMappingTableVersionsResponse(
            tables=list(reversed(self.tables.get(request.name, [])))
        )

    async def MapToCrm(
        self, request: mapping.MapToCrmRequest, context: Any
    ) -> mapping.MapToCrmResponse:
        self._enter("MapToCrm", request)
        raise NotTranslated(_NO_TRANSLATION)

    async def MapToMail(
        self, request: mapping.MapToMailRequest, context: Any
    ) -> mapping.MapToMailResponse:
        self._enter("MapToMail", request)
        raise NotTranslated(_NO_TRANSLATION)


_NO_TRANSLATION = (
    "the in-memory mapping peer keeps tables only; serve concord_mapping's MappingServicer "
    "in process to translate (issue #20: no second copy of the mapping)"
)


def _default(name: str) -> mapping.MappingTable:
    """What the real service answers for an org without a stored table: its default, version
    0. Its rules are the mapping service's own (see the module's docstring), so this one has
    none, and names no field a listing must read."""
    kind = name.rsplit("/", 1)[-1]
    return mapping.MappingTable(
        name=name,
        target_sobject=_DEFAULT_TARGETS.get(kind, ""),
        direction=res.SYNC_DIRECTION_TWO_WAY,
        is_default=True,
        etag="default-1",
    )
