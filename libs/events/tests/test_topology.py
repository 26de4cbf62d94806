from __future__ import annotations

import pytest

from concord_events import (
    Topology,
    crm_changed,
    mail_changed,
    servers,
    session_event,
    session_requested,
)

pytestmark = pytest.mark.unit


def test_subjects() -> None:
    assert session_requested("demo") == "concord.sessions.requested.demo"
    assert session_event("s-1", "completed") == "concord.events.sessions.s-1.completed"
    assert session_event("s-1", "*") == "concord.events.sessions.s-1.*"
    assert mail_changed("demo") == "concord.mail.changed.demo"
    assert crm_changed("org_1") == "concord.crm.changed.org_1"


@pytest.mark.parametrize("bad", ["", "a.b", "a*", ">", "a b", "alice@example.com"])
def test_ids_that_would_change_the_subject_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="subject token"):
        session_requested(bad)
    with pytest.raises(ValueError, match="subject token"):
        session_event("s", bad or "x.y")


def test_streams_and_leases_keep_as_many_copies_as_configured() -> None:
    assert [s.num_replicas for s in Topology().streams()] == [1, 1]
    assert [s.num_replicas for s in Topology(replicas=3).streams()] == [3, 3]


def test_a_cluster_url_lists_every_node() -> None:
    assert servers("nats://a:4222") == ["nats://a:4222"]
    assert servers("nats://a:1, nats://b:2,nats://c:3") == [
        "nats://a:1",
        "nats://b:2",
        "nats://c:3",
    ]
    with pytest.raises(ValueError, match="no server"):
        servers(" , ")
