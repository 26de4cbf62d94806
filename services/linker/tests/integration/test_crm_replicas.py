"""Two crm-connector replicas behind the linker process: its Salesforce searches are spread
over both, none goes to a replica that does not report SERVING, and none is lost when one stops
(one connection to one replica took them all)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.linker.v1 import linker_service_pb2 as pb
from concord.linker.v1 import linker_service_pb2_grpc as pb_grpc
from concord_linker.__main__ import SERVICE_NAME
from concord_testing import ServiceProcess
from concord_testing.peers import CrmPeer, crm_record, process_over_replicas

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _replica() -> CrmPeer:
    """A crm-connector replica; replicas answer alike (one org, one Salesforce)."""
    peer = CrmPeer()
    peer.add(crm_record("Contact", "003ANN", Name="Ann Smith", Email="ann@acme.example"))
    return peer


async def test_searches_go_to_each_crm_connector_replica_that_serves(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    ids = itertools.count()
    # Wired as the process wires it: crm-connector's address from CRM_CONNECTOR_ADDR; no
    # cache, so every resolution asks Salesforce.
    async with process_over_replicas(
        service_process,
        "concord_linker",
        _replica(),
        _replica(),
        port_variable="LINKER_PORT",
        health_service=SERVICE_NAME,
        var_dir=tmp_path / "var",
        env={"LINKER_CRM_CACHE_SECONDS": "0", "LINKER_PEER_TIMEOUT_SECONDS": "5"},
    ) as (replicas, chan):
        stub = pb_grpc.LinkerServiceStub(chan)

        async def calls(count: int) -> None:
            for _ in range(count):
                got = await stub.ResolveParticipants(
                    pb.ResolveParticipantsRequest(
                        org="orgs/acme",
                        user_id="005USER",
                        kind=res.OBJECT_KIND_EMAIL,
                        participants=[
                            res.Participant(
                                email="ann@acme.example", role=res.PARTICIPANT_ROLE_SENDER
                            )
                        ],
                        request_id=f"request-{next(ids)}",
                    ),
                    timeout=10,
                )
                assert got.who.id == "003ANN"

        await replicas.assert_balanced(calls)
