import time
from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as pb
from benchmarks.test_bench_crm import emulator, connector, write_through_connector  # noqa

async def test_thin(emulator, connector):
    await write_through_connector(connector, 10000)
    for owner in ("005000000000009AAA",)*3:
        token=""; n=0; began=time.perf_counter(); pages=0
        while True:
            page = await connector.ListChanges(pb.ListChangesRequest(org="orgs/bench", sobject_type="Event", cursor=res.Cursor(collection="Event", token=token), owner_id=owner))
            n += len(page.changes); token = page.next_cursor.token; pages+=1; print(round(time.perf_counter()-began,2), end=' ')
            if not page.has_more: break
        print(owner, n, pages, time.perf_counter()-began, page.ByteSize())
