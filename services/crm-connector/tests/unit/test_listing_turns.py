"""A big listing's records are converted in turns of the event loop (issue #18, fairness):
2,000 records of every field are a second of protobuf work, and another mailbox's small
listing through the same connector must not wait behind all of it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord_crm_connector.api.servicer import TURN_EVERY, CrmConnectorServicer
from concord_crm_connector.domain.model import Change, ChangePage, Cursor, Record

pytestmark = pytest.mark.unit


class _Connector:
    """The domain answering one page of `count` Events."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def list_changes(self, *args: Any) -> ChangePage:
        records = (
            Record("Event", f"00U{n:012d}AAA", fields={"Subject": f"s{n}"})
            for n in range(self.count)
        )
        return ChangePage(Cursor("Event", "t"), tuple(Change(r) for r in records))


def test_a_big_page_gives_the_loop_back_while_it_is_converted() -> None:
    count = 3 * TURN_EVERY + 1
    servicer = CrmConnectorServicer(
        cast(Any, _Connector(count)), budget_share=1.0, streams=cast(Any, None)
    )
    request = pb.ListChangesRequest(org="orgs/demo", sobject_type="Event")

    async def run() -> int:
        turns = 0
        listing = asyncio.ensure_future(servicer.ListChanges(request, cast(Any, None)))
        while not listing.done():
            turns += 1
            await asyncio.sleep(0)
        assert len(listing.result().changes) == count
        return turns

    # The other task ran between every hundred records, not only once the page was done.
    assert asyncio.run(run()) > count // TURN_EVERY
