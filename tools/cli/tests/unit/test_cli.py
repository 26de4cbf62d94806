"""Argument parsing, target resolution and formatting: no sockets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_cli import output
from concord_cli.__main__ import build_parser, main
from concord_cli.config import CliError, default_up_file, mailbox_name, resolve

pytestmark = pytest.mark.unit


def stamp(seconds: float) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def test_the_mailbox_argument_takes_an_id_or_a_name() -> None:
    assert mailbox_name("demo") == "mailboxes/demo"
    assert mailbox_name("mailboxes/demo") == "mailboxes/demo"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["sync"],
        ["sessions", "demo", "--limit", "0"],
        ["sync", "d", "--timeout", "x"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("concord: ")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "sessions" in capsys.readouterr().out


def test_json_is_accepted_before_or_after_the_command() -> None:
    assert build_parser().parse_args(["--json", "status"]).json
    assert build_parser().parse_args(["status", "--json"]).json
    assert not build_parser().parse_args(["status"]).json


def write_up(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "nats": {"url": "nats://127.0.0.1:4333"},
                "services": {
                    "gateway": {"address": "127.0.0.1:6000"},
                    "linker": {"address": "h:1"},
                },
                "demo": {"token": "user-token", "admin_token": "admin-token"},
            }
        )
    )
    return path


def test_the_up_file_gives_gateway_token_services_and_nats(tmp_path: Path) -> None:
    up = write_up(tmp_path / "up.json")
    target = resolve(up_file=str(up), gateway=None, token=None, admin=False, env={})
    assert (target.gateway, target.token) == ("127.0.0.1:6000", "user-token")
    assert target.services == {"gateway": "127.0.0.1:6000", "linker": "h:1"}
    assert target.nats_url == "nats://127.0.0.1:4333"
    admin = resolve(up_file=str(up), gateway=None, token=None, admin=True, env={})
    assert admin.token == "admin-token"


def test_flags_win_over_environment_over_the_up_file(tmp_path: Path) -> None:
    up = write_up(tmp_path / "up.json")
    env = {"CONCORD_UP_FILE": str(up), "CONCORD_GATEWAY": "env:1", "CONCORD_TOKEN": "env-token"}
    from_env = resolve(up_file=None, gateway=None, token=None, admin=False, env=env)
    assert (from_env.gateway, from_env.token) == ("env:1", "env-token")
    flagged = resolve(up_file=None, gateway="flag:1", token="flag-token", admin=False, env=env)
    assert (flagged.gateway, flagged.token) == ("flag:1", "flag-token")


def test_without_an_up_file_the_default_addresses_are_used(tmp_path: Path) -> None:
    env = {"CONCORD_VAR_DIR": str(tmp_path)}
    assert default_up_file(env) == tmp_path / "up.json"
    target = resolve(up_file=None, gateway=None, token=None, admin=False, env=env)
    assert target.gateway == "127.0.0.1:50050"
    assert target.services["linker"] == "127.0.0.1:50055"
    assert target.token is None
    with pytest.raises(CliError, match="no token"):
        target.require_token()


def test_a_named_up_file_must_exist_and_be_json(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="does not exist"):
        resolve(up_file=str(tmp_path / "nope.json"), gateway=None, token=None, admin=False, env={})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CliError, match="not valid JSON"):
        resolve(up_file=str(tmp_path / "bad.json"), gateway=None, token=None, admin=False, env={})


def test_a_table_aligns_its_columns() -> None:
    text = output.table(("A", "LONGER"), [("xxxx", "1"), ("y", "22")])
    assert text.splitlines() == ["A     LONGER", "xxxx  1", "y     22"]


def test_a_session_block_shows_state_duration_counts_and_failure() -> None:
    session = rres.Session(
        name="mailboxes/demo/sessions/s1",
        session_id="s1",
        mailbox="mailboxes/demo",
        state=rres.SESSION_STATE_FAILED,
        trigger=res.SESSION_TRIGGER_FORCE,
        failure_reason="mail-connector is unavailable",
        failure_code="DEPENDENCY_UNAVAILABLE",
        counts=rres.SessionCounts(mail_changes_seen=4, crm=rres.SideCounts(created=2)),
        start_time=stamp(100),
        end_time=stamp(100.25),
        trace_id="abc",
    )
    block = output.session_block(session)
    assert "session      s1" in block
    assert "state        FAILED" in block
    assert "trigger      FORCE" in block
    assert "duration     0.25s" in block
    assert "mail 4, crm 0" in block
    assert "created 2" in block
    assert "failure      mail-connector is unavailable (DEPENDENCY_UNAVAILABLE)" in block
    assert "trace        abc" in block


def test_durations_of_running_and_long_sessions() -> None:
    running = rres.Session(start_time=stamp(0))
    assert output.duration(running, now=datetime.fromtimestamp(125, UTC)) == "2m05s"
    assert output.duration(rres.Session()) == "-"


def test_the_sessions_table_has_one_row_per_session() -> None:
    sessions = [
        rres.Session(name="mailboxes/d/sessions/a1", state=rres.SESSION_STATE_COMPLETED),
        rres.Session(session_id="b2", state=rres.SESSION_STATE_QUEUED),
    ]
    lines = output.sessions_table(sessions).splitlines()
    assert lines[0].split()[:3] == ["SESSION", "STATE", "TRIGGER"]
    assert lines[1].split()[:2] == ["a1", "COMPLETED"]
    assert lines[2].split()[:2] == ["b2", "QUEUED"]


def test_json_keeps_default_fields() -> None:
    data = output.message_dict(rres.Session(name="n"))
    assert data["name"] == "n"
    assert data["state"] == "SESSION_STATE_UNSPECIFIED"
    assert data["failureReason"] == ""


# -- issue #8: settings values, names, exit codes, progress ------------------------------------


def test_settings_values_are_read_as_people_type_them() -> None:
    from concord.common.v1 import settings_pb2 as st
    from concord_cli.values import settings_change

    org, paths = settings_change(
        st.OrgSettings,
        [
            "conflict_policy=crm-wins",
            "sync_interval=1.5m",
            "past_window=30d",
            "locked_user_fields=sharing, blacklist",
            "send_invitations_from_crm=yes",
            "delete_guard_ratio=0.25",
            "delete_guard_min_items=7",
            'auto_resolve={"unknownAddressAction": "UNKNOWN_ADDRESS_ACTION_CREATE_LEAD"}',
            "blacklist=",
        ],
    )
    assert paths[:2] == ["conflict_policy", "sync_interval"]
    assert org.conflict_policy == st.CONFLICT_POLICY_CRM_WINS
    assert org.sync_interval.seconds == 90
    assert org.past_window.seconds == 30 * 86400
    assert list(org.locked_user_fields) == ["sharing", "blacklist"]
    assert org.send_invitations_from_crm
    assert (org.delete_guard_ratio, org.delete_guard_min_items) == (0.25, 7)
    assert org.auto_resolve.unknown_address_action == st.UNKNOWN_ADDRESS_ACTION_CREATE_LEAD
    assert list(org.blacklist) == []
    assert "blacklist" in paths


@pytest.mark.parametrize(
    ("assignment", "words"),
    [
        ("etag=x", "not a setting"),
        ("conflict_policy=unspecified", "one of"),
        ("conflict_policy=wins", "one of"),  # ambiguous: mail_wins, crm_wins, newest_wins
        ("sync_interval=1w", "duration"),
        ("delete_guard_min_items=many", "whole number"),
        ("send_invitations_from_crm=maybe", "true or false"),
        ("auto_resolve=yes", "JSON"),
        ("auto_resolve={oops", "not valid JSON"),
        ("blacklist", "field=value"),
    ],
)
def test_settings_values_that_cannot_be_read_say_why(assignment: str, words: str) -> None:
    from concord.common.v1 import settings_pb2 as st
    from concord_cli.values import settings_change

    with pytest.raises(ValueError, match=words):
        settings_change(st.OrgSettings, [assignment])


def test_item_and_org_names() -> None:
    import base64

    from concord_cli.config import Target, UsageProblem, item_error_name, org_name

    assert item_error_name("demo/e1") == "mailboxes/demo/itemErrors/e1"
    assert item_error_name("mailboxes/d/itemErrors/e") == "mailboxes/d/itemErrors/e"
    for bad in ("demo", "demo/", "/e1", "a/b/c"):
        with pytest.raises(UsageProblem):
            item_error_name(bad)
    payload = base64.urlsafe_b64encode(json.dumps({"org": "acme"}).encode()).decode().rstrip("=")
    target = Target(gateway="g", token=f"h.{payload}.s")
    assert org_name(target) == "orgs/acme"
    assert org_name(target, "globex") == "orgs/globex"
    with pytest.raises(UsageProblem, match="--org"):
        org_name(Target(gateway="g", token="opaque"))


def test_each_kind_of_failure_has_its_exit_code() -> None:
    import grpc

    from concord_cli.exits import exit_code_of

    codes = {
        code: exit_code_of(code)
        for code in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.INTERNAL,
        )
    }
    assert list(codes.values()) == [3, 4, 5, 6, 7, 1]


def test_progress_prints_a_line_per_state_change_only() -> None:
    lines: list[str] = []
    progress = output.Progress(lines.append)
    for state in (rres.SESSION_STATE_QUEUED, rres.SESSION_STATE_QUEUED, rres.SESSION_STATE_RUNNING):
        progress.show(rres.Session(session_id="s1", state=state))
    assert [line.split()[1:] for line in lines] == [["s1", "QUEUED"], ["s1", "RUNNING"]]
    silent = output.Progress(None)
    silent.show(rres.Session(state=rres.SESSION_STATE_QUEUED))


def test_settings_read_as_settings_set_takes_them() -> None:
    from google.protobuf import duration_pb2

    from concord.common.v1 import settings_pb2 as st

    block = output.settings_block(
        st.MailboxSettings(
            name="mailboxes/d/settings",
            sharing=[
                st.ObjectSharing(
                    kind=res.OBJECT_KIND_TASK,
                    enabled=False,
                    direction=res.SYNC_DIRECTION_TWO_WAY,
                    selection_modes=[st.SELECTION_MODE_CATEGORY, st.SELECTION_MODE_FOLDER],
                ),
                st.ObjectSharing(kind=res.OBJECT_KIND_EMAIL, enabled=True),
            ],
            locked_fields=["blacklist"],
        )
    ).splitlines()
    assert block[1].split(None, 1) == [
        "sharing",
        "kind=task enabled=false direction=two_way selection_modes=category+folder",
    ]
    assert block[2].strip() == "kind=email enabled=true"
    assert block[3].split() == ["blacklist", "-", "(locked", "by", "the", "org)"]
    org = output.settings_block(
        st.OrgSettings(
            sync_interval=duration_pb2.Duration(seconds=900),
            past_window=duration_pb2.Duration(seconds=90),
            conflict_policy=st.CONFLICT_POLICY_MAIL_WINS,
        )
    )
    assert "sync_interval" in org
    for expected in ("15m", "90s", "mail_wins"):
        assert expected in org


def test_the_org_block_shows_the_change_stream_with_its_lag_or_why_it_is_not_streaming() -> None:
    streaming = res.ChangeStream(org="orgs/acme", state=res.CHANGE_STREAM_STATE_STREAMING)
    streaming.lag.FromMilliseconds(400)
    streaming.last_commit_time.FromDatetime(datetime(2026, 12, 5, 9, 0, 1, tzinfo=UTC))
    health = rres.OrgHealth(org="orgs/acme", state=rres.HEALTH_STATE_HEALTHY)
    health.change_stream.CopyFrom(streaming)
    block = output.org_health_block(health)
    assert block.splitlines()[-1].split(maxsplit=2)[2] == (
        "STREAMING, 0.4 s behind (last change 2026-12-05 09:00:01Z)"
    )
    silent = res.ChangeStream(state=res.CHANGE_STREAM_STATE_SILENT, reason="no report for 41 s")
    assert output.change_stream_line(silent) == "SILENT: no report for 41 s"
    silent.resync_reason = "/data/EventChangeEvent: replay id expired"
    silent.resync_time.FromDatetime(datetime(2026, 12, 5, 9, 30, tzinfo=UTC))
    assert output.change_stream_line(silent) == (
        "SILENT: no report for 41 s; every mailbox synced 2026-12-05 09:30:00Z: "
        "/data/EventChangeEvent: replay id expired"
    )
    assert "change stream" not in output.org_health_block(rres.OrgHealth(org="orgs/acme"))
