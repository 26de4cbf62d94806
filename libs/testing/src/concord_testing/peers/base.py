"""What every in-memory peer shares: the calls it received, and failures a test injects.

A peer is a real gRPC servicer over a small in-memory state; tests customise it through this
API (`fail_next`, `down`, `calls`), never by subclassing it, so each service has one stand-in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc

from concord_rpc import DomainError, Identity, current_identity

__all__ = ["Call", "Peer", "PeerDown"]

# Numbers every call of every peer in one order, so the calls of several peers can be merged.
_sequence = itertools.count()


class PeerDown(DomainError):
    """What a peer answers while a test holds it `down`.

    No RetryInfo: a client's channel would otherwise wait out the pushback and retry.
    """

    code = "UNAVAILABLE"
    reason = "PEER_DOWN"
    retryable = True


@dataclass(frozen=True)
class Call:
    """One call a peer received: the method's short name, its request and who was vouched for."""

    method: str
    request: Any
    caller: Identity | None
    seq: int = field(default_factory=lambda: next(_sequence))


class Peer:
    """Base of the in-memory peers: `service` names it as the devstack does (`crm-connector`),
    `full_name` is its gRPC service, `register` adds it to a server."""

    service: ClassVar[str]
    full_name: ClassVar[str]
    _add_to_server: ClassVar[Callable[[Any, grpc.aio.Server], None]]

    def __init__(self) -> None:
        self.calls: list[Call] = []
        #: While set, every call fails UNAVAILABLE (the service is down, its process is alive).
        self.down = False
        self._failures: dict[str, list[DomainError]] = {}

    def register(self, server: grpc.aio.Server) -> None:
        type(self)._add_to_server(self, server)

    def fail_next(self, method: str, error: DomainError, times: int = 1) -> None:
        """The next `times` calls of `method` raise `error` (after being recorded)."""
        self._failures.setdefault(method, []).extend([error] * times)

    def received(self, method: str) -> list[Any]:
        """The requests `method` received, oldest first."""
        return [call.request for call in self.calls if call.method == method]

    def methods(self) -> list[str]:
        """The methods called, in order."""
        return [call.method for call in self.calls]

    def _enter(self, method: str, request: Any) -> None:
        """Record a call, then fail it if the test said so."""
        self.calls.append(Call(method, request, current_identity()))
        if self.down:
            raise PeerDown(f"{self.service} is down")
        queued = self._failures.get(method)
        if queued:
            raise queued.pop(0)
