"""Record ids: checksums of real ids, 15/18-character forms, minting."""

from __future__ import annotations

import pytest

from concord_salesforce_emulator import ids

pytestmark = pytest.mark.unit

# Ids minted by a real org, from the recordings.
REAL = ["0015500001QdQWaAAN", "0037e00001WZ30qAAD", "0067e00000K8i71AAB", "0017e00001W4GYRAA3"]


@pytest.mark.parametrize("real", REAL)
def test_checksum_matches_real_ids(real: str) -> None:
    assert ids.checksum(real[:15]) == real[15:]
    assert ids.normalize(real[:15]) == real
    assert ids.normalize(real) == real


def test_case_insensitive_suffix_is_accepted_but_a_wrong_one_is_not() -> None:
    assert ids.normalize(REAL[0][:15] + "aan") == REAL[0]
    assert ids.normalize(REAL[0][:15] + "AAA") is None


@pytest.mark.parametrize("bad", ["", "xyz", "001", "0015500001QdQW", "0015500001QdQWa!", "a" * 19])
def test_non_ids_are_rejected(bad: str) -> None:
    assert ids.normalize(bad) is None


def test_minted_ids_are_valid_distinct_and_keep_the_prefix() -> None:
    minted = [ids.mint("00U", n) for n in (1, 2, 61, 62, 10**6)]
    assert len(set(minted)) == len(minted)
    for record_id in minted:
        assert len(record_id) == 18
        assert record_id.startswith("00U")
        assert ids.normalize(record_id) == record_id
