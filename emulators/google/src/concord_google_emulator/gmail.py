"""Gmail v1: labels, messages (raw MIME), history from a historyId, watch."""

from __future__ import annotations

import base64
import email
import email.policy
import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from concord_google_emulator.core import (
    ApiError,
    Call,
    Sequence,
    bad_request,
    not_found,
    page,
)

__all__ = ["GmailStore"]

_HISTORY_KEYS = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}
SYSTEM_LABELS = ("INBOX", "SENT", "TRASH", "SPAM", "DRAFT", "UNREAD", "STARRED", "IMPORTANT")


@dataclass
class Mailbox:
    history_floor: int
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    watch: dict[str, Any] | None = None


class GmailStore:
    def __init__(
        self, seq: Sequence, publish: Callable[[str, dict[str, Any]], None] | None = None
    ) -> None:
        self.seq = seq
        # Where a watched mailbox's changes go: (topic, Pub/Sub message data) once the state
        # lock is released (see Emulator._publish).
        self.publish = publish
        self.mailboxes: dict[str, Mailbox] = {}

    def add_user(self, user: str) -> None:
        if user in self.mailboxes:
            return
        box = Mailbox(history_floor=self.seq.take())
        for name in SYSTEM_LABELS:
            box.labels[name] = {"id": name, "name": name, "type": "system"}
        self.mailboxes[user] = box

    def box(self, call: Call) -> Mailbox:
        user_id = str(call.params["userId"])
        if user_id not in {"me", call.user}:
            raise ApiError(403, "forbidden", "Delegation denied for " + call.user)
        return self.mailboxes[call.user]

    def expire_history(self, user: str) -> None:
        """History before now is gone: a history.list from an older id answers 404."""
        box = self.mailboxes[user]
        box.history_floor = self.seq.take()
        box.history.clear()

    # ---- labels

    def labels_list(self, call: Call) -> dict[str, Any]:
        return {"labels": list(self.box(call).labels.values())}

    def label_create(self, call: Call) -> dict[str, Any]:
        box = self.box(call)
        body = call.body or {}
        name = str(body.get("name") or "")
        if not name:
            raise bad_request("Invalid label name")
        if any(label["name"].lower() == name.lower() for label in box.labels.values()):
            raise ApiError(409, "duplicate", "Label name exists or conflicts")
        label = {
            "id": f"Label_{len(box.labels) + 1}",
            "name": name,
            "type": "user",
            "messageListVisibility": body.get("messageListVisibility", "show"),
            "labelListVisibility": body.get("labelListVisibility", "labelShow"),
        }
        box.labels[label["id"]] = label
        return label

    def label_get(self, call: Call) -> dict[str, Any]:
        label = self.box(call).labels.get(str(call.params["id"]))
        if label is None:
            raise not_found("Requested entity was not found.")
        return label

    # ---- messages

    def _record(
        self, call: Call, box: Mailbox, kind: str, message: dict[str, Any], **extra: Any
    ) -> None:
        history_id = self.seq.take()
        watch = box.watch
        if watch is not None and self.publish is not None:
            wanted = set(watch.get("labelIds") or ())
            touched = set(message["labelIds"]) | set(extra.get("labelIds", ()))
            if not wanted or wanted & touched:
                data = {"emailAddress": call.user, "historyId": history_id}
                call.after.append(functools.partial(self.publish, watch["topicName"], data))
        message["historyId"] = str(history_id)
        ref = {"id": message["id"], "threadId": message["threadId"]}
        if kind in {"labelsAdded", "labelsRemoved"}:
            entry = {"message": ref | {"labelIds": message["labelIds"]}, **extra}
        else:
            entry = {"message": ref | {"labelIds": message["labelIds"]}}
        box.history.append({"id": str(history_id), "messages": [ref], kind: [entry]})

    def insert(self, call: Call) -> dict[str, Any]:
        box = self.box(call)
        body = call.body or {}
        try:
            raw = base64.urlsafe_b64decode(str(body.get("raw", "")) + "==")
        except ValueError:
            raise bad_request("Invalid raw message.") from None
        if not raw:
            raise bad_request(
                "'raw' RFC822 payload message string or uploading message via /upload/* URL "
                "required",
                "invalidArgument",
            )
        label_ids = list(body.get("labelIds") or [])
        for label_id in label_ids:
            if label_id not in box.labels:
                raise bad_request(f"Invalid label: {label_id}")
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        message_id = secrets.token_hex(8)
        thread_id = self._thread_of(box, parsed) or message_id
        message = {
            "id": message_id,
            "threadId": thread_id,
            "labelIds": label_ids,
            "snippet": _snippet(parsed),
            "sizeEstimate": len(raw),
            "internalDate": str(int(time.time() * 1000)),
            "_raw": raw,
            "_message_id": str(parsed.get("Message-ID", "")).strip(),
        }
        box.messages[message_id] = message
        self._record(call, box, "messagesAdded", message)
        return _public(message, "minimal")

    def _thread_of(self, box: Mailbox, parsed: email.message.Message) -> str | None:
        refs = f"{parsed.get('In-Reply-To', '')} {parsed.get('References', '')}".split()
        for message in box.messages.values():
            if message["_message_id"] and message["_message_id"] in refs:
                return str(message["threadId"])
        return None

    def _message(self, call: Call, key: str = "id") -> tuple[Mailbox, dict[str, Any]]:
        box = self.box(call)
        message = box.messages.get(str(call.params[key]))
        if message is None:
            raise not_found("Requested entity was not found.")
        return box, message

    def get(self, call: Call) -> dict[str, Any]:
        _, message = self._message(call)
        return _public(message, str(call.params.get("format", "full")))

    def list(self, call: Call) -> dict[str, Any]:
        box = self.box(call)
        wanted = set(call.params.get("labelIds", []))
        query = str(call.params.get("q", ""))
        for term in query.split():
            if term.startswith("label:"):
                name = term.removeprefix("label:").replace("-", " ").lower()
                ids = {i for i, lab in box.labels.items() if lab["name"].lower() == name}
                wanted |= ids or {"__none__"}
        spam_trash = bool(call.params.get("includeSpamTrash"))
        chosen = [
            m
            for m in sorted(box.messages.values(), key=lambda m: -int(m["historyId"]))
            if wanted <= set(m["labelIds"])
            and (spam_trash or not {"SPAM", "TRASH"} & set(m["labelIds"]))
        ]
        size = min(int(call.params.get("maxResults", 100)), 500)
        items, token = page(chosen, call.params.get("pageToken"), size)
        answer: dict[str, Any] = {
            "messages": [{"id": m["id"], "threadId": m["threadId"]} for m in items],
            "resultSizeEstimate": len(chosen),
        }
        if token:
            answer["nextPageToken"] = token
        if not items:
            del answer["messages"]
        return answer

    def modify(self, call: Call) -> dict[str, Any]:
        box, message = self._message(call)
        body = call.body or {}
        adding = [x for x in body.get("addLabelIds", []) if x not in message["labelIds"]]
        removing = [x for x in body.get("removeLabelIds", []) if x in message["labelIds"]]
        for label_id in adding + removing:
            if label_id not in box.labels:
                raise bad_request(f"Invalid label: {label_id}")
        message["labelIds"] = [x for x in message["labelIds"] if x not in removing] + adding
        if adding:
            self._record(call, box, "labelsAdded", message, labelIds=adding)
        if removing:
            self._record(call, box, "labelsRemoved", message, labelIds=removing)
        return _public(message, "minimal")

    def delete(self, call: Call) -> None:
        box, message = self._message(call)
        del box.messages[message["id"]]
        self._record(call, box, "messagesDeleted", message)

    def trash(self, call: Call) -> dict[str, Any]:
        call.body = {"addLabelIds": ["TRASH"], "removeLabelIds": ["INBOX"]}
        return self.modify(call)

    def profile(self, call: Call) -> dict[str, Any]:
        box = self.box(call)
        return {
            "emailAddress": call.user,
            "messagesTotal": len(box.messages),
            "threadsTotal": len({m["threadId"] for m in box.messages.values()}),
            "historyId": str(self.seq.current),
        }

    def history(self, call: Call) -> dict[str, Any]:
        box = self.box(call)
        try:
            start = int(str(call.params["startHistoryId"]))
        except (KeyError, ValueError):
            raise bad_request("Invalid startHistoryId") from None
        # Older than what is kept, or from another run of the emulator (newer than anything).
        if start < box.history_floor or start > self.seq.current:
            raise ApiError(404, "notFound", "Requested entity was not found.")
        label = call.params.get("labelId")
        # historyTypes name kinds in the singular (messageAdded); records key them plural.
        types = {_HISTORY_KEYS[t] for t in call.params.get("historyTypes", [])}
        chosen = []
        for record in box.history:
            if int(record["id"]) <= start:
                continue
            kinds = {k for k in record if k not in {"id", "messages"}}
            if types and not kinds & types:
                continue
            if label and not any(
                label in e["message"]["labelIds"] or label in e.get("labelIds", [])
                for k in kinds
                for e in record[k]
            ):
                continue
            chosen.append(record)
        size = min(int(call.params.get("maxResults", 100)), 500)
        items, token = page(chosen, call.params.get("pageToken"), size)
        answer: dict[str, Any] = {"historyId": str(self.seq.current)}
        if items:
            answer["history"] = items
        if token:
            answer["nextPageToken"] = token
        return answer

    def watch(self, call: Call) -> dict[str, Any]:
        box = self.box(call)
        body = call.body or {}
        if not str(body.get("topicName", "")).startswith("projects/"):
            raise bad_request("Invalid topicName does not match projects/*/topics/*")
        expiration = int(time.time() * 1000) + 7 * 24 * 3600 * 1000
        box.watch = {"topicName": body["topicName"], "labelIds": body.get("labelIds", [])}
        return {"historyId": str(self.seq.current), "expiration": str(expiration)}

    def stop(self, call: Call) -> None:
        self.box(call).watch = None


def _snippet(parsed: email.message.Message) -> str:
    try:
        payload = parsed.get_payload(decode=True)
    except (ValueError, TypeError):
        return ""
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace").strip()[:200]
    return ""


def _public(message: dict[str, Any], form: str) -> dict[str, Any]:
    answer = {k: v for k, v in message.items() if not k.startswith("_")}
    if form == "raw":
        answer["raw"] = base64.urlsafe_b64encode(message["_raw"]).decode()
    elif form in {"full", "metadata"}:
        parsed = email.message_from_bytes(message["_raw"], policy=email.policy.compat32)
        answer["payload"] = {
            "partId": "",
            "mimeType": parsed.get_content_type(),
            "filename": "",
            "headers": [{"name": k, "value": str(v)} for k, v in parsed.items()],
            "body": {"size": len(message["_raw"])},
        }
    elif form == "minimal":
        answer.pop("payload", None)
    return answer
