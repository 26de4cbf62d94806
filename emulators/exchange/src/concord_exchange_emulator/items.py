"""Item XML: schema order, response shapes, field updates, and values for restrictions/sorting."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.errors
import email.policy
import email.utils
import hashlib
import re
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from lxml import etree

from concord_exchange_emulator import attachments as att
from concord_exchange_emulator import recurrence as rec
from concord_exchange_emulator import tasks
from concord_exchange_emulator.schema import boolean_fields, field_order
from concord_exchange_emulator.xmlns import T, local, sub, t

ITEM_TYPES = {
    "Item": "ItemType",
    "Message": "MessageType",
    "CalendarItem": "CalendarItemType",
    "Task": "TaskType",
    "Contact": "ContactItemType",
    "DistributionList": "DistributionListType",
    "PostItem": "PostItemType",
}
ITEM_CLASSES = {
    "Item": "IPM.Note",
    "Message": "IPM.Note",
    "CalendarItem": "IPM.Appointment",
    "Task": "IPM.Task",
    "Contact": "IPM.Contact",
    "DistributionList": "IPM.DistList",
    "PostItem": "IPM.Post",
}
# Fields the server owns: a client's values for them are ignored on create.
SERVER_FIELDS = {
    "ItemId",
    "ParentFolderId",
    "DateTimeCreated",
    "LastModifiedTime",
    "Size",
    "EffectiveRights",
}
# FieldURIs whose element has another name.
URI_ELEMENTS = {
    "contacts:EmailAddress": "EmailAddresses",
    "contacts:PhoneNumber": "PhoneNumbers",
    "contacts:ImAddress": "ImAddresses",
    "contacts:PhysicalAddress": "PhysicalAddresses",
}
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d(T\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?)?$")


class QueryNotSupported(Exception):
    """A restriction or sort the emulator cannot evaluate faithfully (never a wrong answer)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def element_for_uri(uri: str) -> str:
    """`calendar:Start` → `Start`; `contacts:PhysicalAddress:Street` → `PhysicalAddresses`."""
    parts = uri.split(":")
    key = ":".join(parts[:2])
    return URI_ELEMENTS.get(key, parts[1] if len(parts) > 1 else uri)


def normalise_booleans(node: etree._Element) -> None:
    """xs:boolean allows 1/0, which exchangelib sends; Exchange answers true/false."""
    booleans = boolean_fields(ITEM_TYPES.get(local(node.tag), "ItemType"))
    for child in node:
        if local(child.tag) in booleans and child.text in {"1", "0"}:
            child.text = "true" if child.text == "1" else "false"


def sort_children(node: etree._Element) -> etree._Element:
    normalise_booleans(node)
    order = field_order(ITEM_TYPES.get(local(node.tag), "ItemType"))
    rank = {name: i for i, name in enumerate(order)}
    children = list(node)
    for child in children:
        node.remove(child)
    # Stable: repeated elements (ExtendedProperty) keep their relative order.
    for child in sorted(children, key=lambda c: rank.get(local(c.tag), len(rank))):
        node.append(child)
    return node


def _ext_key(uri: etree._Element) -> tuple[str, ...]:
    return tuple(
        (uri.get(a) or "").lower()
        for a in (
            "DistinguishedPropertySetId",
            "PropertySetId",
            "PropertyTag",
            "PropertyName",
            "PropertyId",
        )
    )


def _ext_uri_of(prop: etree._Element) -> etree._Element | None:
    return prop.find(t("ExtendedFieldURI"))


def _find_ext(node: etree._Element, uri: etree._Element) -> etree._Element | None:
    key = _ext_key(uri)
    for prop in node.iterfind(t("ExtendedProperty")):
        found = _ext_uri_of(prop)
        if found is not None and _ext_key(found) == key:
            return prop
    return None


# Creating


