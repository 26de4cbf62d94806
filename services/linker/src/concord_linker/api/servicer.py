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
from concord_rpc.requests import Violations

__all__ = ["LinkerServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class LinkerServicer(pb_grpc.LinkerServiceServicer):
    def __init__(self, linker: Linker) -> None:
        self._linker = linker

    async def ResolveParticipants(
        self, request: pb.ResolveParticipantsRequest, context: Context
    ) -> pb.ResolveParticipantsResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(parse_org_name, request.org, "org")
        checks.require("user_id", request.user_id)
        checks.check("kind", request.kind != resources_pb2.OBJECT_KIND_UNSPECIFIED, "is required")
        for index, participant in enumerate(request.participants):
            checks.check(
                f"participants[{index}].email", "@" in participant.email, "must be an email address"
            )
        checks.raise_if_any()
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
