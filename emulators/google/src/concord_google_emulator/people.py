"""People v1: the user's contacts with sync tokens, contact groups and etags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from concord_google_emulator.core import (
    ApiError,
    Call,
    Sequence,
    bad_request,
    decode_token,
    encode_token,
    new_id,
    not_found,
    page,
    rfc3339,
)

__all__ = ["PeopleStore"]

_PERSON_FIELDS = {
    "names",
    "emailAddresses",
    "phoneNumbers",
    "organizations",
    "addresses",
    "biographies",
    "memberships",
    "urls",
    "birthdays",
    "nicknames",
    "userDefined",
    "clientData",
    "metadata",
}
# Batch limits and error shapes from the People v1 reference (developers.google.com/people/api/
# rest/v1/people/batchCreateContacts, batchUpdateContacts, batchDeleteContacts, getBatchGet and
# BatchCreateContactsErrorDetails / BatchUpdateContactsErrorDetails): up to 200 contacts a
# create, update or get, 500 resource names a delete; a batch with a bad contact fails as a whole,
# its error details naming each bad contact (by index for creates, by resource name for
# updates) with a google.rpc.Status, so the client can resend the others.
_BATCH_WRITE = 200
_BATCH_DELETE = 500
# More than one of these is a 400: each is "a singleton for contact sources" (People v1
# reference, people/createContact).
_SINGLETONS = ("names", "biographies", "birthdays", "genders")
_EXPIRED = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "EXPIRED_SYNC_TOKEN",
    "domain": "people.googleapis.com",
}


@dataclass
class Contacts:
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    epoch: int = 0


class PeopleStore:
    def __init__(self, seq: Sequence) -> None:
        self.seq = seq
        self.users: dict[str, Contacts] = {}

    def add_user(self, user: str) -> None:
        if user in self.users:
            return
        contacts = Contacts()
        for system in ("myContacts", "starred"):
            contacts.groups[f"contactGroups/{system}"] = {
                "resourceName": f"contactGroups/{system}",
                "etag": f"g{self.seq.take()}",
                "groupType": "SYSTEM_CONTACT_GROUP",
                "name": system,
                "formattedName": system,
            }
        self.users[user] = contacts

    def invalidate_sync_tokens(self, user: str) -> None:
        self.users[user].epoch += 1

    def _stamp(self, person: dict[str, Any], *, deleted: bool = False) -> dict[str, Any]:
        seq = self.seq.take()
        person["etag"] = f"%E{seq}"
        person["_seq"] = seq
        source = {
            "type": "CONTACT",
            "id": person["resourceName"].split("/")[-1],
            "etag": person["etag"],
            "updateTime": rfc3339(),
        }
        person["metadata"] = {"sources": [source], "objectType": "PERSON"}
        if deleted:
            person["metadata"]["deleted"] = True
        return person

    def _fields(self, call: Call, name: str, required: bool = True) -> set[str]:
        return _mask(str(call.params.get(name) or ""), name, required)

    def _view(self, person: dict[str, Any], fields: set[str]) -> dict[str, Any]:
        keep = fields | {"resourceName", "etag", "metadata"}
        return {k: v for k, v in person.items() if k in keep}

    def connections(self, call: Call) -> dict[str, Any]:
        if call.params["resourceName"] != "people/me":
            raise bad_request("Only people/me is valid.")
        contacts = self.users[call.user]
        fields = self._fields(call, "personFields")
        token = call.params.get("syncToken")
        ordered = sorted(contacts.people.values(), key=lambda p: p["_seq"])
        if token:
            try:
                values = decode_token(str(token))
                since, epoch = int(values["s"]), int(values["e"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("Sync token is invalid.") from None
            if epoch != contacts.epoch or values.get("b") != self.seq.boot:
                raise ApiError(
                    400,
                    "failedPrecondition",
                    "Sync token is expired. Clear local cache and retry call without the sync "
                    "token.",
                    status="FAILED_PRECONDITION",
                    details=[_EXPIRED],
                )
            chosen = [p for p in ordered if p["_seq"] > since]
        else:
            chosen = [p for p in ordered if not p["metadata"].get("deleted")]
        mark = self.seq.current
        size = int(call.params.get("pageSize") or 100)
        items, next_page = page(chosen, call.params.get("pageToken"), size)
        answer: dict[str, Any] = {
            "connections": [self._view(p, fields) for p in items],
            "totalPeople": len(chosen),
            "totalItems": len(chosen),
        }
        if next_page:
            answer["nextPageToken"] = next_page
        elif call.params.get("requestSyncToken") or token:
            answer["nextSyncToken"] = encode_token(s=mark, e=contacts.epoch, b=self.seq.boot)
        if not items:
            del answer["connections"]
        return answer

    def create(self, call: Call) -> dict[str, Any]:
        contacts = self.users[call.user]
        body = _writable(call.body or {})
        self._check_groups(contacts, body)
        self._check_singletons(body)
        person = self._insert(contacts, body)
        return self._view(person, self._fields(call, "personFields", required=False) or set(body))

    def _insert(self, contacts: Contacts, body: dict[str, Any]) -> dict[str, Any]:
        person = {"resourceName": f"people/c{new_id(19)}"} | body
        person.setdefault("memberships", [])
        _ensure_my_contacts(person)
        contacts.people[person["resourceName"]] = self._stamp(person)
        return person

    def _check_groups(self, contacts: Contacts, body: dict[str, Any]) -> None:
        for membership in body.get("memberships", []):
            name = membership.get("contactGroupMembership", {}).get("contactGroupResourceName")
            if name and name not in contacts.groups:
                raise bad_request(f"Contact group {name} not found.")

    def _check_singletons(self, body: dict[str, Any]) -> None:
        for name in _SINGLETONS:
            if len(body.get(name) or ()) > 1:
                raise bad_request(f"Invalid person.{name}: a contact has at most one.")

    def _live(self, contacts: Contacts, resource: str) -> dict[str, Any]:
        person = contacts.people.get(resource)
        if person is None or person["metadata"].get("deleted"):
            raise not_found("Requested entity was not found.")
        return person

    def _person(self, call: Call) -> dict[str, Any]:
        return self._live(self.users[call.user], str(call.params["resourceName"]))

    def get(self, call: Call) -> dict[str, Any]:
        return self._view(self._person(call), self._fields(call, "personFields"))

    def batch_get(self, call: Call) -> dict[str, Any]:
        """people.getBatchGet: up to 200 resource names a call, each answered on its own (a
        missing contact is a 404 PersonResponse, not a failed call)."""
        contacts = self.users[call.user]
        names = [str(n) for n in call.params.get("resourceNames") or []]
        _check_size(len(names), _BATCH_WRITE, "resourceNames")
        fields = self._fields(call, "personFields")
        responses = []
        for name in names:
            try:
                responses.append(_response(self._view(self._live(contacts, name), fields)))
            except ApiError as exc:
                responses.append(
                    {
                        "requestedResourceName": name,
                        "httpStatusCode": exc.code,
                        "status": _rpc_status(exc),
                    }
                )
        return {"responses": responses}

    def _check_update(self, contacts: Contacts, resource: str, body: dict[str, Any]) -> None:
        person = self._live(contacts, resource)
        if body.get("etag") != person["etag"]:
            raise ApiError(
                400,
                "failedPrecondition",
                "Request person.etag is different than the current person.etag. Clear local "
                "cache and get the latest person.",
                status="FAILED_PRECONDITION",
            )
        self._check_groups(contacts, body)
        self._check_singletons(body)

    def _replace(
        self, contacts: Contacts, resource: str, body: dict[str, Any], fields: set[str]
    ) -> dict[str, Any]:
        person = contacts.people[resource]
        for name in fields:
            if name in body:
                person[name] = body[name]
            else:
                person.pop(name, None)
        _ensure_my_contacts(person)
        return self._stamp(person)

    def update(self, call: Call) -> dict[str, Any]:
        contacts = self.users[call.user]
        resource = str(call.params["resourceName"])
        body = call.body or {}
        self._check_update(contacts, resource, body)
        fields = self._fields(call, "updatePersonFields")
        person = self._replace(contacts, resource, body, fields)
        return self._view(person, self._fields(call, "personFields", required=False) or fields)

    def _remove(self, contacts: Contacts, resource: str) -> None:
        contacts.people[resource] = self._stamp({"resourceName": resource}, deleted=True)

    def delete(self, call: Call) -> None:
        person = self._person(call)
        self._remove(self.users[call.user], person["resourceName"])

    # ---- batches: every contact is checked before any is written (a batch fails as a whole)

    def batch_create(self, call: Call) -> dict[str, Any]:
        contacts = self.users[call.user]
        request = call.body or {}
        wanted = request.get("contacts") or []
        _check_size(len(wanted), _BATCH_WRITE, "contacts")
        # An empty readMask skips the post-mutate read: the answer holds no people.
        read = _mask(str(request.get("readMask") or ""), "readMask", required=False)
        bodies = [_writable(entry.get("contactPerson") or {}) for entry in wanted]
        errors: dict[str, Any] = {}
        for index, body in enumerate(bodies):
            try:
                self._check_groups(contacts, body)
                self._check_singletons(body)
                _check_refused(call, index)
            except ApiError as exc:
                errors[str(index)] = _rpc_status(exc)
        if errors:
            raise _batch_failed("BatchCreateContactsErrorDetails", errors)
        made = [self._insert(contacts, body) for body in bodies]
        if not read:
            return {}
        return {"createdPeople": [_response(self._view(p, read)) for p in made]}

    def batch_update(self, call: Call) -> dict[str, Any]:
        contacts = self.users[call.user]
        request = call.body or {}
        wanted: dict[str, dict[str, Any]] = request.get("contacts") or {}
        _check_size(len(wanted), _BATCH_WRITE, "contacts")
        fields = _mask(str(request.get("updateMask") or ""), "updateMask")
        read = _mask(str(request.get("readMask") or ""), "readMask", required=False)
        errors: dict[str, Any] = {}
        for index, (resource, body) in enumerate(wanted.items()):
            try:
                self._check_update(contacts, resource, body)
                _check_refused(call, index)
            except ApiError as exc:
                errors[resource] = _rpc_status(exc)
        if errors:
            raise _batch_failed("BatchUpdateContactsErrorDetails", errors)
        made = {r: self._replace(contacts, r, b, fields) for r, b in wanted.items()}
        if not read:
            return {}
        return {"updateResult": {r: _response(self._view(p, read)) for r, p in made.items()}}

    def batch_delete(self, call: Call) -> dict[str, Any]:
        contacts = self.users[call.user]
        names = [str(n) for n in (call.body or {}).get("resourceNames") or []]
        _check_size(len(names), _BATCH_DELETE, "resourceNames")
        # One missing contact fails the whole request, and nothing is deleted.
        for name in names:
            self._live(contacts, name)
        for name in dict.fromkeys(names):
            self._remove(contacts, name)
        return {}

    def groups_list(self, call: Call) -> dict[str, Any]:
        groups = list(self.users[call.user].groups.values())
        return {"contactGroups": groups, "totalItems": len(groups)}

    def group_create(self, call: Call) -> dict[str, Any]:
        contacts = self.users[call.user]
        name = str((call.body or {}).get("contactGroup", {}).get("name") or "")
        if not name:
            raise bad_request("Contact group name is required.")
        if any(g["name"] == name for g in contacts.groups.values()):
            raise ApiError(409, "duplicate", "Contact group name already exists.")
        resource = f"contactGroups/{new_id(12)}"
        group = {
            "resourceName": resource,
            "etag": f"g{self.seq.take()}",
            "groupType": "USER_CONTACT_GROUP",
            "name": name,
            "formattedName": name,
        }
        contacts.groups[resource] = group
        return group

    def members_modify(self, call: Call) -> dict[str, Any]:
        contacts = self.users[call.user]
        group = str(call.params["resourceName"])
        if group not in contacts.groups:
            raise not_found("Requested entity was not found.")
        body = call.body or {}
        missing = []
        for name in body.get("resourceNamesToAdd", []) + body.get("resourceNamesToRemove", []):
            person = contacts.people.get(name)
            if person is None or person["metadata"].get("deleted"):
                missing.append(name)
                continue
            others = [
                m
                for m in person.get("memberships", [])
                if m.get("contactGroupMembership", {}).get("contactGroupResourceName") != group
            ]
            if name in body.get("resourceNamesToAdd", []):
                others.append(_membership(group))
            person["memberships"] = others
            self._stamp(person)
        return {"notFoundResourceNames": missing} if missing else {}


def _mask(mask: str, name: str, required: bool = True) -> set[str]:
    fields = {f.strip() for f in mask.split(",") if f.strip()}
    if required and not fields:
        raise bad_request(f"{name} mask is required. Please specify one or more valid paths.")
    unknown = fields - _PERSON_FIELDS
    if unknown:
        raise bad_request(f"Invalid {name} mask path: {sorted(unknown)[0]}")
    return fields


def _writable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k in _PERSON_FIELDS - {"metadata"}}


def _check_size(count: int, limit: int, name: str) -> None:
    if not count:
        raise bad_request(f"Request must contain at least one of {name}.")
    if count > limit:
        raise bad_request(f"Too many {name} in the request: at most {limit} are allowed.")


def _check_refused(call: Call, index: int) -> None:
    if call.refuse_contact == index:
        raise bad_request("Invalid contact: a value cannot be stored.")


def _rpc_status(exc: ApiError) -> dict[str, Any]:
    """An error as the google.rpc.Status a batch's error details carry per contact."""
    codes = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "FAILED_PRECONDITION": 9}
    return {"code": codes.get(exc.status, 2), "message": exc.message}


def _batch_failed(kind: str, errors: dict[str, Any]) -> ApiError:
    return ApiError(
        400,
        "badRequest",
        "Request contains an invalid argument.",
        status="INVALID_ARGUMENT",
        details=[
            {"@type": f"type.googleapis.com/google.people.v1.{kind}", "contactErrors": errors}
        ],
    )


def _response(person: dict[str, Any]) -> dict[str, Any]:
    """A PersonResponse of a batch write: the person read back and the per-person status."""
    return {
        "requestedResourceName": person["resourceName"],
        "httpStatusCode": 200,
        "status": {},
        "person": person,
    }


def _membership(group: str) -> dict[str, Any]:
    return {
        "contactGroupMembership": {
            "contactGroupId": group.split("/")[-1],
            "contactGroupResourceName": group,
        }
    }


def _ensure_my_contacts(person: dict[str, Any]) -> None:
    names = {
        m.get("contactGroupMembership", {}).get("contactGroupResourceName")
        for m in person.get("memberships", [])
    }
    if "contactGroups/myContacts" not in names:
        person.setdefault("memberships", []).append(_membership("contactGroups/myContacts"))
