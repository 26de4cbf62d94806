"""One in-memory stand-in per Concord service, as real gRPC servicers, for tests of the others.

Each keeps a small, honest state and records its calls; a test steers it through its API
(`fail_next`, `down`, `calls`, the state it seeds) and serves a set of them with
`serving_peers` (or `serving_peers_in_thread`), two replicas of one with `serving_replicas`.
Defining another `Fake*` servicer in a test is refused by `tests/repo/test_peers.py`: extend
the peer here instead.
"""

from __future__ import annotations

from concord_testing.peers.base import Call, Peer, PeerDown
from concord_testing.peers.crm import CrmPeer, crm_record
from concord_testing.peers.linker import LinkerPeer
from concord_testing.peers.mail import MailPeer
from concord_testing.peers.mapping import MappingPeer
from concord_testing.peers.reconciler import ReconcilerPeer
from concord_testing.peers.replicas import Replicas, process_over_replicas, serving_replicas
from concord_testing.peers.serving import ServedPeers, serving_peers, serving_peers_in_thread

__all__ = [
    "Call",
    "CrmPeer",
    "LinkerPeer",
    "MailPeer",
    "MappingPeer",
    "Peer",
    "PeerDown",
    "ReconcilerPeer",
    "Replicas",
    "ServedPeers",
    "crm_record",
    "process_over_replicas",
    "serving_peers",
    "serving_peers_in_thread",
    "serving_replicas",
]
