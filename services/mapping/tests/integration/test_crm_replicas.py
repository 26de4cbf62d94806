"""Two crm-connector replicas behind the mapping process: its describes (UpdateMappingTable's
check against the org's live schema) are spread over both, none goes to a replica that does not
report SERVING, and none is lost when one stops (one connection to one replica took them all)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_mapping.__main__ import SERVICE_NAME
from concord_testing import ServiceProcess
from concord_testing.peers import CrmPeer, process_over_replicas

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TASKS = "orgs/acme/mappingTables/task"


def _replica() -> CrmPeer:
    """A crm-connector replica; replicas answer alike (one org, one Salesforce)."""
    peer = CrmPeer()
    subject = crm.FieldDescription(
        name="Subject", type="string", length=255, createable=True, updateable=True
    )
    peer.describes["Task"] = crm.ObjectDescription(name="Task", fields=[subject])
    return peer


async def test_describes_go_to_each_crm_connector_replica_that_serves(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    # Wired as the process wires it: crm-connector's address from CRM_CONNECTOR_ADDR.
    async with process_over_replicas(
        service_process,
        "concord_mapping",
        _replica(),
        _replica(),
        port_variable="MAPPING_PORT",
        health_service=SERVICE_NAME,
        var_dir=tmp_path / "var",
        env={"MAPPING_PEER_TIMEOUT_SECONDS": "5"},
    ) as (replicas, chan):
        stub = pb_grpc.MappingServiceStub(chan)
        default = await stub.GetMappingTable(pb.GetMappingTableRequest(name=TASKS), timeout=5)
        table = pb.MappingTable(
            name=TASKS,
            target_sobject="Task",
            direction=default.table.direction,
            etag=default.table.etag,
            rules=[pb.FieldRule(mail_field="task.subject", crm_field="Subject")],
        )
        check = pb.UpdateMappingTableRequest(table=table, validate_only=True)

        async def calls(count: int) -> None:
            # Each check describes Task through crm-connector; nothing is stored.
            for _ in range(count):
                checked = await stub.UpdateMappingTable(check, timeout=10)
                assert checked.table.version == 1

        await replicas.assert_balanced(calls)
