"""A stand-in service for ServiceProcess tests: gRPC health on HEALTH_PORT, SIGTERM exits 0.

HEALTH_MODE=crash exits at once; HEALTH_MODE=stubborn ignores SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> None:
    mode = os.environ.get("HEALTH_MODE", "")
    print(f"health_app starting mode={mode!r}", flush=True)
    if mode == "crash":
        print("health_app crashing on purpose", flush=True)
        sys.exit(3)
    stop = threading.Event()
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['HEALTH_PORT']}")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    # Polling, not a bare wait(): a signal handler that sets the event while the main thread
    # blocks inside Event.wait() can be missed.
    while not stop.wait(0.1):
        pass
    server.stop(grace=None)


if __name__ == "__main__":
    main()