def prepare_new(
    source: etree._Element, *, owner: str, owner_name: str
) -> tuple[etree._Element, str]:
    """Copy a client's item for storage, with the fields Exchange sets itself; (item, kind)."""
    kind = local(source.tag)
    item = etree.Element(t(kind), nsmap={"t": T})
    for child in source:
        if local(child.tag) not in SERVER_FIELDS:
            item.append(_copy(child))
    now = now_iso()
    if item.find(t("ItemClass")) is None:
        sub(item, t("ItemClass"), ITEM_CLASSES[kind])
    sub(item, t("DateTimeCreated"), now)
    sub(item, t("LastModifiedTime"), now)
    if kind == "Message":
        _fill_from_mime(item)
        if item.find(t("IsRead")) is None:
            sub(item, t("IsRead"), "false")
        if item.find(t("InternetMessageId")) is None:
            sub(item, t("InternetMessageId"), f"<{uuid.uuid4().hex}@emulator.concord.test>")
    # Bytes the item takes in the store; for a message, its MIME (what a client downloads).
    mime_text = item.findtext(t("MimeContent")) or ""
    try:
        size = len(base64.b64decode(mime_text)) if mime_text else len(etree.tostring(item))
    except ValueError:
        size = len(mime_text)
    sub(item, t("Size"), str(size))
    if item.find(t("DateTimeReceived")) is None:
        # Exchange stamps every item, not only mail, with the time it reached the store.
        sub(item, t("DateTimeReceived"), now)
    if kind == "CalendarItem":
        if item.find(t("UID")) is None:
            sub(item, t("UID"), uuid.uuid4().hex.upper())
        if item.find(t("Organizer")) is None:
            org = sub(item, t("Organizer"))
            mbx = sub(org, t("Mailbox"))
            sub(mbx, t("Name"), owner_name)
            sub(mbx, t("EmailAddress"), owner)
            sub(mbx, t("RoutingType"), "SMTP")
        has_attendees = any(
            item.find(t(n)) is not None
            for n in ("RequiredAttendees", "OptionalAttendees", "Resources")
        )
        for attendee in item.iter(t("Attendee")):
            if attendee.find(t("ResponseType")) is None:
                sub(attendee, t("ResponseType"), "Unknown")
                sort_attendee(attendee)
        if item.find(t("IsMeeting")) is None:
            sub(item, t("IsMeeting"), "true" if has_attendees else "false")
        # Set by CreateItem or UpdateItem when they send the invitations (see `invited`).
        if item.find(t("MeetingRequestWasSent")) is None:
            sub(item, t("MeetingRequestWasSent"), "false")
        if item.find(t("MyResponseType")) is None:
            sub(item, t("MyResponseType"), "Organizer")
        if item.find(t("IsAllDayEvent")) is None:
            sub(item, t("IsAllDayEvent"), "false")
        if item.find(t("IsRecurring")) is None:
            # Only occurrences and exceptions are "recurring"; a series' master is not.
            sub(item, t("IsRecurring"), "false")
        if item.find(t("CalendarItemType")) is None:
            recurring = item.find(t("Recurrence")) is not None
            sub(item, t("CalendarItemType"), "RecurringMaster" if recurring else "Single")
    if kind == "Task":
        tasks.stamp(item, created=True)
    if kind == "DistributionList" and item.find(t("FileAs")) is None:
        # A list is filed under its name, as Outlook and Exchange file it.
        sub(item, t("FileAs"), item.findtext(t("DisplayName")) or "")
    attached = item.find(t("Attachments"))
    if attached is not None:
        # Attachments given with the item (Exchange 2013 and later): each stored with its key.
        item.remove(attached)
        for attachment in attached:
            att.add(
                item,
                att.prepare(
                    attachment,
                    now,
                    lambda inner: prepare_new(inner, owner=owner, owner_name=owner_name)[0],
                ),
            )
    apply_store_rules(item)
    return sort_children(item), kind


# Exchange keeps at most 255 characters of a subject (the rest is cut off on save).
SUBJECT_MAX = 255
# Name properties a longer value cannot be written to (Exchange refuses the update).
NAME_FIELDS_MAX = {"GivenName": 255, "MiddleName": 255, "Surname": 255}


