"""A listing page is cut by size: what is sent fits a client, and the listing always moves on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concord_crm_connector.domain.queries import PAGE_BYTES, rows_within

pytestmark = pytest.mark.unit

rows_of = st.lists(
    st.dictionaries(
        st.sampled_from(["Id", "Subject", "Description", "SystemModstamp"]),
        st.text(max_size=300),
        min_size=1,
    ),
    max_size=40,
)


def _size(rows: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(row, ensure_ascii=False).encode()) for row in rows)


@given(rows_of, st.integers(min_value=1, max_value=4000))
def test_the_rows_kept_fit_the_budget_and_at_least_one_is_kept(
    rows: list[dict[str, Any]], budget: int
) -> None:
    kept = rows_within(rows, budget)
    assert kept <= len(rows)
    if rows:
        assert kept >= 1
    if kept > 1:
        assert _size(rows[:kept]) <= budget
    if kept < len(rows):
        # The next row would not have fitted: no page is cut short for nothing.
        assert _size(rows[: kept + 1]) > budget


def test_a_page_of_long_events_is_cut_well_before_two_thousand() -> None:
    rows = [{"Id": f"00U{n:012d}", "Description": "x" * 32000} for n in range(2000)]
    kept = rows_within(rows)
    assert 1 < kept < 2000
    assert _size(rows[:kept]) <= PAGE_BYTES
