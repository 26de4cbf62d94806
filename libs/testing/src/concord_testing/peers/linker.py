"""The linker in memory: people it knows by address, the record an activity is about, and what
an initial search finds. It resolves, it does not search Salesforce: that is the linker's own
logic, tested in its own service against the crm-connector peer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concord.linker.v1 import linker_service_pb2 as linker
from concord.linker.v1 import linker_service_pb2_grpc as linker_grpc
from concord_testing.peers.base import Peer

__all__ = ["LinkerPeer"]

_OUTCOMES = {
    "Contact": linker.RESOLUTION_OUTCOME_MATCHED_CONTACT,
    "Lead": linker.RESOLUTION_OUTCOME_MATCHED_LEAD,
}


class LinkerPeer(Peer, linker_grpc.LinkerServiceServicer):
    """`people` (address -> Contact or Lead) resolve participants: each known one is a relation,
    the first is the `who`; `what` is the record every activity is about (None: none);
    `related` is what InitialSearch answers."""

    service = "linker"
    full_name = linker.DESCRIPTOR.services_by_name["LinkerService"].full_name
    _add_to_server = linker_grpc.add_LinkerServiceServicer_to_server

    def __init__(
        self,
        people: Mapping[str, linker.LinkedRecord] | None = None,
        *,
        what: linker.LinkedRecord | None = None,
    ) -> None:
        super().__init__()
        self.people: dict[str, linker.LinkedRecord] = dict(people or {})
        self.what = what
        self.related: list[linker.RelatedRecord] = []

    def know(self, email: str, sobject_type: str, record_id: str, name: str = "") -> None:
        self.people[email.lower()] = linker.LinkedRecord(
            sobject_type=sobject_type, id=record_id, name=name
        )

    async def ResolveParticipants(
        self, request: linker.ResolveParticipantsRequest, context: Any
    ) -> linker.ResolveParticipantsResponse:
        self._enter("ResolveParticipants", request)
        response = linker.ResolveParticipantsResponse()
        for participant in request.participants:
            decision = response.resolutions.add(participant=participant)
            known = self.people.get(participant.email.lower())
            if known is None:
                decision.outcome = linker.RESOLUTION_OUTCOME_UNRESOLVED
                continue
            decision.outcome = _OUTCOMES.get(
                known.sobject_type, linker.RESOLUTION_OUTCOME_UNRESOLVED
            )
            decision.record.CopyFrom(known)
            if known not in response.relations:
                response.relations.append(known)
        if response.relations:
            response.who.CopyFrom(response.relations[0])
        if self.what is not None:
            response.what.CopyFrom(self.what)
        return response

    async def InitialSearch(
        self, request: linker.InitialSearchRequest, context: Any
    ) -> linker.InitialSearchResponse:
        self._enter("InitialSearch", request)
        return linker.InitialSearchResponse(records=self.related)