def apply_store_rules(item: etree._Element) -> None:
    """What Exchange does to an item whenever it is saved (created or updated)."""
    normalise_booleans(item)
    subject = item.find(t("Subject"))
    if subject is not None and subject.text and len(subject.text) > SUBJECT_MAX:
        subject.text = subject.text[:SUBJECT_MAX]
    for mailbox in item.iter(t("Mailbox")):
        # Exchange resolves every recipient: one it knows no name for is named by its address.
        address = mailbox.findtext(t("EmailAddress"))
        if address and mailbox.find(t("Name")) is None:
            name = etree.Element(t("Name"))
            name.text = address
            mailbox.insert(0, name)
    rec.snap_all_day(item)
    rec.date_recurrence_range(item)
    for member in item.iter(t("Member")):
        # Exchange keys each member of a list and states it (Normal unless it was demoted).
        if member.get("Key") is None:
            member.set("Key", base64.b64encode(uuid.uuid4().bytes).decode())
        if member.find(t("Status")) is None:
            sub(member, t("Status"), "Normal")
    if local(item.tag) == "Task":
        tasks.stamp(item, created=False)


def sort_attendee(attendee: etree._Element) -> None:
    rank = {"Mailbox": 0, "ResponseType": 1, "LastResponseTime": 2, "ProposedStart": 3}
    children = sorted(attendee, key=lambda c: rank.get(local(c.tag), 9))
    for child in children:
        attendee.append(child)


def _copy(node: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(node))


# What the email package raises on malformed headers; such a message is still stored (as Exchange
# stores it), only without the fields derived from the broken headers.
_MIME_ERRORS = (ValueError, TypeError, IndexError, AttributeError, email.errors.MessageError)


def _fill_from_mime(item: etree._Element) -> None:
    """The fields Exchange derives from a message's MIME when it stores one."""
    mime = item.find(t("MimeContent"))
    if mime is None or not mime.text:
        return
    try:
        raw = base64.b64decode(mime.text)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
    except _MIME_ERRORS:
        return
    for name, fill in (
        ("Subject", _subject),
        ("Message-ID", _message_id),
        ("Date", _sent),
        ("From", _sender),
        ("To", _recipients("ToRecipients")),
        ("Cc", _recipients("CcRecipients")),
        ("In-Reply-To", _text_field("InReplyTo")),
        ("References", _text_field("References")),
    ):
        try:
            if parsed.get(name) is not None:
                fill(item, parsed[name])
        except _MIME_ERRORS:
            continue
    for fill_from_message in (_body, _thread):
        try:
            fill_from_message(item, parsed)
        except _MIME_ERRORS:
            continue


def _recipients(element: str) -> Callable[[etree._Element, Any], None]:
    def fill(item: etree._Element, value: Any) -> None:
        addresses: tuple[Any, ...] = getattr(value, "addresses", ())
        if item.find(t(element)) is not None or not addresses:
            return
        container = sub(item, t(element))
        for address in addresses:
            mbx = sub(container, t("Mailbox"))
            if address.display_name:
                sub(mbx, t("Name"), address.display_name)
            sub(mbx, t("EmailAddress"), address.addr_spec)

    return fill


def _text_field(element: str) -> Callable[[etree._Element, Any], None]:
    def fill(item: etree._Element, value: Any) -> None:
        text = " ".join(str(value).split())
        if item.find(t(element)) is None and text:
            sub(item, t(element), text)

    return fill


def _body(item: etree._Element, parsed: Any) -> None:
    """The plain-text part, else the HTML one (as Exchange shows a message); attachments set
    HasAttachments."""
    if item.find(t("Body")) is None:
        part = parsed.get_body(preferencelist=("plain", "html"))
        if part is not None:
            kind = "HTML" if part.get_content_subtype() == "html" else "Text"
            sub(item, t("Body"), part.get_content(), BodyType=kind)
    if item.find(t("HasAttachments")) is None:
        attached = any(True for _ in parsed.iter_attachments()) if parsed.is_multipart() else False
        sub(item, t("HasAttachments"), "true" if attached else "false")


