"""The short run of the chaos harness (the long one is `make chaos`): one round of every fault
kind (kill -9 of each service and of the second reconciler, a NATS and a database restart, the
emulators' throttling, 5xx, latency and dropped answers) while both sides of two mailboxes are
edited; then nothing lost, duplicated or stuck.

Bounded: 30 s of faults, at most 120 s to converge (it takes seconds when nothing is wrong). The
mailbox lease is 15 s here instead of 60 s: a reconciler killed mid-session holds its mailbox
for a lease's length (by design), and one killed in the last seconds would otherwise make the
run wait a minute for nothing the test is about.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_faults_while_both_sides_are_edited_lose_duplicate_and_block_nothing(
    tmp_path: Path,
) -> None:
    # Imported here: collection never needs the stack's clients (another `tests` package
    # collected first in the same worker may shadow this one's name).
    from tests.chaos.harness import run

    outcome = run(
        tmp_path,
        seconds=30,
        fault_every=1.5,
        per_pair=4,
        settle_seconds=120,
        seed=17,
        env={"RECONCILER_LEASE_TTL_SECONDS": "15"},
    )
    print(outcome.table())
    assert len(outcome.faults) == outcome.fault_kinds, "one round meets every kind of fault"
    assert outcome.creates + outcome.updates >= 20
    assert (outcome.lost, outcome.duplicated, outcome.stuck) == ([], [], [])
