"""The push domain without I/O: coalescing windows and back-off bounds."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from exchangelib.errors import ErrorServerBusy  # type: ignore[import-untyped]

from concord_mail_connector.adapters.push_exchange import retry_delay
from concord_mail_connector.domain.model import Kind
from concord_mail_connector.domain.push import Backoff, ChangeCoalescer, MailChangedNote
from concord_mail_connector.settings import MailConnectorSettings
from concord_settings import SettingsError

pytestmark = pytest.mark.unit

CAL = frozenset({Kind.CALENDAR_ITEM})
TASK = frozenset({Kind.TASK})


class Recorder:
    def __init__(self) -> None:
        self.notes: list[MailChangedNote] = []

    async def emit(self, note: MailChangedNote) -> None:
        self.notes.append(note)


async def test_the_first_change_goes_at_once_and_the_rest_of_the_window_goes_together() -> None:
    sent = Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.2)
    coalescer.note("m1", CAL, "ews-streaming")
    await asyncio.sleep(0)
    assert [n.kinds for n in sent.notes] == [CAL]
    for _ in range(50):
        coalescer.note("m1", TASK, "ews-streaming")
        coalescer.note("m1", CAL, "ews-streaming")
    await asyncio.sleep(0)
    assert len(sent.notes) == 1
    await asyncio.sleep(0.4)
    assert len(sent.notes) == 2
    assert sent.notes[1].kinds == CAL | TASK
    assert sent.notes[0].dedupe_key != sent.notes[1].dedupe_key
    await coalescer.close()


async def test_mailboxes_coalesce_apart_and_any_kind_wins() -> None:
    sent = Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.2)
    coalescer.note("m1", CAL, "ews-streaming")
    coalescer.note("m2", CAL, "ews-streaming")
    coalescer.note("m1", TASK, "ews-streaming")
    coalescer.note("m1", frozenset(), "resubscribed")
    await asyncio.sleep(0.4)
    by_mailbox = [(n.mailbox, n.kinds, n.hint) for n in sent.notes]
    assert by_mailbox == [
        ("m1", CAL, "ews-streaming"),
        ("m2", CAL, "ews-streaming"),
        ("m1", frozenset(), "ews-streaming,resubscribed"),
    ]
    await coalescer.close()


async def test_a_forgotten_mailbox_sends_nothing_pending() -> None:
    sent = Recorder()
    coalescer = ChangeCoalescer(sent.emit, window=0.2)
    coalescer.note("m1", CAL, "ews-streaming")
    coalescer.note("m1", TASK, "ews-streaming")
    coalescer.forget("m1")
    await asyncio.sleep(0.4)
    assert len(sent.notes) == 1
    await coalescer.close()


async def test_a_failing_publish_loses_one_hint_not_the_coalescer() -> None:
    calls: list[MailChangedNote] = []

    async def flaky(note: MailChangedNote) -> None:
        calls.append(note)
        if len(calls) == 1:
            raise ConnectionError("nats down")

    coalescer = ChangeCoalescer(flaky, window=0.05)
    coalescer.note("m1", CAL, "ews-streaming")
    await asyncio.sleep(0.1)
    coalescer.note("m1", CAL, "ews-streaming")
    await asyncio.sleep(0.1)
    assert len(calls) == 2
    await coalescer.close()


def test_backoff_grows_to_its_bound_and_resets() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(10)]
    assert all(0 < d <= 4.0 for d in delays)
    assert delays[-1] >= 2.0  # at the bound, jitter takes at most half off
    assert delays[0] <= 0.5
    backoff.reset()
    assert backoff.next() <= 0.5


def test_a_busy_server_is_given_the_back_off_it_asked_for_within_a_bound() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0)
    assert retry_delay(ErrorServerBusy("busy", back_off=7.5), backoff) == 7.5
    assert retry_delay(ErrorServerBusy("busy", back_off=10_000), backoff) == 30.0
    assert retry_delay(ConnectionError(), Backoff(initial=0.5, maximum=4.0)) <= 0.5


def test_push_settings_come_from_the_environment_with_working_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONCORD_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("NATS_URL", raising=False)
    defaults = MailConnectorSettings.from_env()
    assert defaults.push_enabled
    assert defaults.nats_url == "nats://127.0.0.1:4222"
    assert defaults.push_window_seconds == 0.2
    monkeypatch.setenv("NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("MAIL_CONNECTOR_PUSH_ENABLED", "false")
    monkeypatch.setenv("MAIL_CONNECTOR_PUSH_WINDOW_SECONDS", "1.5")
    chosen = MailConnectorSettings.from_env()
    assert (chosen.nats_url, chosen.push_enabled, chosen.push_window_seconds) == (
        "nats://nats:4222",
        False,
        1.5,
    )
    monkeypatch.setenv("MAIL_CONNECTOR_PUSH_STREAM_MINUTES", "45")  # EWS allows 1 to 30
    with pytest.raises(SettingsError, match="MAIL_CONNECTOR_PUSH_STREAM_MINUTES"):
        MailConnectorSettings.from_env()