def _thread(item: etree._Element, parsed: Any) -> None:
    """One conversation per thread: Exchange keys it on the thread's first message, which is
    the first of References (else In-Reply-To, else the message itself)."""
    if item.find(t("ConversationId")) is not None:
        return
    chain = " ".join(str(parsed.get(h, "")) for h in ("References", "In-Reply-To")).split()
    root = chain[0] if chain else (item.findtext(t("InternetMessageId")) or "")
    if not root:
        return
    digest = hashlib.sha256(root.strip().encode()).digest()[:24]
    sub(item, t("ConversationId"), Id=base64.b64encode(b"CONV" + digest).decode())
    # Whitespace collapsed: a folded header keeps its tab, and the topic groups a thread.
    subject = " ".join((item.findtext(t("Subject")) or "").split())
    topic = re.sub(r"^((re|fwd?|aw|wg)\s*:\s*)+", "", subject, flags=re.IGNORECASE)
    if item.find(t("ConversationTopic")) is None and topic:
        sub(item, t("ConversationTopic"), topic)


def _subject(item: etree._Element, value: Any) -> None:
    if item.find(t("Subject")) is None:
        sub(item, t("Subject"), str(value))


def _message_id(item: etree._Element, value: Any) -> None:
    if item.find(t("InternetMessageId")) is None and str(value).strip():
        sub(item, t("InternetMessageId"), str(value).strip())


def _sent(item: etree._Element, value: Any) -> None:
    if item.find(t("DateTimeSent")) is None:
        sent = email.utils.parsedate_to_datetime(str(value))
        stamp = sent.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sub(item, t("DateTimeSent"), stamp)
        sub(item, t("DateTimeReceived"), stamp)


def _sender(item: etree._Element, value: Any) -> None:
    addresses: tuple[Any, ...] = getattr(value, "addresses", ())
    if item.find(t("From")) is not None or not addresses:
        return
    # Sender and From are the same person unless someone sent on behalf of another.
    for name in ("Sender", "From"):
        frm = sub(sub(item, t(name)), t("Mailbox"))
        if addresses[0].display_name:
            sub(frm, t("Name"), addresses[0].display_name)
        sub(frm, t("EmailAddress"), addresses[0].addr_spec)


def synthesize_mime(item: etree._Element) -> str:
    """MIME for a message created from fields: Exchange can always return MimeContent."""
    msg = EmailMessage()
    msg["Subject"] = item.findtext(t("Subject")) or ""
    msg["Message-ID"] = item.findtext(t("InternetMessageId")) or ""
    sender = item.find(f"{t('From')}/{t('Mailbox')}/{t('EmailAddress')}")
    if sender is not None and sender.text:
        msg["From"] = sender.text
    msg.set_content(item.findtext(t("Body")) or "")
    return base64.b64encode(msg.as_bytes()).decode()


# Rendering


class Shape:
    """An ItemShape/FolderShape: which fields a response carries."""

    def __init__(self, node: etree._Element | None) -> None:
        self.base = "AllProperties"
        self.mime = False
        self.names: set[str] = set()
        self.extended: list[etree._Element] = []
        self.every_field = False
        if node is None:
            return
        self.base = node.findtext(t("BaseShape")) or "AllProperties"
        self.mime = (node.findtext(t("IncludeMimeContent")) or "").lower() == "true"
        extra = node.find(t("AdditionalProperties"))
        for path in extra if extra is not None else ():
            name = local(path.tag)
            if name in {"FieldURI", "IndexedFieldURI"}:
                self.names.add(element_for_uri(path.get("FieldURI", "")))
            elif name == "ExtendedFieldURI":
                self.extended.append(path)
        if "MimeContent" in self.names:
            self.mime = True

    @classmethod
    def everything(cls) -> Shape:
        """Every stored field, extended properties included: what restrictions are evaluated on."""
        shape = cls(None)
        shape.every_field = True
        return shape

    def wants(self, child: etree._Element) -> bool:
        if self.every_field:
            return True
        name = local(child.tag)
        if name == "MimeContent":
            return self.mime
        if name == "ExtendedProperty":
            uri = _ext_uri_of(child)
            return uri is not None and any(_ext_key(uri) == _ext_key(e) for e in self.extended)
        if name in self.names:
            return True
        return self.base != "IdOnly"


