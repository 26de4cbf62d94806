"""Test fixtures for Concord: real embedded servers; loaded as the pytest plugin `concord_testing`.

The fixtures are in `concord_testing.plugin`; the classes here serve tests that need more control.
"""

from __future__ import annotations

from concord_testing.grpc_servers import (
    assert_process_lifecycle,
    serving_in_process,
    start_serving,
)
from concord_testing.identity import (
    TEST_CALLER,
    TEST_IDENTITY_KEY,
    identity_env,
    vouched,
)
from concord_testing.nats import NatsServer, nats_server_binary
from concord_testing.otlp import OtlpReceiver, ReceivedSpan
from concord_testing.ports import free_port, wait_for_port
from concord_testing.postgres import PostgresCluster, PostgresMissingError, postgres_bindir
from concord_testing.processes import ServiceProcess
from concord_testing.waiting import eventually

__all__ = [
    "TEST_CALLER",
    "TEST_IDENTITY_KEY",
    "NatsServer",
    "OtlpReceiver",
    "PostgresCluster",
    "PostgresMissingError",
    "ReceivedSpan",
    "ServiceProcess",
    "assert_process_lifecycle",
    "eventually",
    "free_port",
    "identity_env",
    "nats_server_binary",
    "postgres_bindir",
    "serving_in_process",
    "start_serving",
    "vouched",
    "wait_for_port",
]
