from __future__ import annotations

import pytest

from concord_events import crm_changed, mail_changed, session_event, session_requested

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