def render(
    stored: etree._Element,
    shape: Shape,
    *,
    item_id: str,
    change_key: str,
    folder_id: str,
    folder_change_key: str,
) -> etree._Element:
    out = etree.Element(stored.tag, nsmap={"t": T})
    for child in stored:
        if shape.wants(child):
            out.append(_copy(child))
    if shape.mime and out.find(t("MimeContent")) is None and local(stored.tag) == "Message":
        sub(out, t("MimeContent"), synthesize_mime(stored), CharacterSet="UTF-8")
    sub(out, t("ItemId"), Id=item_id, ChangeKey=change_key)
    if shape.base != "IdOnly" or "ParentFolderId" in shape.names:
        sub(out, t("ParentFolderId"), Id=folder_id, ChangeKey=folder_change_key)
    return sort_children(out)


# Updating


def apply_updates(stored: etree._Element, updates: etree._Element) -> set[str]:
    """Apply Set/Append/DeleteItemField in place; returns the element names changed."""
    changed: set[str] = set()
    for update in updates:
        op = local(update.tag)
        path = next((c for c in update if local(c.tag).endswith("FieldURI")), None)
        if path is None:
            raise QueryNotSupported("ErrorInvalidPropertySet", "update without a field path")
        path_kind = local(path.tag)
        value_item = next((c for c in update if not local(c.tag).endswith("FieldURI")), None)
        if path_kind == "ExtendedFieldURI":
            changed.add("ExtendedProperty")
            existing = _find_ext(stored, path)
            if existing is not None:
                stored.remove(existing)
            if op != "DeleteItemField" and value_item is not None:
                new = value_item.find(t("ExtendedProperty"))
                if new is not None:
                    stored.append(_copy(new))
            continue
        name = element_for_uri(path.get("FieldURI", ""))
        changed.add(name)
        existing_el = stored.find(t(name))
        if path_kind == "IndexedFieldURI":
            _update_indexed(stored, existing_el, name, path, value_item, op)
            continue
        if op == "DeleteItemField":
            if existing_el is not None:
                stored.remove(existing_el)
            continue
        new_el = value_item.find(t(name)) if value_item is not None else None
        if new_el is None:
            raise QueryNotSupported(
                "ErrorInvalidPropertySet", f"no {name} element in the update for {name}"
            )
        if op == "AppendToItemField" and existing_el is not None:
            if len(new_el):
                for child in new_el:
                    existing_el.append(_copy(child))
            else:
                existing_el.text = (existing_el.text or "") + (new_el.text or "")
            continue
        if existing_el is not None:
            stored.remove(existing_el)
        copied = _copy(new_el)
        for attendee in copied.iter(t("Attendee")):
            if attendee.find(t("ResponseType")) is None:
                sub(attendee, t("ResponseType"), "Unknown")
                sort_attendee(attendee)
        limit = NAME_FIELDS_MAX.get(name)
        if limit is not None and len(copied.text or "") > limit:
            raise QueryNotSupported(
                "ErrorPropertyUpdate", f"The value of {name} exceeds {limit} characters."
            )
        stored.append(copied)
    apply_store_rules(stored)
    sort_children(stored)
    return changed


