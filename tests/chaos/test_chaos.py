"""The short run of the chaos harness (the long one is `make chaos`): two minutes of faults
while both sides of two mailboxes are edited; nothing lost, duplicated or stuck.

Not yet part of `make test` (issue #17): its first runs find the Exchange mailbox stuck and
meetings missing from one side after the faults, and that is the work left. Set CONCORD_CHAOS=1
to run it here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        os.environ.get("CONCORD_CHAOS") != "1",
        reason="issue #17: finds a stuck mailbox and lost meetings today; CONCORD_CHAOS=1 runs it",
    ),
]


def test_faults_while_both_sides_are_edited_lose_duplicate_and_block_nothing(
    tmp_path: Path,
) -> None:
    # Imported here: collection never needs the stack's clients (another `tests` package
    # collected first in the same worker may shadow this one's name).
    from tests.chaos.harness import run

    outcome = run(tmp_path, seconds=120, fault_every=6, per_pair=8, seed=17)
    print(outcome.table())
    assert sum(outcome.faults.values()) >= 15
    assert outcome.creates + outcome.updates >= 40
    assert (outcome.lost, outcome.duplicated, outcome.stuck) == ([], [], [])
