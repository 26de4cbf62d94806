from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from concord.common.v1 import resources_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_testing import ServiceProcess, assert_process_lifecycle

pytestmark = pytest.mark.integration


async def test_process_serves_from_empty_state_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    async def call(chan: grpc.aio.Channel) -> None:
        response = await pb_grpc.MailConnectorServiceStub(chan).ListChanges(
            pb.ListChangesRequest(mailbox="mailboxes/demo", kind=resources_pb2.OBJECT_KIND_TASK),
            timeout=5,
        )
        assert response.next_cursor.collection == "task"

    await assert_process_lifecycle(
        service_process,
        "concord_mail_connector",
        port_variable="MAIL_CONNECTOR_PORT",
        health_service="concord.mail.v1.MailConnectorService",
        var_dir=tmp_path / "var",
        call=call,
    )
    # The embedded default: a dev key was generated where the service's state lives.
    key = tmp_path / "var" / "secrets" / "mail-connector.key"
    assert key.stat().st_mode & 0o777 == 0o600
