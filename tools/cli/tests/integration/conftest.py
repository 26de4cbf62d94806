"""A fake gateway (sync grpc server in threads, so `main()` can run its own event loop)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc
from grpc_status import rpc_status

from concord.common.v1 import resources_pb2 as res
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord_testing import NatsServer, free_port

TOKEN = "user-token-for-tests"


def _abort_not_found(context: Any, mailbox: str) -> None:
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message=f"mailbox '{mailbox}' not found")
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="MAILBOX_NOT_FOUND", domain="gateway.concord.dev")
    )
    context.abort_with_status(rpc_status.to_status(status))


def session(state: int, session_id: str = "s-42") -> res.Session:
    return res.Session(
        name=f"mailboxes/demo/sessions/{session_id}",
        session_id=session_id,
        mailbox="mailboxes/demo",
        state=state,  # type: ignore[arg-type]
        trigger=res.SESSION_TRIGGER_FORCE,
        start_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
        end_time=timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=210_000_000),
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )


@dataclass
class FakeGateway(pb_grpc.GatewayServiceServicer):
    outcome: res.Session = field(default_factory=lambda: session(res.SESSION_STATE_COMPLETED))
    timed_out: bool = False
    requests: list[Any] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    def _seen(self, request: Any, context: Any) -> None:
        self.requests.append(request)
        self.authorizations.extend(
            v for k, v in context.invocation_metadata() if k == "authorization"
        )

    def SyncMailbox(self, request: Any, context: Any) -> Any:
        self._seen(request, context)
        if request.mailbox != "mailboxes/demo":
            _abort_not_found(context, request.mailbox.removeprefix("mailboxes/"))
        return pb.SyncMailboxResponse(session=self.outcome, timed_out=self.timed_out)

    def ListSessions(self, request: Any, context: Any) -> Any:
        self._seen(request, context)
        return pb.ListSessionsResponse(
            sessions=[self.outcome, session(res.SESSION_STATE_QUEUED, session_id="s-43")]
        )

    def ListMailboxes(self, request: Any, context: Any) -> Any:
        self._seen(request, context)
        if not request.page_token:
            page = [res.Mailbox(name="mailboxes/demo", org="orgs/demo", owner_user_id="u")]
            return pb.ListMailboxesResponse(mailboxes=page, next_page_token="2")
        page = [res.Mailbox(name="mailboxes/other", org="orgs/demo", owner_user_id="u")]
        return pb.ListMailboxesResponse(mailboxes=page)


@dataclass
class Stack:
    fake: FakeGateway
    address: str
    up_file: Path
    health: health.HealthServicer


@pytest.fixture
def stack(tmp_path: Path, nats_server: NatsServer) -> Iterator[Stack]:
    fake = FakeGateway()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GatewayServiceServicer_to_server(fake, server)  # type: ignore[arg-type]  # a sync server: main() runs its own loop
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    # Every service at the fake's address: its health answers for all of them.
    names = ["gateway", "reconciler", "mail-connector", "crm-connector", "mapping", "linker"]
    up_file = tmp_path / "up.json"
    up_file.write_text(
        json.dumps(
            {
                "nats": {"url": nats_server.url},
                "services": {name: {"address": address} for name in names},
                "demo": {"token": TOKEN, "admin_token": "admin-token"},
            }
        )
    )
    try:
        yield Stack(fake, address, up_file, health_servicer)
    finally:
        server.stop(grace=None)


@pytest.fixture
def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"
