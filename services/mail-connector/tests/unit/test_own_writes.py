"""Concord's own writes are not hinted back (issue #18): `OwnWrites` and the coalescer without I/O.

A notification names an item at the version its change left; the versions Concord's writes
answered are its echoes. Anything else is someone's change and is hinted, as is an item change
whose judgement cannot wait any longer for the writes in flight.
"""

from __future__ import annotations

import asyncio

import pytest

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.domain.model import Kind
from concord_mail_connector.domain.own_writes import ItemEvent, OwnWrites
from concord_mail_connector.domain.provider import Write, WriteOperation, WriteResult
from concord_mail_connector.domain.push import ChangeCoalescer, MailChangedNote

pytestmark = pytest.mark.unit

CAL = Kind.CALENDAR_ITEM


def _write(operation: str, native_id: str = "") -> Write:
    return Write(operation, "link", r.ItemRef(native_id=native_id), r.MailItem())


def _ok(native_id: str, version: str = "", *, already: bool = False) -> WriteResult:
    ref = r.ItemRef(native_id=native_id, version=version)
    return WriteResult("link", r.WRITE_STATUS_OK, ref, already_applied=already)


class Recorder:
    def __init__(self) -> None:
        self.notes: list[MailChangedNote] = []

    async def emit(self, note: MailChangedNote) -> None:
        self.notes.append(note)


def test_a_write_is_known_at_the_version_it_answered_and_at_no_other() -> None:
    own = OwnWrites()
    token = own.begin("m1")
    own.end(
        "m1",
        token,
        [_write(WriteOperation.CREATE), _write(WriteOperation.UPDATE, "b"), _write("delete", "c")],
        [_ok("a", "v1"), _ok("b", "v7"), _ok("c")],
    )
    assert own.is_own("m1", ItemEvent(CAL, "a", "v1"))
    assert own.is_own("m1", ItemEvent(CAL, "b", "v7"))
    assert own.is_own("m1", ItemEvent(CAL, "c", "v3", deleted=True))
    # Someone's later edit, an event naming no version, another mailbox, a delete Concord
    # did not make: all someone else's.
    assert not own.is_own("m1", ItemEvent(CAL, "a", "v2"))
    assert not own.is_own("m1", ItemEvent(CAL, "a", ""))
    assert not own.is_own("m2", ItemEvent(CAL, "a", "v1"))
    assert not own.is_own("m1", ItemEvent(CAL, "a", "v1", deleted=True))


def test_failed_and_already_applied_writes_leave_nothing_to_recognise() -> None:
    own = OwnWrites()
    token = own.begin("m1")
    refused = WriteResult("link", r.WRITE_STATUS_CONFLICT, r.ItemRef(native_id="a", version="v1"))
    own.end(
        "m1",
        token,
        [_write(WriteOperation.UPDATE, "a"), _write(WriteOperation.CREATE)],
        # An earlier attempt's item found again may since carry someone's edit.
        [refused, _ok("b", "v1", already=True)],
    )
    assert not own.is_own("m1", ItemEvent(CAL, "a", "v1"))
    assert not own.is_own("m1", ItemEvent(CAL, "b", "v1"))


def test_the_record_is_bounded_by_count_and_by_age() -> None:
    now = [0.0]
    own = OwnWrites(capacity=2, max_age=10.0, clock=lambda: now[0])
    for n in range(3):
        own.end("m1", own.begin("m1"), [_write(WriteOperation.CREATE)], [_ok(f"i{n}", "v1")])
    assert [own.is_own("m1", ItemEvent(CAL, f"i{n}", "v1")) for n in range(3)] == [
        False,
        True,
        True,
    ]
    now[0] = 10.5
    assert not own.is_own("m1", ItemEvent(CAL, "i2", "v1"))


