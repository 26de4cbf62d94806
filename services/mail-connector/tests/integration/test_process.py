from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from concord.common.v1 import resources_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_rpc import channel
from concord_testing import ServiceProcess, free_port

pytestmark = pytest.mark.integration


async def test_process_serves_from_empty_state_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    port = free_port()
    process = service_process(
        "concord_mail_connector",
        env={
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "MAIL_CONNECTOR_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
        },
    )
    addr = f"127.0.0.1:{port}"
    await asyncio.to_thread(
        process.wait_serving, addr, service="concord.mail.v1.MailConnectorService"
    )
    async with channel(addr, retry=False) as chan:
        response = await pb_grpc.MailConnectorServiceStub(chan).ListChanges(
            pb.ListChangesRequest(mailbox="mailboxes/demo", kind=resources_pb2.OBJECT_KIND_TASK),
            timeout=5,
        )
    assert response.next_cursor.collection == "task"
    # The embedded default: a dev key was generated where the service's state lives.
    key = tmp_path / "var" / "secrets" / "mail-connector.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert process.stop() == 0