def _update_indexed(
    stored: etree._Element,
    container: etree._Element | None,
    name: str,
    path: etree._Element,
    value_item: etree._Element | None,
    op: str,
) -> None:
    key = path.get("FieldIndex", "")
    uri_parts = path.get("FieldURI", "").split(":")
    sub_field = uri_parts[2] if len(uri_parts) > 2 else None
    if container is None:
        if op == "DeleteItemField":
            return
        container = sub(stored, t(name))
    entry = next((e for e in container if e.get("Key") == key), None)
    if op == "DeleteItemField":
        if entry is not None:
            if sub_field:
                for field in entry.findall(t(sub_field)):
                    entry.remove(field)
                if not len(entry):
                    container.remove(entry)
            else:
                container.remove(entry)
        if not len(container):
            stored.remove(container)
        return
    new_container = value_item.find(t(name)) if value_item is not None else None
    new_entry = None if new_container is None else next(iter(new_container), None)
    if new_entry is None:
        raise QueryNotSupported("ErrorInvalidPropertySet", f"no {name} entry in the update")
    if entry is None or not sub_field:
        if entry is not None:
            container.remove(entry)
        container.append(_copy(new_entry))
        return
    for field in new_entry:
        old = entry.find(field.tag)
        if old is not None:
            entry.remove(old)
        entry.append(_copy(field))


# Values for restrictions and sorting


def values_at(node: etree._Element, path: etree._Element) -> list[str]:
    kind = local(path.tag)
    if kind == "ExtendedFieldURI":
        prop = _find_ext(node, path)
        if prop is None:
            return []
        single = prop.find(t("Value"))
        if single is not None:
            return [single.text or ""]
        return [v.text or "" for v in prop.iterfind(f"{t('Values')}/{t('Value')}")]
    name = element_for_uri(path.get("FieldURI", ""))
    if kind == "IndexedFieldURI":
        container = node.find(t(name))
        key = path.get("FieldIndex", "")
        if container is None:
            return []
        return ["".join(str(s) for s in e.itertext()) for e in container if e.get("Key") == key]
    if name == "ItemId":
        found = node.find(t("ItemId"))
        return [found.get("Id", "")] if found is not None else []
    found_el = node.find(t(name))
    if found_el is None:
        return []
    if not len(found_el):
        return [found_el.text or ""]
    if all(local(c.tag) == "String" for c in found_el):
        # A list of strings (Categories, Children, Companies, …): any of them may match.
        return [c.text or "" for c in found_el]
    addresses = [a.text or "" for a in found_el.iter(t("EmailAddress"))]
    if addresses:
        return addresses
    raise QueryNotSupported(
        "ErrorUnsupportedPathForQuery", f"the emulator cannot compare values of {name}"
    )


def _typed(value: str) -> object:
    text = value.strip()
    if _DATETIME.match(text):
        if len(text) == 10:
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if text.lower() in {"true", "false"}:
        return text.lower() == "true"
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    return text.casefold()


def compare(a: str, b: str) -> int:
    x: Any = _typed(a)
    y: Any = _typed(b)
    # xs:boolean allows 1/0 (exchangelib sends them in restrictions), Exchange stores true/false.
    if isinstance(x, bool) and isinstance(y, float) and y in {0.0, 1.0}:
        y = bool(y)
    elif isinstance(y, bool) and isinstance(x, float) and x in {0.0, 1.0}:
        x = bool(x)
    if type(x) is not type(y):
        x, y = a.casefold(), b.casefold()
    return int(x > y) - int(x < y)


_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "IsEqualTo": lambda c: c == 0,
    "IsNotEqualTo": lambda c: c != 0,
    "IsGreaterThan": lambda c: c > 0,
    "IsGreaterThanOrEqualTo": lambda c: c >= 0,
    "IsLessThan": lambda c: c < 0,
    "IsLessThanOrEqualTo": lambda c: c <= 0,
}


