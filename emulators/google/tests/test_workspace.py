"""OAuth, People, Tasks, Gmail, batch, quotas, faults, watch channels and schema conformance."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from google.auth.exceptions import RefreshError
from googleapiclient.errors import HttpError  # type: ignore[import-untyped]
from googleapiclient.http import BatchHttpRequest  # type: ignore[import-untyped]

from concord_devcerts import ensure_tls, server_context
from concord_google_emulator.discovery import schema_violations
from concord_google_emulator.testing import RunningEmulator

pytestmark = pytest.mark.integration

Builder = Callable[..., Any]
CALENDAR = ("https://www.googleapis.com/auth/calendar",)


def meeting(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": "2031-06-02T10:00:00Z"},
        "end": {"dateTime": "2031-06-02T11:00:00Z"},
    }


def test_a_key_the_emulator_did_not_hand_out_is_refused(
    client: Builder, emulator: RunningEmulator, key: dict[str, Any]
) -> None:
    other = emulator.service_account()
    forged = other | {"client_email": key["client_email"], "private_key_id": key["private_key_id"]}
    with pytest.raises(RefreshError, match="invalid_grant"):
        client("calendar", key_info=forged).events().list(calendarId="primary").execute()


def test_a_scope_not_delegated_is_unauthorized_client(
    client: Builder, emulator: RunningEmulator
) -> None:
    narrow = emulator.service_account(scopes=list(CALENDAR))
    assert (
        client("calendar", key_info=narrow, scopes=CALENDAR)
        .events()
        .list(calendarId="primary")
        .execute()["items"]
        == []
    )
    with pytest.raises(RefreshError, match="unauthorized_client"):
        client("gmail", key_info=narrow).users().labels().list(userId="me").execute()


def test_a_token_without_the_methods_scope_is_403(client: Builder) -> None:
    with pytest.raises(HttpError) as caught:
        client("tasks", scopes=CALENDAR).tasklists().list().execute()
    assert caught.value.status_code == 403
    assert caught.value.error_details[0]["reason"] == "insufficientPermissions"


def test_a_subject_outside_the_domain_is_refused(client: Builder) -> None:
    with pytest.raises(RefreshError, match="invalid_grant"):
        client("calendar", subject="stranger@elsewhere.test").events().list(
            calendarId="primary"
        ).execute()


def test_a_parameter_the_discovery_document_lacks_is_refused_and_recorded(
    emulator: RunningEmulator, client: Builder
) -> None:
    request = client("calendar").events().list(calendarId="primary")
    request.uri += "&notAParameter=1"
    with pytest.raises(HttpError) as caught:
        request.execute()
    assert caught.value.status_code == 400
    [violation] = emulator.admin("DELETE", "violations")
    assert "notAParameter" in violation


def test_people_sync_tokens_etags_and_groups(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    people = client("people")
    group = people.contactGroups().create(body={"contactGroup": {"name": "Salesforce"}}).execute()
    listed = (
        people.people()
        .connections()
        .list(resourceName="people/me", personFields="names", requestSyncToken=True)
        .execute()
    )
    token = listed["nextSyncToken"]
    made = (
        people.people()
        .createContact(
            body={
                "names": [{"givenName": "Ada"}],
                "emailAddresses": [{"value": "ada@acme.example"}],
                "memberships": [
                    {"contactGroupMembership": {"contactGroupResourceName": group["resourceName"]}}
                ],
            },
            personFields="names,memberships",
        )
        .execute()
    )
    with pytest.raises(HttpError) as stale:
        people.people().updateContact(
            resourceName=made["resourceName"],
            updatePersonFields="names",
            body={"etag": "stale", "names": [{"givenName": "X"}]},
        ).execute()
    assert stale.value.status_code == 400
    people.people().updateContact(
        resourceName=made["resourceName"],
        updatePersonFields="names",
        body={"etag": made["etag"], "names": [{"givenName": "Augusta"}]},
    ).execute()
    changed = (
        people.people()
        .connections()
        .list(resourceName="people/me", personFields="names,memberships", syncToken=token)
        .execute()
    )
    [person] = changed["connections"]
    assert person["names"] == [{"givenName": "Augusta"}]
    groups = {
        m["contactGroupMembership"]["contactGroupResourceName"] for m in person["memberships"]
    }
    assert group["resourceName"] in groups
    people.people().deleteContact(resourceName=made["resourceName"]).execute()
    gone = (
        people.people()
        .connections()
        .list(resourceName="people/me", personFields="names", syncToken=changed["nextSyncToken"])
        .execute()
    )
    assert [p["metadata"].get("deleted") for p in gone["connections"]] == [True]
    emulator.admin("POST", f"users/{user}/invalidate/people-sync-tokens")
    with pytest.raises(HttpError) as expired:
        people.people().connections().list(
            resourceName="people/me", personFields="names", syncToken=gone["nextSyncToken"]
        ).execute()
    assert expired.value.status_code == 400
    assert "EXPIRED_SYNC_TOKEN" in expired.value.content.decode()


def test_tasks_by_updated_min_with_deletes_shown(client: Builder) -> None:
    tasks = client("tasks")
    [default] = tasks.tasklists().list().execute()["items"]
    first = (
        tasks.tasks()
        .insert(
            tasklist=default["id"],
            body={"title": "call Ada", "notes": "n", "due": "2031-06-02T00:00:00.000Z"},
        )
        .execute()
    )
    since = first["updated"]
    time.sleep(0.01)
    second = tasks.tasks().insert(tasklist=default["id"], body={"title": "two"}).execute()
    tasks.tasks().delete(tasklist=default["id"], task=first["id"]).execute()
    quiet = tasks.tasks().list(tasklist=default["id"], updatedMin=since).execute()
    assert [t["id"] for t in quiet["items"]] == [second["id"]]
    loud = (
        tasks.tasks()
        .list(tasklist=default["id"], updatedMin=since, showDeleted=True, showHidden=True)
        .execute()
    )
    assert sorted((t["id"], t.get("deleted", False)) for t in loud["items"]) == sorted(
        [(first["id"], True), (second["id"], False)]
    )


def raw(subject: str) -> str:
    mime = (
        f"From: ada@acme.example\r\nTo: rep@concord.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@acme.example>\r\n\r\nHello\r\n"
    )
    return base64.urlsafe_b64encode(mime.encode()).decode()


def test_gmail_labels_raw_messages_and_history(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    gmail = client("gmail").users()
    label = gmail.labels().create(userId="me", body={"name": "Salesforce"}).execute()
    start = gmail.getProfile(userId="me").execute()["historyId"]
    made = (
        gmail.messages()
        .insert(userId="me", body={"raw": raw("hello"), "labelIds": ["INBOX"]})
        .execute()
    )
    gmail.messages().modify(
        userId="me", id=made["id"], body={"addLabelIds": [label["id"]]}
    ).execute()
    history = gmail.history().list(userId="me", startHistoryId=start, labelId=label["id"]).execute()
    [record] = history["history"]
    assert record["labelsAdded"][0]["labelIds"] == [label["id"]]
    listed = gmail.messages().list(userId="me", labelIds=[label["id"]]).execute()
    assert [m["id"] for m in listed["messages"]] == [made["id"]]
    got = gmail.messages().get(userId="me", id=made["id"], format="raw").execute()
    assert b"Subject: hello" in base64.urlsafe_b64decode(got["raw"])
    emulator.admin("POST", f"users/{user}/invalidate/gmail-history")
    with pytest.raises(HttpError) as old:
        gmail.history().list(userId="me", startHistoryId=start).execute()
    assert old.value.status_code == 404
    watched = gmail.watch(userId="me", body={"topicName": "projects/p/topics/t"}).execute()
    assert int(watched["historyId"]) >= int(start)


def test_batch_answers_each_part_in_order(client: Builder, emulator: RunningEmulator) -> None:
    service = client("calendar")
    # A batch refreshes expired credentials over an HTTP object of its own (without our CA):
    # a first call gets the token over ours.
    service.events().list(calendarId="primary").execute()
    # The client derives a batch URI from the document's rootUrl, not the endpoint: give it one.
    batch = BatchHttpRequest(batch_uri=emulator.base + "batch/calendar/v3")
    answers: list[tuple[str, Any]] = []
    for n in range(3):
        batch.add(
            service.events().insert(
                calendarId="primary", body=meeting(f"b{n}") | {"id": f"batch{n}a"}
            ),
            callback=lambda rid, resp, exc: answers.append((rid, exc or resp["summary"])),
        )
    batch.add(
        service.events().insert(calendarId="primary", body=meeting("dup") | {"id": "batch0a"}),
        callback=lambda rid, resp, exc: answers.append((rid, exc)),
    )
    batch.execute()
    assert [a[1] for a in answers[:3]] == ["b0", "b1", "b2"]
    assert isinstance(answers[3][1], HttpError)
    assert answers[3][1].status_code == 409
    assert emulator.admin("GET", "calls")["calendar.events.insert"] >= 4


def test_quota_and_injected_faults(client: Builder, emulator: RunningEmulator) -> None:
    events = client("calendar").events()
    emulator.admin("POST", "quota", {"per_minute": 1})
    events.list(calendarId="primary").execute()
    with pytest.raises(HttpError) as limited:
        events.list(calendarId="primary").execute()
    assert (limited.value.status_code, limited.value.error_details[0]["reason"]) == (
        403,
        "rateLimitExceeded",
    )
    emulator.admin("DELETE", "quota")
    emulator.admin("POST", "faults", {"kind": "rate_limit", "method": "gmail.users.labels.list"})
    with pytest.raises(HttpError) as gmail_limited:
        client("gmail").users().labels().list(userId="me").execute()
    assert gmail_limited.value.status_code == 429
    emulator.admin("POST", "faults", {"kind": "http_error", "status": 503})
    with pytest.raises(HttpError) as unavailable:
        events.list(calendarId="primary").execute()
    assert unavailable.value.status_code == 503


class Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        Receiver.got.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(tmp_path: Any, emulator: RunningEmulator) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    context = server_context(ensure_tls(tmp_path / "tls", "receiver"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    emulator.admin("POST", "trust", {"ca_file": str(tmp_path / "tls" / "ca.pem")})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.got = []
    yield f"https://127.0.0.1:{server.server_address[1]}/notify"
    server.shutdown()
    server.server_close()


def test_watch_channels_post_sync_then_exists(client: Builder, receiver: str) -> None:
    service = client("calendar")
    channel = (
        service.events()
        .watch(
            calendarId="primary",
            body={
                "id": "chan-1-" + str(time.time_ns()),
                "type": "web_hook",
                "address": receiver,
                "token": "secret",
            },
        )
        .execute()
    )
    service.events().insert(calendarId="primary", body=meeting("watched")).execute()
    deadline = time.monotonic() + 5
    while len(Receiver.got) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    states = [(h["x-goog-resource-state"], h["x-goog-channel-token"]) for h in Receiver.got]
    assert states == [("sync", "secret"), ("exists", "secret")]
    service.channels().stop(
        body={"id": channel["id"], "resourceId": channel["resourceId"]}
    ).execute()


def test_representative_responses_conform_to_the_discovery_schemas(client: Builder) -> None:
    made = client("calendar").events().insert(calendarId="primary", body=meeting("s")).execute()
    listed = client("calendar").events().list(calendarId="primary").execute()
    labels = client("gmail").users().labels().list(userId="me").execute()
    lists = client("tasks").tasklists().list().execute()
    groups = client("people").contactGroups().list().execute()
    assert schema_violations("calendar.v3", "Event", made) == []
    assert schema_violations("calendar.v3", "Events", listed) == []
    assert schema_violations("gmail.v1", "ListLabelsResponse", labels) == []
    assert schema_violations("tasks.v1", "TaskLists", lists) == []
    assert schema_violations("people.v1", "ListContactGroupsResponse", groups) == []
    # And the checker is no rubber stamp.
    assert schema_violations("calendar.v3", "Event", made | {"start": "tomorrow"})
    assert schema_violations("calendar.v3", "Event", {"bogus": 1})
    assert json.dumps(made)
