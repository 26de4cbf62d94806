from __future__ import annotations

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.kernel.errors import TransitionError
from concord_reconciler.sessions.domain.model import (
    SessionRecord,
    SessionState,
    can_transition,
    coalesce,
)

pytestmark = pytest.mark.unit


def _session(state: SessionState) -> SessionRecord:
    return SessionRecord("s", "demo", res.SESSION_TRIGGER_FORCE, state=state)


def test_state_numbers_match_the_proto() -> None:
    for state in SessionState:
        assert rres.SessionState.Value(f"SESSION_STATE_{state.name}") == state.value


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (SessionState.QUEUED, SessionState.RUNNING),
        (SessionState.QUEUED, SessionState.CANCELLED),
        (SessionState.RUNNING, SessionState.COMPLETED),
        (SessionState.RUNNING, SessionState.FAILED),
        # A redelivered request restarts a session whose replica died.
        (SessionState.RUNNING, SessionState.RUNNING),
    ],
)
def test_allowed_transitions(source: SessionState, target: SessionState) -> None:
    assert _session(source).to(target).state is target


@pytest.mark.parametrize("terminal", [s for s in SessionState if s.terminal])
@pytest.mark.parametrize("target", list(SessionState))
def test_terminal_sessions_never_change(terminal: SessionState, target: SessionState) -> None:
    assert not can_transition(terminal, target)
    with pytest.raises(TransitionError):
        _session(terminal).to(target)


def test_queued_cannot_complete_without_running() -> None:
    with pytest.raises(TransitionError):
        _session(SessionState.QUEUED).to(SessionState.COMPLETED)


def test_a_request_coalesces_only_with_a_queued_session() -> None:
    assert coalesce(_session(SessionState.QUEUED))
    assert not coalesce(_session(SessionState.RUNNING))
    assert not coalesce(None)
