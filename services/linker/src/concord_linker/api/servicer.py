"""LinkerService over gRPC: validate, translate protos <-> domain, call the domain."""

from __future__ import annotations

from typing import Any

import grpc

from concord.common.v1 import resources_pb2
from concord.linker.v1 import linker_service_pb2 as pb
from concord.linker.v1 import linker_service_pb2_grpc as pb_grpc
from concord_linker.domain.model import (
    AutoResolvePolicy,
    EmailContent,
    InvalidRequest,
    LinkedRecord,
    Participant,
    Role,
    UnknownAddressAction,
    parse_org_name,
)
from concord_linker.domain.service import Linker
from concord_rpc.identity import require_org
from concord_rpc.requests import Violations

__all__ = ["MAX_PARTICIPANTS", "LinkerServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

# Initial search is for one email a person reads; more recipients than this is a mailing.
MAX_PARTICIPANTS = 500
MAX_PAGE_SIZE = 100


def _role(value: int) -> Role:
    try:
        return Role(value)
    except ValueError:
        return Role.UNSPECIFIED


def _participant(p: resources_pb2.Participant) -> Participant:
    return Participant(p.email, p.display_name, _role(p.role))


def _address(a: resources_pb2.EmailAddress, role: Role) -> Participant:
    return Participant(a.address, a.display_name, role)


def _org_name(name: str, field: str = "org") -> str:
    """The org id of `orgs/{org}`, for a caller who acts for that org (concord_rpc.identity):
    the linker reads and creates that org's people, and never another's."""
    return require_org(parse_org_name(name, field))


class LinkerServicer(pb_grpc.LinkerServiceServicer):
    def __init__(self, linker: Linker) -> None:
        self._linker = linker

    async def ResolveParticipants(
        self, request: pb.ResolveParticipantsRequest, context: Context
    ) -> pb.ResolveParticipantsResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(_org_name, request.org, "org")
        checks.require("user_id", request.user_id)
        checks.check("kind", request.kind != resources_pb2.OBJECT_KIND_UNSPECIFIED, "is required")
        for index, participant in enumerate(request.participants):
            checks.check(
                f"participants[{index}].email", "@" in participant.email, "must be an email address"
            )
        auto = request.policy.auto_resolve
        try:
            action = UnknownAddressAction(auto.unknown_address_action)
        except ValueError:
            action = UnknownAddressAction.UNSPECIFIED
            checks.check("policy.auto_resolve.unknown_address_action", False, "unknown value")
        policy = AutoResolvePolicy(
            unknown_address_action=action,
            create_accounts_from_domain=auto.create_accounts_from_domain,
            free_mail_domains=frozenset(d.strip().lower() for d in auto.free_mail_domains),
        )
        checks.check(
            "request_id",
            bool(request.request_id) or not policy.may_write,
            "is required when the policy may create records",
        )
        checks.raise_if_any()
        participants = [_participant(p) for p in request.participants]
        resolution = await self._linker.resolve(
            org, request.user_id, participants, policy, blacklist=request.policy.blacklist
        )
        response = pb.ResolveParticipantsResponse(
            relations=[_record(r) for r in resolution.relations],
            what_explanation=resolution.what_explanation,
            created=[_record(r) for r in resolution.created],
        )
        for decision in resolution.decisions:
            item = response.resolutions.add(
                participant=resources_pb2.Participant(
                    email=decision.participant.email,
                    display_name=decision.participant.display_name,
                    role=resources_pb2.ParticipantRole.ValueType(decision.participant.role),
                ),
                outcome=pb.ResolutionOutcome.ValueType(decision.outcome),
                explanation=decision.explanation,
            )
            if decision.record is not None:
                item.record.CopyFrom(_record(decision.record))
        if resolution.who is not None:
            response.who.CopyFrom(_record(resolution.who))
        if resolution.what is not None:
            response.what.CopyFrom(_record(resolution.what))
        return response

    async def InitialSearch(
        self, request: pb.InitialSearchRequest, context: Context
    ) -> pb.InitialSearchResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(_org_name, request.org, "org")
        checks.require("user_id", request.user_id)
        email = request.email
        checks.check(
            "email",
            request.HasField("email") and bool(email.from_address.address or email.to),
            "is required, with a sender or a recipient",
        )
        checks.check(
            "page_size",
            0 <= request.page_size <= MAX_PAGE_SIZE,
            f"must be between 0 and {MAX_PAGE_SIZE}",
        )
        recipients = [
            *(_address(a, Role.TO_RECIPIENT) for a in email.to),
            *(_address(a, Role.CC_RECIPIENT) for a in email.cc),
            *(_address(a, Role.BCC_RECIPIENT) for a in email.bcc),
        ]
        checks.check(
            "email",
            len(recipients) <= MAX_PARTICIPANTS,
            f"at most {MAX_PARTICIPANTS} recipients",
        )
        checks.raise_if_any()
        content = EmailContent(
            subject=email.subject,
            sender=(
                _address(email.from_address, Role.SENDER) if email.from_address.address else None
            ),
            recipients=recipients,
            body_text=email.body_text,
        )
        records = await self._linker.initial_search(
            org,
            request.user_id,
            content,
            sobject_types=list(request.sobject_types),
            page_size=request.page_size or 20,
            blacklist=request.blacklist,
        )
        return pb.InitialSearchResponse(
            records=[
                pb.RelatedRecord(
                    sobject_type=r.sobject_type,
                    id=r.id,
                    name=r.name,
                    score=r.score,
                    explanation=r.explanation,
                )
                for r in records
            ]
        )


def _record(record: LinkedRecord) -> pb.LinkedRecord:
    return pb.LinkedRecord(sobject_type=record.sobject_type, id=record.id, name=record.name)
