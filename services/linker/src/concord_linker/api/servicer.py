"""LinkerService over gRPC: validate, translate protos <-> domain, call the domain."""

from __future__ import annotations

from typing import Any

import grpc

from concord.common.v1 import resources_pb2
from concord.linker.v1 import linker_service_pb2 as pb
from concord.linker.v1 import linker_service_pb2_grpc as pb_grpc
from concord_linker.domain.model import (
    LINKER_ISSUE,
    InvalidRequest,
    LinkedRecord,
    Participant,
    parse_org_name,
)
from concord_linker.domain.service import Linker
from concord_rpc import Unimplemented

__all__ = ["LinkerServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class LinkerServicer(pb_grpc.LinkerServiceServicer):
    def __init__(self, linker: Linker) -> None:
        self._linker = linker

    async def ResolveParticipants(
        self, request: pb.ResolveParticipantsRequest, context: Context
    ) -> pb.ResolveParticipantsResponse:
        violations: list[tuple[str, str]] = []
        org = ""
        try:
            org = parse_org_name(request.org)
        except InvalidRequest as exc:
            violations.extend(exc.field_violations)
        if not request.user_id:
            violations.append(("user_id", "is required"))
        if request.kind == resources_pb2.OBJECT_KIND_UNSPECIFIED:
            violations.append(("kind", "is required"))
        for index, participant in enumerate(request.participants):
            if "@" not in participant.email:
                violations.append((f"participants[{index}].email", "must be an email address"))
        if violations:
            fields = ", ".join(field for field, _ in violations)
            raise InvalidRequest(f"invalid request: {fields}", field_violations=violations)
        participants = [Participant(p.email, p.display_name) for p in request.participants]
        resolution = await self._linker.resolve(org, request.user_id, participants)
        response = pb.ResolveParticipantsResponse(
            relations=[_record(r) for r in resolution.relations]
        )
        if resolution.who is not None:
            response.who.CopyFrom(_record(resolution.who))
        if resolution.what is not None:
            response.what.CopyFrom(_record(resolution.what))
        return response

    async def InitialSearch(
        self, request: pb.InitialSearchRequest, context: Context
    ) -> pb.InitialSearchResponse:
        parse_org_name(request.org)
        raise Unimplemented("initial search", issue=LINKER_ISSUE)


def _record(record: LinkedRecord) -> pb.LinkedRecord:
    return pb.LinkedRecord(sobject_type=record.sobject_type, id=record.id, name=record.name)
