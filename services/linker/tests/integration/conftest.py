"""crm-connector in memory (concord_testing's peer) served in process: the linker's gRPC CRM
adapter talks to it as to the real one, over Search, QueryRecords, GetRecords and ApplyBatch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord_testing.peers import CrmPeer, serving_peers


@pytest.fixture
def fake_crm() -> CrmPeer:
    return CrmPeer()


@pytest.fixture
async def crm_stub(fake_crm: CrmPeer) -> AsyncIterator[crm_grpc.CrmConnectorServiceStub]:
    async with serving_peers(fake_crm) as served, served.channel("crm-connector") as chan:
        yield crm_grpc.CrmConnectorServiceStub(chan)
