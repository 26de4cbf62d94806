"""The short run of the chaos harness in `make test` (the long one is `make chaos`): two
minutes of faults while both sides of two mailboxes are edited; nothing lost, duplicated or
stuck."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_faults_while_both_sides_are_edited_lose_duplicate_and_block_nothing(
    tmp_path: Path,
) -> None:
    outcome = run(tmp_path, seconds=120, fault_every=6, per_pair=8, seed=17)
    print(outcome.table())
    assert sum(outcome.faults.values()) >= 15
    assert outcome.creates + outcome.updates >= 40
    assert (outcome.lost, outcome.duplicated, outcome.stuck) == ([], [], [])