def matches(node: etree._Element, expr: etree._Element) -> bool:
    """Evaluate one restriction expression against an item (or folder) element."""
    op = local(expr.tag)
    if op == "And":
        return all(matches(node, e) for e in expr)
    if op == "Or":
        return any(matches(node, e) for e in expr)
    if op == "Not":
        return not matches(node, expr[0])
    path = next((c for c in expr if local(c.tag).endswith("FieldURI")), None)
    if path is None:
        raise QueryNotSupported("ErrorInvalidRestriction", f"{op} without a field path")
    values = values_at(node, path)
    if op == "Exists":
        return bool(values)
    if op in _COMPARISONS:
        operand = expr.find(t("FieldURIOrConstant"))
        constant = operand.find(t("Constant")) if operand is not None else None
        if constant is None:
            raise QueryNotSupported(
                "ErrorUnsupportedQueryFilter", f"{op} supports only a constant operand"
            )
        want = constant.get("Value", "")
        test = _COMPARISONS[op]
        if op == "IsNotEqualTo":
            return all(test(compare(v, want)) for v in values)
        return any(test(compare(v, want)) for v in values)
    if op == "Contains":
        constant = expr.find(t("Constant"))
        if constant is None:
            raise QueryNotSupported("ErrorInvalidRestriction", "Contains without a constant")
        want = constant.get("Value", "")
        mode = expr.get("ContainmentMode", "Substring")
        exact = expr.get("ContainmentComparison", "Loose") == "Exact"
        return any(_contains(v, want, mode, exact) for v in values)
    raise QueryNotSupported("ErrorUnsupportedQueryFilter", f"restriction {op} is not supported")


def _contains(value: str, want: str, mode: str, exact: bool) -> bool:
    if not exact:
        value, want = value.casefold(), want.casefold()
    if mode == "FullString":
        return value == want
    if mode == "Prefixed":
        return value.startswith(want)
    if mode == "PrefixOnWords":
        return any(word.startswith(want) for word in value.split())
    if mode in {"Substring", "ExactPhrase"}:
        return want in value
    raise QueryNotSupported("ErrorUnsupportedQueryFilter", f"ContainmentMode {mode}")


# AQS (Advanced Query Syntax) for FindItem's QueryString: the search box of Outlook.

_AQS_TERM = re.compile(r'(?:(?P<key>[A-Za-z]+):)?(?:"(?P<quoted>[^"]*)"|(?P<word>\S+))')
_PEOPLE = {
    "to": ("ToRecipients",),
    "cc": ("CcRecipients",),
    "bcc": ("BccRecipients",),
    "from": ("From", "Sender"),
    "participants": ("From", "Sender", "ToRecipients", "CcRecipients", "BccRecipients"),
}


_AQS_KEYS = {*_PEOPLE, "subject", "body", "category", "categories"}


def _people(item: etree._Element, elements: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for name in elements:
        node = item.find(t(name))
        if node is None:
            continue
        for mailbox in node.iter(t("Mailbox")):
            found += [mailbox.findtext(t("Name")) or "", mailbox.findtext(t("EmailAddress")) or ""]
    return found


def _aqs_values(item: etree._Element, key: str) -> list[str]:
    if key in _PEOPLE:
        return _people(item, _PEOPLE[key])
    if key in {"subject", "body"}:
        return [item.findtext(t(key.capitalize())) or ""]
    if key in {"category", "categories"}:
        return [c.text or "" for c in item.iterfind(f"{t('Categories')}/{t('String')}")]
    if key == "":
        texts = [item.findtext(t("Subject")) or "", item.findtext(t("Body")) or ""]
        return [*texts, *_people(item, _PEOPLE["participants"])]
    raise QueryNotSupported("ErrorInvalidArgument", f"the emulator has no AQS property {key!r}")


def aqs_matches(item: etree._Element, query: str) -> bool:
    """Terms (`Subject:word`, `To:"a name"`, bare words) joined by AND (the default) or OR;
    a term matches a property containing it, ignoring case, as Exchange's index does."""
    groups: list[list[tuple[str, str]]] = [[]]
    for found in _AQS_TERM.finditer(query):
        value = found["quoted"] if found["quoted"] is not None else found["word"]
        key = (found["key"] or "").lower()
        if key and key not in _AQS_KEYS:
            # Not a property Exchange's index knows: the whole "word:word" is searched as text,
            # as Exchange does (a body with a colon in it is still found by its words).
            value, key = f"{found['key']}:{value}", ""
        if not key and value == "OR":
            groups.append([])
            continue
        if not key and value == "AND":
            continue
        groups[-1].append((key, value.casefold()))
    return any(
        group and all(any(v in s.casefold() for s in _aqs_values(item, k)) for k, v in group)
        for group in groups
    )