async def test_a_hint_made_only_of_concords_own_writes_is_not_sent() -> None:
    own, sent = OwnWrites(), Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.05, own_writes=own)
    own.end("m1", own.begin("m1"), [_write(WriteOperation.CREATE)], [_ok("a", "v1")])
    coalescer.note("m1", frozenset(), "ews-streaming", [ItemEvent(CAL, "a", "v1")])
    await asyncio.sleep(0.1)
    assert sent.notes == []
    # Someone edits the item next: that goes at once, the window having stayed open.
    coalescer.note("m1", frozenset(), "ews-streaming", [ItemEvent(CAL, "a", "v2")])
    await asyncio.sleep(0)
    assert [(n.mailbox, n.kinds) for n in sent.notes] == [("m1", frozenset({CAL}))]
    await coalescer.close()


async def test_an_event_read_before_its_write_answered_waits_for_the_answer() -> None:
    own, sent = OwnWrites(), Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.05, own_writes=own, recheck=0.01)
    token = own.begin("m1")
    # The server streams the create before CreateItem's answer is back.
    coalescer.note("m1", frozenset(), "ews-streaming", [ItemEvent(CAL, "a", "v1")])
    await asyncio.sleep(0.05)
    assert sent.notes == []
    own.end("m1", token, [_write(WriteOperation.CREATE)], [_ok("a", "v1")])
    await asyncio.sleep(0.05)
    assert sent.notes == []
    await coalescer.close()


async def test_someones_change_during_concords_writes_is_hinted_once_they_answer() -> None:
    own, sent = OwnWrites(), Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.05, own_writes=own, recheck=0.01)
    token = own.begin("m1")
    coalescer.note(
        "m1",
        frozenset(),
        "ews-streaming",
        [ItemEvent(CAL, "a", "v1"), ItemEvent(Kind.TASK, "user-item", "v4")],
    )
    await asyncio.sleep(0.03)
    assert sent.notes == []
    own.end("m1", token, [_write(WriteOperation.CREATE)], [_ok("a", "v1")])
    await asyncio.sleep(0.05)
    assert [n.kinds for n in sent.notes] == [frozenset({Kind.TASK})]
    await coalescer.close()


async def test_a_write_that_never_answers_holds_a_change_back_no_longer_than_max_wait() -> None:
    own, sent = OwnWrites(), Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.05, own_writes=own, max_wait=0.1, recheck=0.01)
    own.begin("m1")  # hung
    coalescer.note("m1", frozenset(), "ews-streaming", [ItemEvent(CAL, "a", "v1")])
    await asyncio.sleep(0.05)
    assert sent.notes == []
    await asyncio.sleep(0.15)
    assert [n.kinds for n in sent.notes] == [frozenset({CAL})]
    await coalescer.close()


async def test_writes_to_another_mailbox_hold_nothing_back() -> None:
    own, sent = OwnWrites(), Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.05, own_writes=own)
    own.begin("m2")
    coalescer.note("m1", frozenset(), "ews-streaming", [ItemEvent(CAL, "a", "v1")])
    await asyncio.sleep(0)
    assert [n.mailbox for n in sent.notes] == ["m1"]
    await coalescer.close()


async def test_writes_that_never_stop_hold_back_no_event_of_a_write_that_answered() -> None:
    """A big session keeps several writes in flight all along: each event waits only for the
    writes in flight when it came, not for every later one."""
    own, sent = OwnWrites(), Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.02, own_writes=own, max_wait=0.3, recheck=0.01)
    flying = [own.begin("m1") for _ in range(4)]
    for n in range(40):
        # The server streams write n's item before its answer; write n answers; another begins.
        coalescer.note("m1", frozenset(), "ews-streaming", [ItemEvent(CAL, f"i{n}", "v1")])
        await asyncio.sleep(0.01)
        own.end("m1", flying.pop(0), [_write(WriteOperation.CREATE)], [_ok(f"i{n}", "v1")])
        flying.append(own.begin("m1"))
    await asyncio.sleep(0.1)
    assert sent.notes == []
    coalescer.note("m1", frozenset(), "ews-streaming", [ItemEvent(CAL, "i3", "v2")])
    await asyncio.sleep(0.4)  # still in flight: judged once its wait is over
    assert [(n.kinds, n.hint) for n in sent.notes] == [(frozenset({CAL}), "ews-streaming")]
    await coalescer.close()
