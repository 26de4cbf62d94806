"""`python -m concord_linker [serve|migrate]`."""

from __future__ import annotations

from concord.linker.v1 import linker_service_pb2 as pb
from concord.linker.v1 import linker_service_pb2_grpc as pb_grpc
from concord_linker.adapters.store import SqlLinkerStore
from concord_linker.api.servicer import LinkerServicer
from concord_linker.domain.service import Linker
from concord_linker.settings import LinkerSettings
from concord_runtime import ServiceProcess, serve_main

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LinkerService"].full_name
MIGRATIONS = "concord_linker.adapters.migrations"


async def build(process: ServiceProcess[LinkerSettings]) -> None:
    # No readiness check on crm-connector: peer availability is decided per call. The channel
    # to it arrives with the first call that needs Salesforce (issue #7).
    servicer = LinkerServicer(Linker(SqlLinkerStore(process.engine)))
    process.server.add_service(
        SERVICE_NAME, lambda server: pb_grpc.add_LinkerServiceServicer_to_server(servicer, server)
    )


def main() -> int:
    return serve_main(LinkerSettings, build, migrations=MIGRATIONS)


if __name__ == "__main__":
    raise SystemExit(main())
