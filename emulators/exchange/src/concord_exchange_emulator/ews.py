"""EWS operations: one SOAP request in, one SOAP response out."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lxml import etree

from concord_exchange_emulator import attachments as att
from concord_exchange_emulator import folders as fl
from concord_exchange_emulator import items as it
from concord_exchange_emulator import recurrence as rec
from concord_exchange_emulator import rules, tasks
from concord_exchange_emulator.schema import field_order
from concord_exchange_emulator.store import (
    ALL_FOLDERS,
    Change,
    Folder,
    Store,
    StoredItem,
    new_id,
)
from concord_exchange_emulator.xmlns import NSMAP, XSI, E, M, S, T, local, m, sub, t

SERVER_VERSION = {
    # Exchange 2016 CU: exchangelib maps build 15.1 to the "Exchange2016" API version.
    "MajorVersion": "15",
    "MinorVersion": "1",
    "MajorBuildNumber": "2507",
    "MinorBuildNumber": "6",
    "Version": "Exchange2016",
}

DEFAULT_FOLDER = {
    "CalendarItem": "calendar",
    "Task": "tasks",
    "Contact": "contacts",
    "DistributionList": "contacts",
}
# The class a new folder gets when the client names none: a generic Folder has none in Exchange.
FOLDER_ELEMENTS = {
    "Folder": "",
    "CalendarFolder": "IPF.Appointment",
    "TasksFolder": "IPF.Task",
    "ContactsFolder": "IPF.Contact",
    "SearchFolder": "",
}
EVENT_ELEMENTS = {
    "create": "CreatedEvent",
    "update": "ModifiedEvent",
    "readflag": "ModifiedEvent",
    "delete": "DeletedEvent",
}


# Kept in the items table under folder keys of their own, never reached by an item id: a
# series' modified occurrences, and folders' user configurations.
CONFIGURATIONS = "configurations:"
UNLISTED = ("exceptions:", CONFIGURATIONS)
EMPTY_CONTAINER_ON_ERROR = {
    "CreateAttachment": "Attachments",
    "GetAttachment": "Attachments",
    "GetItem": "Items",
    "CreateItem": "Items",
    "UpdateItem": "Items",
    "MoveItem": "Items",
    "ArchiveItem": "Items",
    "GetFolder": "Folders",
    "CreateFolder": "Folders",
    "CopyItem": "Items",
    "UpdateFolder": "Folders",
    "MoveFolder": "Folders",
}


class EwsError(Exception):
    """A per-message error: the response message carries ResponseClass="Error"."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class SoapFault(Exception):
    """A request-level error: a SOAP Fault with the EWS code in its detail (HTTP 500)."""

    def __init__(self, code: str, text: str, back_off_ms: int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.back_off_ms = back_off_ms


@dataclass
class Context:
    store: Store
    username: str
    # Whose mailbox the caller acts as: its own, or the impersonated one (full access).
    acting_as: str
    impersonating: bool

    def check_access(self, mailbox: str) -> None:
        mailbox = mailbox.lower()
        if mailbox == self.acting_as:
            return
        if not self.impersonating and self.store.is_delegate(mailbox, self.username):
            return
        raise EwsError("ErrorAccessDenied", "The caller has no access to this mailbox.")


def ensure_mailbox(
    store: Store, address: str, display_name: str, language: str | None = None
) -> None:
    """Create a mailbox with Exchange 2016's folder tree, in `language` when given (a culture
    such as "da-DK"); an existing mailbox gets the well-known folders it lacks (idempotent)."""
    address = address.lower()
    store.add_mailbox(address, display_name)
    ids: dict[str, str] = {}
    for known in fl.parents_first():
        parent_id = ids[known.parent] if known.parent else None
        existing = (
            store.distinguished_folder(address, known.distinguished)
            if known.distinguished
            else next(
                (
                    f
                    for f in store.child_folders(parent_id or "")
                    if f.display_name.lower()
                    in {known.name.lower(), fl.folder_name(known, language).lower()}
                ),
                None,
            )
        )
        if existing is None:
            existing = store.add_folder(
                address,
                parent_id,
                fl.folder_name(known, language),
                known.folder_class,
                known.element,
                distinguished=known.distinguished,
            )
        ids[known.key] = existing.id
    options = fl.REGIONAL_OPTIONS.get(language or "")
    root = store.distinguished_folder(address, "root")
    if options and root is not None and _stored_configuration(store, root, REGIONAL) is None:
        store.put_unlisted(
            new_id("AAMkI"), address, _configurations_of(root), _dictionary_xml(REGIONAL, options)
        )


# A localized mailbox's regional settings (see folders.REGIONAL_OPTIONS).
REGIONAL = "OWA.UserOptions"


def _dictionary_xml(name: str, entries: dict[str, str]) -> bytes:
    config = etree.Element(t("UserConfiguration"), nsmap={"t": T})
    dictionary = sub(config, t("Dictionary"))
    for key, value in entries.items():
        entry = sub(dictionary, t("DictionaryEntry"))
        for part, text in (("DictionaryKey", key), ("DictionaryValue", value)):
            node = sub(entry, t(part))
            sub(node, t("Type"), "String")
            sub(node, t("Value"), text)
    return _configuration_xml(name, config)


# Envelope


def envelope(body_child: etree._Element | None) -> etree._Element:
    env = etree.Element(f"{{{S}}}Envelope", nsmap=NSMAP)
    header = sub(env, f"{{{S}}}Header")
    # Every response carries it: exchangelib's version probe reads it from any answer.
    sub(header, t("ServerVersionInfo"), **SERVER_VERSION)
    body = sub(env, f"{{{S}}}Body")
    if body_child is not None:
        body.append(body_child)
    return env


def fault(code: str, text: str, back_off_ms: int | None = None) -> etree._Element:
    env = envelope(None)
    body = env.find(f"{{{S}}}Body")
    assert body is not None
    flt = sub(body, f"{{{S}}}Fault")
    # faultcode/faultstring/detail are unqualified in SOAP 1.1; the code is a QName in t:.
    code_el = etree.SubElement(flt, "faultcode", nsmap={"a": T})
    code_el.text = "a:" + code
    sub(flt, "faultstring", text)
    detail = sub(flt, "detail")
    sub(detail, f"{{{E}}}ResponseCode", code)
    sub(detail, f"{{{E}}}Message", text)
    if back_off_ms is not None:
        xml = sub(detail, t("MessageXml"))
        sub(xml, t("Value"), str(back_off_ms), Name="BackOffMilliseconds")
    return env


def _message(op: str, code: str = "NoError", text: str | None = None) -> etree._Element:
    msg = etree.Element(m(f"{op}ResponseMessage"))
    if code == "NoError":
        msg.set("ResponseClass", "Success")
    else:
        msg.set("ResponseClass", "Error")
        sub(msg, m("MessageText"), text or code)
    sub(msg, m("ResponseCode"), code)
    if code != "NoError":
        sub(msg, m("DescriptiveLinkKey"), "0")
    return msg


def _error_message(op: str, code: str, text: str) -> etree._Element:
    msg = _message(op, code, text)
    if op in EMPTY_CONTAINER_ON_ERROR:
        # The schema requires the (empty) container even in an error answer, as Exchange sends.
        sub(msg, m(EMPTY_CONTAINER_ON_ERROR[op]))
    if op == "SyncFolderItems":
        # Exchange keeps these two in an error answer, and exchangelib reads SyncState first.
        sub(msg, m("SyncState"), "")
        sub(msg, m("IncludesLastItemInRange"), "true")
    if op == "SyncFolderHierarchy":
        sub(msg, m("SyncState"), "")
        sub(msg, m("IncludesLastFolderInRange"), "true")
    return msg


def _response(op: str, messages: list[etree._Element]) -> etree._Element:
    resp = etree.Element(m(f"{op}Response"), nsmap={"m": M, "t": T})
    container = sub(resp, m("ResponseMessages"))
    for msg in messages:
        container.append(msg)
    return resp


def _each(
    op: str, nodes: list[etree._Element], fill: Callable[[etree._Element, etree._Element], None]
) -> etree._Element:
    """One response message per request element, errors reported per element as EWS does."""
    messages = []
    for node in nodes:
        msg = _message(op)
        try:
            fill(node, msg)
        except it.QueryNotSupported as exc:
            msg = _error_message(op, exc.code, str(exc))
        except (EwsError, att.AttachmentError) as exc:
            msg = _error_message(op, exc.code, exc.text)
        messages.append(msg)
    return _response(op, messages)


# Folders and items


_OUR_FOLDER_ID = re.compile(r"^AQMkF[0-9A-F]{32}$")


def resolve_folder(ctx: Context, node: etree._Element) -> Folder:
    kind = local(node.tag)
    if kind == "DistinguishedFolderId" and node.get("Id") == "publicfoldersroot":
        # A 2016 organisation without public folder mailboxes answers this way.
        raise EwsError(
            "ErrorNoPublicFolderReplicaAvailable", "There are no public folder servers available."
        )
    if kind == "FolderId" and not _OUR_FOLDER_ID.match(node.get("Id", "")):
        # Exchange tells an id it cannot decode from one it cannot find.
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
    if kind == "DistinguishedFolderId":
        mailbox = node.findtext(f"{t('Mailbox')}/{t('EmailAddress')}") or ctx.acting_as
        ctx.check_access(mailbox)
        folder = ctx.store.distinguished_folder(mailbox, node.get("Id", ""))
        if folder is None:
            raise EwsError("ErrorFolderNotFound", "The specified folder could not be found.")
        return folder
    if kind == "FolderId":
        found = ctx.store.folder(node.get("Id", ""))
        if found is None:
            raise EwsError("ErrorFolderNotFound", "The specified folder could not be found.")
        ctx.check_access(found.mailbox)
        return found
    raise EwsError("ErrorInvalidIdMalformed", f"unsupported folder id {kind}")


OCCURRENCE_PREFIX = "AAMkO"
NOT_FOUND = "The specified object was not found in the store."


def occurrence_id(master_id: str, index: int) -> str:
    return f"{OCCURRENCE_PREFIX}{master_id}_{index}"


def _parse_occurrence_id(item_id: str) -> tuple[str, int] | None:
    if not item_id.startswith(OCCURRENCE_PREFIX):
        return None
    master_id, _, index = item_id[len(OCCURRENCE_PREFIX) :].rpartition("_")
    return (master_id, int(index)) if index.isdigit() else None


def _master(ctx: Context, master_id: str) -> StoredItem:
    master = ctx.store.item(master_id)
    if master is None or master.folder_id.startswith("exceptions:"):
        raise EwsError("ErrorItemNotFound", NOT_FOUND)
    ctx.check_access(master.mailbox)
    return master


def _deleted_starts(master: etree._Element) -> set[str]:
    return {
        d.findtext(t("Start")) or ""
        for d in master.iterfind(f"{t('DeletedOccurrences')}/{t('DeletedOccurrence')}")
    }


def occurrence_xml(master: etree._Element, start: dt.datetime, end: dt.datetime) -> etree._Element:
    occ = etree.fromstring(etree.tostring(master))
    for name in ("Recurrence", "ModifiedOccurrences", "DeletedOccurrences", "CalendarItemType"):
        for node in occ.findall(t(name)):
            occ.remove(node)
    for name, value in (("Start", start), ("End", end), ("OriginalStart", start)):
        field = occ.find(t(name))
        if field is None:
            field = sub(occ, t(name))
        field.text = rec.utc_text(value)
    sub(occ, t("CalendarItemType"), "Occurrence")
    recurring = occ.find(t("IsRecurring"))
    if recurring is None:
        recurring = sub(occ, t("IsRecurring"))
    recurring.text = "true"
    return it.sort_children(occ)


def _occurrence(ctx: Context, master: StoredItem, index: int) -> StoredItem:
    """An occurrence as a virtual item: the stored exception, or one generated from the master."""
    occ_id = occurrence_id(master.id, index)
    exception = ctx.store.item(occ_id)
    if exception is not None:
        return StoredItem(
            occ_id,
            master.mailbox,
            master.folder_id,
            exception.xml,
            exception.version,
            master.created_seq,
        )
    master_el = etree.fromstring(master.xml)
    try:
        found = rec.occurrence(master_el, index)
    except rec.RecurrenceNotSupported as exc:
        raise EwsError("ErrorInvalidOperation", str(exc)) from None
    if found is None or rec.utc_text(found[0]) in _deleted_starts(master_el):
        raise EwsError("ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange", NOT_FOUND)
    xml = etree.tostring(occurrence_xml(master_el, *found))
    return StoredItem(
        occ_id, master.mailbox, master.folder_id, xml, master.version, master.created_seq
    )


_OUR_ITEM_ID = re.compile(r"^(AAMkI[0-9A-F]{32}|AAMkOAAMkI[0-9A-F]{32}_\d+)$")
_OUR_CHANGE_KEY = re.compile(r"^CQAAAB\d{8}$")


def _check_item_id(item_id: str, change_key: str | None) -> None:
    """Exchange tells an id or ChangeKey it cannot decode from one that is out of date."""
    if not _OUR_ITEM_ID.match(item_id):
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
    if change_key and not _OUR_CHANGE_KEY.match(change_key):
        raise EwsError("ErrorInvalidChangeKey", "ChangeKey is invalid.")


def resolve_item(ctx: Context, node: etree._Element) -> StoredItem:
    kind = local(node.tag)
    if kind == "ItemId":
        _check_item_id(node.get("Id", ""), node.get("ChangeKey"))
    if kind == "OccurrenceItemId":
        master = _master(ctx, node.get("RecurringMasterId", ""))
        return _occurrence(ctx, master, int(node.get("InstanceIndex", "0")))
    if kind == "RecurringMasterItemId":
        parsed = _parse_occurrence_id(node.get("OccurrenceId", ""))
        return _master(ctx, parsed[0] if parsed else node.get("OccurrenceId", ""))
    if kind != "ItemId":
        raise EwsError("ErrorInvalidOperation", f"{kind} is not supported")
    parsed = _parse_occurrence_id(node.get("Id", ""))
    if parsed is not None:
        return _occurrence(ctx, _master(ctx, parsed[0]), parsed[1])
    found = ctx.store.item(node.get("Id", ""))
    if found is None or found.folder_id.startswith(UNLISTED):
        raise EwsError("ErrorItemNotFound", NOT_FOUND)
    ctx.check_access(found.mailbox)
    return found


def _save_exception(ctx: Context, occ: StoredItem, xml: etree._Element) -> StoredItem:
    """An edited occurrence becomes an exception, listed in the master's ModifiedOccurrences."""
    parsed = _parse_occurrence_id(occ.id)
    assert parsed is not None
    master = _master(ctx, parsed[0])
    kind = xml.find(t("CalendarItemType"))
    if kind is not None:
        kind.text = "Exception"
    master_el = etree.fromstring(master.xml)
    modified = master_el.find(t("ModifiedOccurrences"))
    if modified is None:
        modified = sub(master_el, t("ModifiedOccurrences"))
    for entry in modified.findall(t("Occurrence")):
        entry_id = entry.find(t("ItemId"))
        if entry_id is not None and entry_id.get("Id") == occ.id:
            modified.remove(entry)
    entry = sub(modified, t("Occurrence"))
    sub(entry, t("ItemId"), Id=occ.id, ChangeKey=f"CQAAAB{occ.version + 1:08d}")
    for name in ("Start", "End", "OriginalStart"):
        sub(entry, t(name), xml.findtext(t(name)) or "")
    it.sort_children(master_el)
    return ctx.store.put_exception(occ.id, master, etree.tostring(xml), etree.tostring(master_el))


def _delete_occurrence(ctx: Context, occ: StoredItem) -> None:
    parsed = _parse_occurrence_id(occ.id)
    assert parsed is not None
    master = _master(ctx, parsed[0])
    master_el = etree.fromstring(master.xml)
    original = etree.fromstring(occ.xml).findtext(t("OriginalStart")) or ""
    modified = master_el.find(t("ModifiedOccurrences"))
    if modified is not None:
        for entry in modified.findall(t("Occurrence")):
            if entry.findtext(t("OriginalStart")) == original:
                modified.remove(entry)
        if not len(modified):
            master_el.remove(modified)
    deleted = master_el.find(t("DeletedOccurrences"))
    if deleted is None:
        deleted = sub(master_el, t("DeletedOccurrences"))
    sub(sub(deleted, t("DeletedOccurrence")), t("Start"), original)
    it.sort_children(master_el)
    ctx.store.drop_exception(occ.id, master, etree.tostring(master_el))


def folder_element(ctx: Context, folder: Folder) -> etree._Element:
    node = etree.Element(t(folder.element))
    sub(node, t("FolderId"), Id=folder.id, ChangeKey=folder.change_key)
    if folder.parent_id:
        parent = ctx.store.folder(folder.parent_id)
        if parent is not None:
            sub(node, t("ParentFolderId"), Id=parent.id, ChangeKey=parent.change_key)
    if folder.folder_class:
        sub(node, t("FolderClass"), folder.folder_class)
    sub(node, t("DisplayName"), folder.display_name)
    total, children = ctx.store.folder_counts(folder.id)
    sub(node, t("TotalCount"), str(total))
    sub(node, t("ChildFolderCount"), str(children))
    if folder.distinguished:
        sub(node, t("DistinguishedFolderId"), folder.distinguished)
    if folder.element in {"Folder", "SearchFolder"}:
        unread = sum(
            1
            for stored in ctx.store.items_in(folder.id)
            if (etree.fromstring(stored.xml).findtext(t("IsRead")) or "true") == "false"
        )
        sub(node, t("UnreadCount"), str(unread))
    if folder.element != "CalendarFolder":
        node.append(_permission_set(ctx, folder))
    return _in_schema_order(node)


def _in_schema_order(node: etree._Element) -> etree._Element:
    """A folder's children in its type's order (PermissionSet sits between ReplicaList and
    UnreadCount, ExtendedProperty after ChildFolderCount)."""
    order = {name: i for i, name in enumerate(field_order(f"{local(node.tag)}Type"))}
    for child in sorted(node, key=lambda c: order.get(local(c.tag), len(order))):
        node.append(child)
    return node


# PR_MESSAGE_SIZE_EXTENDED (0x0E08, PT_I8, EWS "Long"): on a folder, the bytes of the messages it
# holds, its hidden (folder-associated) ones included; Exchange computes it, nobody sets it.
FOLDER_SIZE_TAG = 0x0E08


def _folder_size(ctx: Context, folder: Folder) -> int:
    """What the folder holds: its items' Size, plus its associated messages as the emulator
    keeps them: user configurations, and in the Inbox the inbox rules and the Junk E-mail rule
    (Exchange keeps every server-side rule as an associated message there, MS-OXORULE,
    MS-OXCSPAM)."""
    size = sum(
        int(etree.fromstring(stored.xml).findtext(t("Size")) or 0)
        for stored in ctx.store.items_in(folder.id)
    )
    size += sum(len(stored.xml) for stored in ctx.store.items_in(_configurations_of(folder)))
    if folder.distinguished == "inbox":
        size += sum(len(xml) for _, xml in ctx.store.inbox_rules(folder.mailbox))
        blocked = ctx.store.blocked_senders(folder.mailbox)
        if blocked is not None:
            size += len(_junk_rule(blocked))
    return size


def _computed_folder_property(ctx: Context, folder: Folder, uri: etree._Element) -> str | None:
    """The value of a folder property Exchange computes, asked for by ExtendedFieldURI."""
    tag = uri.get("PropertyTag", "")
    try:
        number = int(tag, 16) if tag.lower().startswith("0x") else int(tag)
    except ValueError:
        return None
    if number == FOLDER_SIZE_TAG and uri.get("PropertyType") == "Long":
        return str(_folder_size(ctx, folder))
    return None


def _permission_set(ctx: Context, folder: Folder) -> etree._Element:
    """The folder's PermissionSet as last written, else Exchange's default: the Default and
    Anonymous users may do nothing."""
    stored = ctx.store.folder_permissions(folder.id)
    if stored is not None:
        return etree.fromstring(stored)
    permissions = etree.Element(t("PermissionSet"))
    container = sub(permissions, t("Permissions"))
    for who in ("Default", "Anonymous"):
        entry = sub(container, t("Permission"))
        sub(sub(entry, t("UserId")), t("DistinguishedUser"), who)
        for flag in ("CanCreateItems", "CanCreateSubFolders", "IsFolderOwner"):
            sub(entry, t(flag), "false")
        sub(entry, t("IsFolderVisible"), "false")
        sub(entry, t("IsFolderContact"), "false")
        for access in ("EditItems", "DeleteItems"):
            sub(entry, t(access), "None")
        sub(entry, t("ReadItems"), "None")
        sub(entry, t("PermissionLevel"), "None")
    return permissions


def _add_first_and_last_occurrence(stored: StoredItem, el: etree._Element) -> None:
    """A series' master names its first and (for a series with an end) last occurrence."""
    recurrence = el.find(t("Recurrence"))
    if recurrence is None or el.findtext(t("CalendarItemType")) != "RecurringMaster":
        return
    ends = len(recurrence) > 1 and local(recurrence[1].tag) != "NoEndRecurrence"
    try:
        series = rec.occurrences(el)
        # A series without an end has no last occurrence: only its first is worked out.
        found = list(series) if ends else [next(series)]
    except (rec.RecurrenceNotSupported, ValueError, StopIteration):
        return
    if not found:
        return
    for name, (index, start, end) in (("FirstOccurrence", found[0]), ("LastOccurrence", found[-1])):
        if name == "LastOccurrence" and not ends:
            continue
        node = sub(el, t(name))
        sub(node, t("ItemId"), Id=occurrence_id(stored.id, index), ChangeKey=stored.change_key)
        sub(node, t("Start"), rec.utc_text(start))
        sub(node, t("End"), rec.utc_text(end))
        sub(node, t("OriginalStart"), rec.utc_text(start))


def render_item(ctx: Context, stored: StoredItem, shape: it.Shape) -> etree._Element:
    folder = ctx.store.folder(stored.folder_id)
    assert folder is not None
    el = etree.fromstring(stored.xml)
    if local(el.tag) == "CalendarItem":
        _add_first_and_last_occurrence(stored, el)
    out = it.render(
        el,
        shape,
        item_id=stored.id,
        change_key=stored.change_key,
        folder_id=folder.id,
        folder_change_key=folder.change_key,
    )
    listed = out.find(t("Attachments"))
    if listed is not None:
        # Attachments are listed, not sent whole: GetAttachment fetches one's content.
        for attachment in list(listed):
            listed.replace(attachment, att.summary(attachment, stored.id))
    return out


def _children(node: etree._Element | None) -> list[etree._Element]:
    return [c for c in node if isinstance(c.tag, str)] if node is not None else []


def get_folder(ctx: Context, req: etree._Element) -> etree._Element:
    shape = _folder_shape(ctx, req)

    def fill(node: etree._Element, msg: etree._Element) -> None:
        folder = resolve_folder(ctx, node)
        sub(msg, m("Folders")).append(shape(folder_element(ctx, folder), folder))

    return _each("GetFolder", _children(req.find(m("FolderIds"))), fill)


def _descendants(ctx: Context, folder: Folder, deep: bool) -> list[Folder]:
    found = []
    for child in ctx.store.child_folders(folder.id):
        found.append(child)
        if deep:
            found.extend(_descendants(ctx, child, deep))
    return found


def _page(req: etree._Element, view_name: str, total: int) -> tuple[int, int]:
    view = req.find(m(view_name))
    if view is None:
        return 0, total
    offset = int(view.get("Offset", "0"))
    limit = int(view.get("MaxEntriesReturned", str(total)) or total)
    if view.get("BasePoint", "Beginning") == "End":
        offset = max(total - offset - limit, 0)
    return offset, limit


def _shape_of(
    req: etree._Element, element: str, default: str, id_name: str
) -> tuple[str, set[str]]:
    """A response shape's BaseShape (`default` when absent) and the element names it keeps
    besides the base: the id, and the properties asked for by FieldURI."""
    shape = req.find(m(element))
    base = shape.findtext(t("BaseShape")) if shape is not None else default
    extra = shape.find(t("AdditionalProperties")) if shape is not None else None
    wanted = {id_name} | {
        it.element_for_uri(p.get("FieldURI", "")) for p in _children(extra) if p.get("FieldURI")
    }
    return base or default, wanted


def _folder_shape(
    ctx: Context, req: etree._Element
) -> Callable[[etree._Element, Folder], etree._Element]:
    """A FolderShape: IdOnly keeps the FolderId and the properties asked for by name; extended
    properties Exchange computes for a folder are answered when asked for by ExtendedFieldURI."""
    base, wanted = _shape_of(req, "FolderShape", "AllProperties", "FolderId")
    shape = req.find(m("FolderShape"))
    extra = shape.find(t("AdditionalProperties")) if shape is not None else None
    extended = [p for p in _children(extra) if local(p.tag) == "ExtendedFieldURI"]

    def apply(node: etree._Element, folder: Folder) -> etree._Element:
        for child in list(node):
            name = local(child.tag)
            # Permissions come only when asked for by name, as in Exchange.
            if (base == "IdOnly" or name == "PermissionSet") and name not in wanted:
                node.remove(child)
        for uri in extended:
            value = _computed_folder_property(ctx, folder, uri)
            if value is not None:
                prop = sub(node, t("ExtendedProperty"))
                prop.append(etree.fromstring(etree.tostring(uri)))
                sub(prop, t("Value"), value)
        return _in_schema_order(node) if extended else node

    return apply


def find_folder(ctx: Context, req: etree._Element) -> etree._Element:
    deep = req.get("Traversal", "Shallow") == "Deep"
    restriction = req.find(m("Restriction"))
    shape = _folder_shape(ctx, req)

    def fill(node: etree._Element, msg: etree._Element) -> None:
        parent = resolve_folder(ctx, node)
        folders = [
            (el, f)
            for el, f in ((folder_element(ctx, f), f) for f in _descendants(ctx, parent, deep))
            if restriction is None or it.matches(el, restriction[0])
        ]
        offset, limit = _page(req, "IndexedPageFolderView", len(folders))
        page = folders[offset : offset + limit]
        root = sub(
            msg,
            m("RootFolder"),
            IndexedPagingOffset=str(offset + len(page)),
            TotalItemsInView=str(len(folders)),
            IncludesLastItemInRange=str(offset + len(page) >= len(folders)).lower(),
        )
        container = sub(root, t("Folders"))
        for el, folder in page:
            container.append(shape(el, folder))

    return _each("FindFolder", _children(req.find(m("ParentFolderIds"))), fill)


def create_folder(ctx: Context, req: etree._Element) -> etree._Element:
    parent_node = _children(req.find(m("ParentFolderId")))
    parent = resolve_folder(ctx, parent_node[0]) if parent_node else None

    def fill(node: etree._Element, msg: etree._Element) -> None:
        if parent is None:
            raise EwsError("ErrorInvalidRequest", "CreateFolder needs a ParentFolderId")
        name = node.findtext(t("DisplayName")) or ""
        # Folder names are unique among siblings regardless of case, as in Exchange.
        if any(f.display_name.lower() == name.lower() for f in ctx.store.child_folders(parent.id)):
            raise EwsError(
                "ErrorFolderExists",
                "A folder with the specified name already exists., "
                f"Could not create folder '{name}'.",
            )
        element = local(node.tag)
        folder_class = node.findtext(t("FolderClass")) or FOLDER_ELEMENTS.get(element, "")
        folder = ctx.store.add_folder(parent.mailbox, parent.id, name, folder_class, element)
        out = sub(sub(msg, m("Folders")), t(element))
        sub(out, t("FolderId"), Id=folder.id, ChangeKey=folder.change_key)

    return _each("CreateFolder", _children(req.find(m("Folders"))), fill)


def _is_system_folder(ctx: Context, folder: Folder) -> bool:
    """One of the mailbox's own folders without a distinguished id (Common Views, GAL Contacts,
    …): a well-known name directly under a well-known folder."""
    if folder.display_name.lower() not in fl.system_folder_names() or not folder.parent_id:
        return False
    parent = ctx.store.folder(folder.parent_id)
    return parent is not None and (
        parent.distinguished is not None or _is_system_folder(ctx, parent)
    )


def delete_folder(ctx: Context, req: etree._Element) -> etree._Element:
    def fill(node: etree._Element, msg: etree._Element) -> None:
        folder = resolve_folder(ctx, node)
        if folder.distinguished:
            raise EwsError(
                "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."
            )
        if _is_system_folder(ctx, folder):
            raise EwsError("ErrorCannotDeleteObject", "The object cannot be deleted.")
        ctx.store.delete_folder(folder)

    return _each("DeleteFolder", _children(req.find(m("FolderIds"))), fill)


def get_item(ctx: Context, req: etree._Element) -> etree._Element:
    shape = it.Shape(req.find(m("ItemShape")))

    def fill(node: etree._Element, msg: etree._Element) -> None:
        stored = resolve_item(ctx, node)
        sub(msg, m("Items")).append(render_item(ctx, stored, shape))

    return _each("GetItem", _children(req.find(m("ItemIds"))), fill)


def create_item(ctx: Context, req: etree._Element) -> etree._Element:
    target_node = _children(req.find(m("SavedItemFolderId")))
    disposition = req.get("MessageDisposition", "SaveOnly")
    target = resolve_folder(ctx, target_node[0]) if target_node else None
    id_only = it.Shape(None)
    id_only.base = "IdOnly"

    def fill(node: etree._Element, msg: etree._Element) -> None:
        kind = local(node.tag)
        if kind in MEETING_RESPONSES or kind == "CancelCalendarItem":
            _respond_to_meeting(ctx, node, msg, disposition, target)
            return
        if kind not in it.ITEM_TYPES:
            raise EwsError("ErrorInvalidItemForOperation", f"{kind} items are not supported")
        folder = target
        if folder is None:
            default = DEFAULT_FOLDER.get(kind)
            if default is None:
                default = "sentitems" if disposition != "SaveOnly" else "drafts"
            folder = ctx.store.distinguished_folder(ctx.acting_as, default)
            assert folder is not None
        item, _ = it.prepare_new(
            node, owner=folder.mailbox, owner_name=ctx.store.display_name(folder.mailbox)
        )
        if kind == "CalendarItem":
            _invited(item, req.get("SendMeetingInvitations", ""))
        if kind == "Message" and disposition in {"SendOnly", "SendAndSaveCopy"}:
            # A message sent at creation: Exchange answers with no item (the copy, if kept, is
            # a new item in the Sent Items or the named folder), and keeps nothing for SendOnly.
            sub(msg, m("Items"))
            if disposition == "SendAndSaveCopy":
                _mark_sent(item)
                ctx.store.insert_item(new_id("AAMkI"), folder.mailbox, folder.id, _xml(item))
            return
        stored = ctx.store.insert_item(new_id("AAMkI"), folder.mailbox, folder.id, _xml(item))
        answer = render_item(ctx, stored, id_only)
        attached = item.findall(f"{t('Attachments')}/*")
        if attached:
            # The answer names each new attachment, so a client can keep its id.
            listed = sub(answer, t("Attachments"))
            for attachment in attached:
                listed.append(att.id_only(attachment, stored.id, stored.change_key))
            it.sort_children(answer)
        sub(msg, m("Items")).append(answer)

    return _each("CreateItem", _children(req.find(m("Items"))), fill)


# User configurations: named settings objects a folder keeps (folder-associated items of class
# IPM.Configuration.<name>), kept apart from the folder's items as Exchange keeps them.

_CONFIG_NAME = re.compile(r"^[A-Za-z0-9.]{1,236}$")
CONFIG_PARTS = ("Dictionary", "XmlData", "BinaryData")


def _configurations_of(folder: Folder) -> str:
    return f"{CONFIGURATIONS}{folder.id}"


def _configuration_name(ctx: Context, node: etree._Element | None) -> tuple[Folder, str]:
    if node is None:
        raise EwsError("ErrorInvalidRequest", "The UserConfigurationName is missing.")
    name = node.get("Name", "")
    if not _CONFIG_NAME.match(name) or name.startswith("IPM.Configuration"):
        raise EwsError(
            "ErrorInvalidRequest",
            "The user configuration name is not valid.",
        )
    target = _children(node)
    if not target:
        raise EwsError("ErrorInvalidRequest", "The user configuration names no folder.")
    return resolve_folder(ctx, target[0]), name


def _stored_configuration(store: Store, folder: Folder, name: str) -> StoredItem | None:
    for stored in store.items_in(_configurations_of(folder)):
        if etree.fromstring(stored.xml).get("Name") == name:
            return stored
    return None


def _configuration_xml(name: str, config: etree._Element) -> bytes:
    kept = etree.Element(t("UserConfiguration"), Name=name, nsmap={"t": T})
    for part in CONFIG_PARTS:
        found = config.find(t(part))
        if found is not None:
            kept.append(etree.fromstring(etree.tostring(found)))
    for entry in kept.iter(t("DictionaryKey"), t("DictionaryValue")):
        # xs:boolean allows 1/0, which exchangelib sends; Exchange answers true/false.
        if entry.findtext(t("Type")) == "Boolean":
            for value in entry.findall(t("Value")):
                value.text = {"1": "true", "0": "false"}.get(value.text or "", value.text)
    return _xml(kept)


def create_user_configuration(ctx: Context, req: etree._Element) -> etree._Element:
    msg = _message("CreateUserConfiguration")
    try:
        config = req.find(m("UserConfiguration"))
        if config is None:
            raise EwsError("ErrorInvalidRequest", "The UserConfiguration is missing.")
        folder, name = _configuration_name(ctx, config.find(t("UserConfigurationName")))
        if _stored_configuration(ctx.store, folder, name) is not None:
            # One configuration of a name per folder: Exchange cannot save a second.
            raise EwsError("ErrorItemSave", "An object with the same key already exists.")
        ctx.store.put_unlisted(
            new_id("AAMkI"),
            folder.mailbox,
            _configurations_of(folder),
            _configuration_xml(name, config),
        )
    except EwsError as exc:
        msg = _error_message("CreateUserConfiguration", exc.code, exc.text)
    return _response("CreateUserConfiguration", [msg])


def get_user_configuration(ctx: Context, req: etree._Element) -> etree._Element:
    msg = _message("GetUserConfiguration")
    try:
        name_node = req.find(m("UserConfigurationName"))
        folder, name = _configuration_name(ctx, name_node)
        stored = _stored_configuration(ctx.store, folder, name)
        if stored is None:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        wanted = set((req.findtext(m("UserConfigurationProperties")) or "All").split())
        if "All" in wanted:
            wanted = {"Id", *CONFIG_PARTS}
        kept = etree.fromstring(stored.xml)
        out = sub(msg, m("UserConfiguration"))
        named = sub(out, t("UserConfigurationName"), Name=name)
        sub(named, t("FolderId"), Id=folder.id, ChangeKey=folder.change_key)
        if "Id" in wanted:
            sub(out, t("ItemId"), Id=stored.id, ChangeKey=stored.change_key)
        for part in CONFIG_PARTS:
            found = kept.find(t(part))
            if part in wanted and found is not None:
                out.append(found)
    except EwsError as exc:
        msg = _error_message("GetUserConfiguration", exc.code, exc.text)
    return _response("GetUserConfiguration", [msg])


def update_user_configuration(ctx: Context, req: etree._Element) -> etree._Element:
    """The parts given replace the kept ones; parts not given stay as they were."""
    msg = _message("UpdateUserConfiguration")
    try:
        config = req.find(m("UserConfiguration"))
        if config is None:
            raise EwsError("ErrorInvalidRequest", "The UserConfiguration is missing.")
        folder, name = _configuration_name(ctx, config.find(t("UserConfigurationName")))
        stored = _stored_configuration(ctx.store, folder, name)
        if stored is None:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        kept = etree.fromstring(stored.xml)
        for part in CONFIG_PARTS:
            given = config.find(t(part))
            if given is None:
                continue
            for old in kept.findall(t(part)):
                kept.remove(old)
            kept.append(etree.fromstring(etree.tostring(given)))
        ctx.store.put_unlisted(
            stored.id, stored.mailbox, stored.folder_id, _configuration_xml(name, kept)
        )
    except EwsError as exc:
        msg = _error_message("UpdateUserConfiguration", exc.code, exc.text)
    return _response("UpdateUserConfiguration", [msg])


def delete_user_configuration(ctx: Context, req: etree._Element) -> etree._Element:
    msg = _message("DeleteUserConfiguration")
    try:
        folder, name = _configuration_name(ctx, req.find(m("UserConfigurationName")))
        stored = _stored_configuration(ctx.store, folder, name)
        if stored is None:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        ctx.store.drop_unlisted(stored.id)
    except EwsError as exc:
        msg = _error_message("DeleteUserConfiguration", exc.code, exc.text)
    return _response("DeleteUserConfiguration", [msg])


# Attachments


def _attachment_root(ctx: Context, attachment_id: str) -> tuple[StoredItem, etree._Element, str]:
    """(item, its stored XML, the attachment's key) for an attachment id."""
    root_id, key = att.parse_id(attachment_id)
    found = ctx.store.item(root_id)
    if found is None or found.folder_id.startswith(UNLISTED):
        raise EwsError("ErrorInvalidAttachmentId", "The attachment id is not valid.")
    ctx.check_access(found.mailbox)
    return found, etree.fromstring(found.xml), key


def create_attachment(ctx: Context, req: etree._Element) -> etree._Element:
    """Attachments added to a saved item: one answer per attachment, each naming the item's
    ChangeKey after it was added."""
    parent_node = req.find(m("ParentItemId"))
    if parent_node is None:
        raise EwsError("ErrorInvalidRequest", "CreateAttachment needs a ParentItemId.")
    as_item_id = etree.Element(t("ItemId"))
    for name in ("Id", "ChangeKey"):
        value = parent_node.get(name)
        if value is not None:
            as_item_id.set(name, value)
    parent = resolve_item(ctx, as_item_id)
    if _parse_occurrence_id(parent.id) is not None:
        raise EwsError("ErrorInvalidOperation", "attachments of one occurrence are not supported")

    def fill(node: etree._Element, msg: etree._Element) -> None:
        nonlocal parent
        item = etree.fromstring(parent.xml)
        prepared = att.prepare(
            node,
            it.now_iso(),
            lambda inner: it.prepare_new(
                inner, owner=parent.mailbox, owner_name=ctx.store.display_name(parent.mailbox)
            )[0],
        )
        att.add(item, prepared)
        it.sort_children(item)
        parent = ctx.store.update_item(parent, _xml(item), read_flag_only=False)
        sub(msg, m("Attachments")).append(att.id_only(prepared, parent.id, parent.change_key))

    return _each("CreateAttachment", _children(req.find(m("Attachments"))), fill)


def get_attachment(ctx: Context, req: etree._Element) -> etree._Element:
    shape = it.Shape(req.find(m("AttachmentShape")))

    def fill(node: etree._Element, msg: etree._Element) -> None:
        root, item, key = _attachment_root(ctx, node.get("Id", ""))
        found = att.find(item, key)
        if found is None:
            raise EwsError("ErrorInvalidAttachmentId", "The attachment id is not valid.")

        def embedded(inner: etree._Element) -> etree._Element:
            out = etree.Element(inner.tag, nsmap={"t": T})
            for child in inner:
                if shape.wants(child):
                    out.append(etree.fromstring(etree.tostring(child)))
            listed = out.find(t("Attachments"))
            if listed is not None:
                for nested in list(listed):
                    listed.replace(nested, att.summary(nested, root.id))
            return it.sort_children(out)

        sub(msg, m("Attachments")).append(att.whole(found, root.id, embedded))

    return _each("GetAttachment", _children(req.find(m("AttachmentIds"))), fill)


def delete_attachment(ctx: Context, req: etree._Element) -> etree._Element:
    def fill(node: etree._Element, msg: etree._Element) -> None:
        root, item, key = _attachment_root(ctx, node.get("Id", ""))
        found = att.find(item, key)
        if found is None:
            raise EwsError("ErrorInvalidAttachmentId", "The attachment id is not valid.")
        att.remove(item, found)
        it.sort_children(item)
        updated = ctx.store.update_item(root, _xml(item), read_flag_only=False)
        sub(msg, m("RootItemId"), RootItemId=updated.id, RootItemChangeKey=updated.change_key)

    return _each("DeleteAttachment", _children(req.find(m("AttachmentIds"))), fill)


MEETING_RESPONSES = {
    "AcceptItem": "Accept",
    "TentativelyAcceptItem": "Tentative",
    "DeclineItem": "Decline",
}


# The SendMeetingInvitations(OrCancellations) values that send the meeting to its attendees.
_SENDS_INVITATIONS = frozenset(
    {"SendOnlyToAll", "SendToAllAndSaveCopy", "SendOnlyToChanged", "SendToChangedAndSaveCopy"}
)


def _invited(item: etree._Element, send: str) -> None:
    """A meeting with attendees created or updated with invitations sent: Exchange marks it
    MeetingRequestWasSent, and from then on a cancellation has someone to go to."""
    attendees = any(
        item.find(t(name)) is not None
        for name in ("RequiredAttendees", "OptionalAttendees", "Resources")
    )
    flag = item.find(t("MeetingRequestWasSent"))
    if send in _SENDS_INVITATIONS and attendees:
        if flag is None:
            flag = sub(item, t("MeetingRequestWasSent"))
            it.sort_children(item)
        flag.text = "true"


def _respond_to_meeting(
    ctx: Context,
    node: etree._Element,
    msg: etree._Element,
    disposition: str,
    target: Folder | None,
) -> None:
    """An attendee's answer to a meeting (its MyResponseType; a declined meeting leaves the
    calendar), or the organizer's cancellation (the meeting leaves the calendar and the
    cancellation is kept in Sent Items). Nothing is delivered to anyone."""
    kind = local(node.tag)
    reference = node.find(t("ReferenceItemId"))
    if reference is None:
        raise EwsError("ErrorMissingInformationReferenceItemId", "The ReferenceItemId is missing.")
    as_item_id = etree.Element(t("ItemId"), Id=reference.get("Id", ""))
    if reference.get("ChangeKey"):
        as_item_id.set("ChangeKey", reference.get("ChangeKey", ""))
    meeting = resolve_item(ctx, as_item_id)
    el = etree.fromstring(meeting.xml)
    if local(el.tag) != "CalendarItem":
        raise EwsError("ErrorInvalidItemForOperation", f"{kind} needs a meeting")
    organizer = (el.findtext(f"{t('Organizer')}/{t('Mailbox')}/{t('EmailAddress')}") or "").lower()
    is_organizer = organizer in {"", meeting.mailbox}
    items = sub(msg, m("Items"))
    if kind == "CancelCalendarItem":
        if not is_organizer:
            raise EwsError(
                "ErrorCalendarIsNotOrganizer", "Only the organizer can cancel a meeting."
            )
        if disposition != "SaveOnly" and el.findtext(t("MeetingRequestWasSent")) != "true":
            # A cancellation goes to those the meeting was sent to: one never sent (saved with
            # SendToNone, or with no attendees) leaves it no recipient, and Exchange refuses to
            # send it (the meeting stays). exchangelib's live test_cancel expects exactly this.
            raise EwsError(
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent because it "
                "contains no recipients.",
            )
        ctx.store.delete_item(meeting)
        if disposition == "SendOnly":
            return
        folder = target or ctx.store.distinguished_folder(meeting.mailbox, "sentitems")
        assert folder is not None
        note = etree.Element(t("MeetingCancellation"), nsmap={"t": T})
        sub(note, t("ItemClass"), "IPM.Schedule.Meeting.Canceled")
        sub(note, t("Subject"), f"Canceled: {el.findtext(t('Subject')) or ''}")
        sub(note, t("DateTimeSent"), it.now_iso())
        sub(note, t("IsRead"), "true")
        sub(note, t("IsDraft"), "false")
        it.sort_children(note)
        kept = ctx.store.insert_item(new_id("AAMkI"), folder.mailbox, folder.id, _xml(note))
        sub(items, t("MeetingCancellation")).append(
            etree.Element(t("ItemId"), Id=kept.id, ChangeKey=kept.change_key)
        )
        return
    answer = MEETING_RESPONSES[kind]
    if is_organizer:
        raise EwsError(
            f"ErrorCalendarIsOrganizerFor{'Decline' if answer == 'Decline' else answer}",
            "The organizer of a meeting cannot answer it.",
        )
    if answer == "Decline":
        ctx.store.delete_item(meeting)
        return
    mine = el.find(t("MyResponseType"))
    if mine is None:
        mine = sub(el, t("MyResponseType"))
    mine.text = answer
    it.sort_children(el)
    updated = ctx.store.update_item(meeting, _xml(el), read_flag_only=False)
    sub(items, t("CalendarItem")).append(
        etree.Element(t("ItemId"), Id=updated.id, ChangeKey=updated.change_key)
    )


def _mark_sent(item: etree._Element) -> None:
    for name, value in (("IsDraft", "false"), ("DateTimeSent", it.now_iso()), ("IsRead", "true")):
        node = item.find(t(name))
        if node is None:
            node = sub(item, t(name))
        node.text = value
    it.sort_children(item)


def send_item(ctx: Context, req: etree._Element) -> etree._Element:
    """Send saved messages (drafts): kept in Sent Items (or the folder named), else removed."""
    save = req.get("SaveItemToFolder", "true").lower() in {"true", "1"}
    target_node = _children(req.find(m("SavedItemFolderId")))
    target = resolve_folder(ctx, target_node[0]) if target_node else None

    def fill(node: etree._Element, msg: etree._Element) -> None:
        stored = resolve_item(ctx, node)
        if local(etree.fromstring(stored.xml).tag) != "Message":
            raise EwsError("ErrorInvalidItemForOperation", "Only messages can be sent.")
        if not save:
            ctx.store.delete_item(stored)
            return
        folder = target or ctx.store.distinguished_folder(stored.mailbox, "sentitems")
        assert folder is not None
        item = etree.fromstring(stored.xml)
        _mark_sent(item)
        ctx.store.move_item(stored, new_id("AAMkI"), folder.id, _xml(item))

    return _each("SendItem", _children(req.find(m("ItemIds"))), fill)


def copy_item(ctx: Context, req: etree._Element) -> etree._Element:
    target = resolve_folder(ctx, _children(req.find(m("ToFolderId")))[0])
    id_only = it.Shape(None)
    id_only.base = "IdOnly"

    def fill(node: etree._Element, msg: etree._Element) -> None:
        stored = resolve_item(ctx, node)
        if _parse_occurrence_id(stored.id) is not None:
            raise EwsError("ErrorInvalidOperation", "an occurrence cannot be copied on its own")
        if stored.mailbox != target.mailbox:
            raise EwsError("ErrorInvalidOperation", "copies across mailboxes are not supported")
        copy = ctx.store.insert_item(new_id("AAMkI"), target.mailbox, target.id, stored.xml)
        sub(msg, m("Items")).append(render_item(ctx, copy, id_only))

    return _each("CopyItem", _children(req.find(m("ItemIds"))), fill)


def _junk_rule(blocked: list[str]) -> bytes:
    """The mailbox's Junk E-mail rule as the emulator keeps it: MS-OXCSPAM's rule (an associated
    message of the Inbox) named as that protocol requires, with its blocked sender addresses."""
    rule = etree.Element("JunkEmailRule", Name="Junk E-mail rule", Provider="JunkEmailRule")
    for address in blocked:
        etree.SubElement(rule, "BlockedSender").text = address
    return bytes(etree.tostring(rule))


def _sender_of(stored: StoredItem) -> str | None:
    item = etree.fromstring(stored.xml)
    for field in ("Sender", "From"):
        address = item.findtext(f"{t(field)}/{t('Mailbox')}/{t('EmailAddress')}")
        if address:
            return address.lower()
    return None


def mark_as_junk(ctx: Context, req: etree._Element) -> etree._Element:
    """IsJunk adds the item's sender to the mailbox's blocked senders (kept in its Junk E-mail
    rule), IsJunk false removes it; with MoveItem, junk goes to Junk Email and not-junk back to
    the Inbox (the EWS reference's four cases)."""
    is_junk = req.get("IsJunk", "true").lower() in {"true", "1"}
    move = req.get("MoveItem", "true").lower() in {"true", "1"}

    def fill(node: etree._Element, msg: etree._Element) -> None:
        stored = resolve_item(ctx, node)
        sender = _sender_of(stored)
        blocked = ctx.store.blocked_senders(stored.mailbox)
        if sender is not None and is_junk and sender not in (blocked or []):
            ctx.store.set_blocked_senders(stored.mailbox, [*(blocked or []), sender])
        elif sender is not None and not is_junk and blocked and sender in blocked:
            ctx.store.set_blocked_senders(stored.mailbox, [a for a in blocked if a != sender])
        if not move:
            return
        folder = ctx.store.distinguished_folder(stored.mailbox, "junkemail" if is_junk else "inbox")
        assert folder is not None
        moved = stored
        if folder.id != stored.folder_id:
            moved = ctx.store.move_item(stored, new_id("AAMkI"), folder.id, stored.xml)
        sub(msg, m("MovedItemId"), Id=moved.id, ChangeKey=moved.change_key)

    return _each("MarkAsJunk", _children(req.find(m("ItemIds"))), fill)


def update_folder(ctx: Context, req: etree._Element) -> etree._Element:
    def fill(node: etree._Element, msg: etree._Element) -> None:
        id_node = next(c for c in _children(node) if local(c.tag).endswith("FolderId"))
        try:
            folder = resolve_folder(ctx, id_node)
        except EwsError as exc:
            # Exchange's answer for an update of a folder that is gone.
            if exc.code != "ErrorFolderNotFound":
                raise
            raise EwsError("ErrorItemNotFound", NOT_FOUND) from None
        name = None
        for update in _children(node.find(t("Updates"))):
            path = next((c for c in update if local(c.tag).endswith("FieldURI")), None)
            uri = path.get("FieldURI", "") if path is not None else ""
            value = next((c for c in update if not local(c.tag).endswith("FieldURI")), None)
            new_class = value.findtext(t("FolderClass")) if value is not None else None
            if uri == "folder:FolderClass" and (new_class or "") != folder.folder_class:
                raise EwsError(
                    "ErrorObjectTypeChanged", "Object cannot be saved because its type has changed."
                )
            if uri == "folder:PermissionSet" and value is not None:
                permissions = value.find(t("PermissionSet"))
                if permissions is not None:
                    ctx.store.set_folder_permissions(folder.id, etree.tostring(permissions))
            if uri == "folder:DisplayName" and local(update.tag) == "SetFolderField":
                name = value.findtext(t("DisplayName")) if value is not None else None
                if not name:
                    raise EwsError("ErrorInvalidPropertySet", "A folder needs a DisplayName.")
            # Other folder properties are accepted and not kept (the emulator stores none).
        if name is not None and folder.parent_id:
            clash = [
                f
                for f in ctx.store.child_folders(folder.parent_id)
                if f.id != folder.id and f.display_name.lower() == name.lower()
            ]
            if clash:
                raise EwsError(
                    "ErrorFolderExists", "A folder with the specified name already exists."
                )
        updated = ctx.store.update_folder(folder, display_name=name)
        out = sub(sub(msg, m("Folders")), t(updated.element))
        sub(out, t("FolderId"), Id=updated.id, ChangeKey=updated.change_key)

    return _each("UpdateFolder", _children(req.find(m("FolderChanges"))), fill)


def move_folder(ctx: Context, req: etree._Element) -> etree._Element:
    target = resolve_folder(ctx, _children(req.find(m("ToFolderId")))[0])

    def fill(node: etree._Element, msg: etree._Element) -> None:
        folder = resolve_folder(ctx, node)
        if folder.distinguished:
            raise EwsError("ErrorMoveDistinguishedFolder", "Distinguished folders cannot be moved.")
        if any(
            f.display_name.lower() == folder.display_name.lower()
            for f in ctx.store.child_folders(target.id)
        ):
            raise EwsError("ErrorFolderExists", "A folder with the specified name already exists.")
        moved = ctx.store.update_folder(folder, parent_id=target.id)
        out = sub(sub(msg, m("Folders")), t(moved.element))
        sub(out, t("FolderId"), Id=moved.id, ChangeKey=moved.change_key)

    return _each("MoveFolder", _children(req.find(m("FolderIds"))), fill)


def empty_folder(ctx: Context, req: etree._Element) -> etree._Element:
    """Delete a folder's items (and, when asked, its sub-folders); the folder stays."""
    delete_subfolders = req.get("DeleteSubFolders", "false").lower() in {"true", "1"}

    def fill(node: etree._Element, msg: etree._Element) -> None:
        folder = resolve_folder(ctx, node)
        if folder.distinguished in {"root", "msgfolderroot", "searchfolders"}:
            raise EwsError("ErrorCannotEmptyFolder", "This folder cannot be emptied.")
        for stored in ctx.store.items_in(folder.id):
            ctx.store.delete_item(stored)
        if delete_subfolders:
            for child in ctx.store.child_folders(folder.id):
                if not child.distinguished and not _is_system_folder(ctx, child):
                    ctx.store.delete_folder(child)

    return _each("EmptyFolder", _children(req.find(m("FolderIds"))), fill)


def _xml(node: etree._Element) -> bytes:
    return etree.tostring(node)


def update_item(ctx: Context, req: etree._Element) -> etree._Element:
    resolution = req.get("ConflictResolution", "AutoResolve")
    disposition = req.get("MessageDisposition", "SaveOnly")
    id_only = it.Shape(None)
    id_only.base = "IdOnly"

    def fill(node: etree._Element, msg: etree._Element) -> None:
        id_node = next(c for c in _children(node) if local(c.tag).endswith("ItemId"))
        stored = resolve_item(ctx, id_node)
        sent_key = id_node.get("ChangeKey")
        if sent_key and sent_key != stored.change_key and resolution == "NeverOverwrite":
            raise EwsError(
                "ErrorIrresolvableConflict",
                "The send or update operation could not be performed because the change key "
                "passed in the request does not match the current change key for the item.",
            )
        xml = etree.fromstring(stored.xml)
        before = etree.fromstring(stored.xml)
        updates = node.find(t("Updates"))
        changed = it.apply_updates(xml, updates if updates is not None else etree.Element("x"))
        modified = xml.find(t("LastModifiedTime"))
        if modified is not None:
            modified.text = it.now_iso()
        if local(xml.tag) == "CalendarItem":
            _invited(xml, req.get("SendMeetingInvitationsOrCancellations", ""))
        one_off = tasks.split_occurrence(before, xml) if local(xml.tag) == "Task" else None
        if one_off is not None:
            # A recurring task's occurrence split off: the answer names the new one-off task.
            ctx.store.update_item(stored, _xml(it.sort_children(xml)), read_flag_only=False)
            for name in ("DateTimeCreated", "LastModifiedTime", "DateTimeReceived"):
                field = one_off.find(t(name))
                if field is not None:
                    field.text = it.now_iso()
            split = ctx.store.insert_item(
                new_id("AAMkI"), stored.mailbox, stored.folder_id, _xml(it.sort_children(one_off))
            )
            sub(msg, m("Items")).append(render_item(ctx, split, id_only))
            sub(sub(msg, m("ConflictResults")), t("Count"), "0")
            return
        if _parse_occurrence_id(stored.id) is not None:
            updated = _save_exception(ctx, stored, xml)
        else:
            updated = ctx.store.update_item(stored, _xml(xml), read_flag_only=changed == {"IsRead"})
        if disposition in {"SendOnly", "SendAndSaveCopy"} and local(xml.tag) == "Message":
            # Updated, then sent: the answer has no item, the copy goes to Sent Items.
            sub(msg, m("Items"))
            if disposition == "SendOnly":
                ctx.store.delete_item(updated)
            else:
                sent = ctx.store.distinguished_folder(updated.mailbox, "sentitems")
                assert sent is not None
                _mark_sent(xml)
                ctx.store.move_item(updated, new_id("AAMkI"), sent.id, _xml(xml))
            sub(sub(msg, m("ConflictResults")), t("Count"), "0")
            return
        sub(msg, m("Items")).append(render_item(ctx, updated, id_only))
        sub(sub(msg, m("ConflictResults")), t("Count"), "0")

    return _each("UpdateItem", _children(req.find(m("ItemChanges"))), fill)


def delete_item(ctx: Context, req: etree._Element) -> etree._Element:
    delete_type = req.get("DeleteType", "MoveToDeletedItems")

    def fill(node: etree._Element, msg: etree._Element) -> None:
        stored = resolve_item(ctx, node)
        if _parse_occurrence_id(stored.id) is not None:
            _delete_occurrence(ctx, stored)
            return
        if delete_type == "MoveToDeletedItems":
            bin_ = ctx.store.distinguished_folder(stored.mailbox, "deleteditems")
            if bin_ is not None and bin_.id != stored.folder_id:
                ctx.store.move_item(stored, new_id("AAMkI"), bin_.id, stored.xml)
                return
        ctx.store.delete_item(stored)

    return _each("DeleteItem", _children(req.find(m("ItemIds"))), fill)


def move_item(ctx: Context, req: etree._Element) -> etree._Element:
    target = resolve_folder(ctx, _children(req.find(m("ToFolderId")))[0])

    def fill(node: etree._Element, msg: etree._Element) -> None:
        _move_answered(ctx, resolve_item(ctx, node), target, msg)

    return _each("MoveItem", _children(req.find(m("ItemIds"))), fill)


def _move_answered(ctx: Context, stored: StoredItem, target: Folder, msg: etree._Element) -> None:
    """Move an item within its mailbox; the answer names it by its new id (IdOnly)."""
    if _parse_occurrence_id(stored.id) is not None:
        raise EwsError("ErrorInvalidOperation", "an occurrence cannot be moved on its own")
    if stored.mailbox != target.mailbox:
        raise EwsError("ErrorInvalidOperation", "moves across mailboxes are not supported")
    moved = ctx.store.move_item(stored, new_id("AAMkI"), target.id, stored.xml)
    id_only = it.Shape(None)
    id_only.base = "IdOnly"
    sub(msg, m("Items")).append(render_item(ctx, moved, id_only))


def archive_item(ctx: Context, req: etree._Element) -> etree._Element:
    """Items moved to the folder ArchiveSourceFolderId names, as MoveItem moves them: Exchange
    runs ArchiveItem as a MoveItem (its internal error names a MoveItemRequest), and exchangelib's
    suite saw an item archived to the DistinguishedFolderId `deleteditems` of its own mailbox
    come back, by the new id the answer gave, in that Deleted Items. Without an archive every
    item is refused, as the EWS reference shows."""
    named = _children(req.find(m("ArchiveSourceFolderId")))
    if not named:
        raise EwsError("ErrorInvalidRequest", "ArchiveItem needs an ArchiveSourceFolderId.")
    target = resolve_folder(ctx, named[0])

    def fill(node: etree._Element, msg: etree._Element) -> None:
        stored = resolve_item(ctx, node)
        if not ctx.store.has_archive(stored.mailbox):
            raise EwsError("ErrorInvalidOperation", "Archive mailbox is not enabled for this user.")
        _move_answered(ctx, stored, target, msg)

    return _each("ArchiveItem", _children(req.find(m("ItemIds"))), fill)


def _sort_key(order: etree._Element) -> Callable[[etree._Element], Any]:
    paths = [(f.get("Order", "Ascending"), f[0]) for f in order if len(f)]

    def cmp(a: etree._Element, b: etree._Element) -> int:
        for direction, path in paths:
            va, vb = it.values_at(a, path), it.values_at(b, path)
            result = it.compare(va[0] if va else "", vb[0] if vb else "")
            if result:
                return -result if direction == "Descending" else result
        return 0

    return functools.cmp_to_key(cmp)


def find_item(ctx: Context, req: etree._Element) -> etree._Element:
    shape = it.Shape(req.find(m("ItemShape")))
    restriction = req.find(m("Restriction"))
    order = req.find(m("SortOrder"))
    calendar_view = req.find(m("CalendarView"))
    query_string = (req.findtext(m("QueryString")) or "").strip()
    if req.find(m("GroupBy")) is not None or req.find(m("DistinguishedGroupBy")) is not None:
        raise SoapFault("ErrorInvalidRequest", "grouping is not supported by the emulator")
    if calendar_view is not None and restriction is not None and len(restriction):
        # Exchange expands a CalendarView itself and takes no restriction with it.
        raise EwsError(
            "ErrorInvalidOperation", "Restrictions are not supported for CalendarView requests."
        )
    traversal = req.get("Traversal", "Shallow")
    if traversal not in {"Shallow", "Associated", "SoftDeleted"}:
        raise SoapFault("ErrorInvalidRequest", "only Shallow traversal is supported")

    def fill(node: etree._Element, msg: etree._Element) -> None:
        folder = resolve_folder(ctx, node)
        full = it.Shape.everything()
        # The emulator keeps no folder-associated items (views, rules) and no dumpster: those
        # traversals find nothing, as in a fresh mailbox.
        stored_items = ctx.store.items_in(folder.id) if traversal == "Shallow" else []
        if calendar_view is not None:
            stored_items = _expand(ctx, stored_items, calendar_view)
        rows = [(s, render_item(ctx, s, full)) for s in stored_items]
        if calendar_view is not None:
            rows = _in_view(rows, calendar_view)
        if restriction is not None and len(restriction):
            rows = [r for r in rows if it.matches(r[1], restriction[0])]
        if query_string:
            rows = [r for r in rows if it.aqs_matches(r[1], query_string)]
        if order is not None and len(order):
            key = _sort_key(order)
            rows.sort(key=lambda r: key(r[1]))
        if calendar_view is not None:
            limit = int(calendar_view.get("MaxEntriesReturned", str(len(rows))))
            offset = 0
        else:
            offset, limit = _page(req, "IndexedPageItemView", len(rows))
        page = rows[offset : offset + limit]
        attrs = {"TotalItemsInView": str(len(rows))}
        attrs["IncludesLastItemInRange"] = str(offset + len(page) >= len(rows)).lower()
        if calendar_view is None:
            attrs = {"IndexedPagingOffset": str(offset + len(page)), **attrs}
        root = sub(msg, m("RootFolder"), **attrs)
        container = sub(root, t("Items"))
        for stored, _ in page:
            container.append(render_item(ctx, stored, shape))

    return _each("FindItem", _children(req.find(m("ParentFolderIds"))), fill)


# Personas (FindPeople, GetPersona): Exchange 2013 and later aggregate a mailbox's contacts into
# people; here each contact is one persona (the emulator links no contacts into one person).

_PERSONA_PREFIX = "AAUQ"
_OUR_PERSONA_ID = re.compile(r"^AAUQ(AAMkI[0-9A-F]{32})$")


def _persona(ctx: Context, stored: StoredItem) -> etree._Element:
    """A contact as Exchange's PersonaType lists it (the schema's order)."""
    contact = etree.fromstring(stored.xml)
    persona = etree.Element(t("Persona"), nsmap={"t": T})
    sub(persona, t("PersonaId"), Id=f"{_PERSONA_PREFIX}{stored.id}")
    sub(persona, t("PersonaType"), "Person")
    created = contact.findtext(t("DateTimeCreated"))
    if created:
        sub(persona, t("CreationTime"), created)
    given, surname = contact.findtext(t("GivenName")), contact.findtext(t("Surname"))
    display = contact.findtext(t("DisplayName")) or contact.findtext(t("FileAs")) or ""
    sub(persona, t("DisplayName"), display)
    if given or surname:
        sub(persona, t("DisplayNameFirstLast"), " ".join(n for n in (given, surname) if n))
        sub(persona, t("DisplayNameLastFirst"), " ".join(n for n in (surname, given) if n))
    for name in ("FileAs", "GivenName", "Surname", "CompanyName"):
        value = contact.findtext(t(name))
        if value:
            sub(persona, t(name), value)
    addresses = [e.text for e in contact.iterfind(f"{t('EmailAddresses')}/{t('Entry')}") if e.text]
    if addresses:
        first = sub(persona, t("EmailAddress"))
        sub(first, t("Name"), display or addresses[0])
        sub(first, t("EmailAddress"), addresses[0])
        sub(first, t("RoutingType"), "SMTP")
        listed = sub(persona, t("EmailAddresses"))
        for address in addresses:
            entry = sub(listed, t("Address"))
            sub(entry, t("Name"), display or address)
            sub(entry, t("EmailAddress"), address)
            sub(entry, t("RoutingType"), "SMTP")
    folder = ctx.store.folder(stored.folder_id)
    if folder is not None:
        sub(sub(persona, t("FolderIds")), t("FolderId"), Id=folder.id, ChangeKey=folder.change_key)
    return persona


def _persona_shape(req: etree._Element) -> Callable[[etree._Element], etree._Element]:
    """A PersonaShape: IdOnly keeps the PersonaId and the properties asked for by name."""
    base, wanted = _shape_of(req, "PersonaShape", "Default", "PersonaId")

    def apply(persona: etree._Element) -> etree._Element:
        if base == "IdOnly":
            for child in list(persona):
                if local(child.tag) not in wanted:
                    persona.remove(child)
        return persona

    return apply


def _persona_query_matches(persona: etree._Element, query: str) -> bool:
    """Every word of the query (a `Property:` prefix aside) in the person's names or addresses,
    ignoring case, as the people index matches them."""
    texts = [str(text).casefold() for text in persona.itertext()]
    words = [w.split(":", 1)[-1].strip('"').casefold() for w in query.split()]
    return all(any(w in text for text in texts) for w in words if w and w not in {"and", "or"})


def _flat_message(op: str, code: str = "NoError", text: str | None = None) -> etree._Element:
    """An answer that is itself the response message (FindPeople, GetPersona), not a list."""
    message = _message(op, code, text)
    message.tag = m(f"{op}Response" if op == "FindPeople" else f"{op}ResponseMessage")
    return message


def find_people(ctx: Context, req: etree._Element) -> etree._Element:
    try:
        parent = _children(req.find(m("ParentFolderId")))
        if parent:
            folder = resolve_folder(ctx, parent[0])
        else:
            found = ctx.store.distinguished_folder(ctx.acting_as, "contacts")
            assert found is not None
            folder = found
        restriction = req.find(m("Restriction"))
        order = req.find(m("SortOrder"))
        query = (req.findtext(m("QueryString")) or "").strip()
        people = [
            _persona(ctx, s)
            for s in ctx.store.items_in(folder.id)
            if local(etree.fromstring(s.xml).tag) == "Contact"
        ]
        if restriction is not None and len(restriction):
            people = [p for p in people if it.matches(p, restriction[0])]
        if query:
            people = [p for p in people if _persona_query_matches(p, query)]
        if order is not None and len(order):
            people.sort(key=_sort_key(order))
        else:
            people.sort(key=lambda p: (p.findtext(t("DisplayName")) or "").casefold())
    except it.QueryNotSupported as exc:
        return _flat_message("FindPeople", exc.code, str(exc))
    except EwsError as exc:
        return _flat_message("FindPeople", exc.code, exc.text)
    offset, limit = _page(req, "IndexedPageItemView", len(people))
    answer = _flat_message("FindPeople")
    listed = sub(answer, m("People"))
    apply = _persona_shape(req)
    for persona in people[offset : offset + limit]:
        listed.append(apply(persona))
    sub(answer, m("TotalNumberOfPeopleInView"), str(len(people)))
    sub(answer, m("FirstMatchingRowIndex"), str(offset))
    sub(answer, m("FirstLoadedRowIndex"), str(offset))
    return answer


def get_persona(ctx: Context, req: etree._Element) -> etree._Element:
    persona_id = req.find(m("PersonaId"))
    if persona_id is None:
        persona_id = req.find(t("PersonaId"))
    matched = _OUR_PERSONA_ID.match(persona_id.get("Id", "") if persona_id is not None else "")
    if matched is None:
        return _flat_message("GetPersona", "ErrorInvalidIdMalformed", "Id is malformed.")
    stored = ctx.store.item(matched[1])
    if stored is None or local(etree.fromstring(stored.xml).tag) != "Contact":
        return _flat_message(
            "GetPersona", "ErrorItemNotFound", "The specified object was not found in the store."
        )
    try:
        ctx.check_access(stored.mailbox)
    except EwsError as exc:
        return _flat_message("GetPersona", exc.code, exc.text)
    answer = _flat_message("GetPersona")
    persona = _persona(ctx, stored)
    persona.tag = m("Persona")  # GetPersona's Persona is the messages schema's element
    answer.append(persona)
    return answer


# Mail tips (GetMailTips): what Outlook shows before a message is sent to a recipient.

# Exchange 2016's default message size limit (the organisation's MaxReceiveSize), in bytes.
MAX_MESSAGE_SIZE = 10 * 1024 * 1024


def get_mail_tips(ctx: Context, req: etree._Element) -> etree._Element:
    """Per recipient: a mailbox of this server is a known internal one, another address of its
    domain is an invalid recipient, any other domain counts as external."""
    recipients = _children(req.find(m("Recipients")))
    home = ctx.acting_as.rpartition("@")[2]
    answer = etree.Element(m("GetMailTipsResponse"), nsmap={"m": M, "t": T})
    answer.set("ResponseClass", "Success")
    sub(answer, m("ResponseCode"), "NoError")
    messages = sub(answer, m("ResponseMessages"))
    for recipient in recipients:
        address = (recipient.findtext(t("EmailAddress")) or "").strip()
        known = ctx.store.mailbox_exists(address.lower())
        external = address.rpartition("@")[2].lower() != home
        # exchangelib reads each message under this element name, as Exchange sends it.
        message = sub(messages, m("MailTipsResponseMessageType"), ResponseClass="Success")
        sub(message, m("ResponseCode"), "NoError")
        tips = sub(message, m("MailTips"))
        named = sub(tips, t("RecipientAddress"))
        if known:
            sub(named, t("Name"), ctx.store.display_name(address.lower()))
        sub(named, t("EmailAddress"), address)
        sub(named, t("RoutingType"), "SMTP")
        sub(sub(sub(tips, t("OutOfOffice")), t("ReplyBody")), t("Message"))
        sub(tips, t("MailboxFull"), "false")
        sub(tips, t("TotalMemberCount"), "1")
        sub(tips, t("ExternalMemberCount"), "1" if external else "0")
        sub(tips, t("MaxMessageSize"), str(MAX_MESSAGE_SIZE))
        sub(tips, t("DeliveryRestricted"), "false")
        sub(tips, t("IsModerated"), "false")
        sub(tips, t("InvalidRecipient"), "true" if not known and not external else "false")
    return answer


def _expand(ctx: Context, stored_items: list[StoredItem], view: etree._Element) -> list[StoredItem]:
    """CalendarView lists occurrences and exceptions of a series instead of its master."""
    end = rec.parse_utc(view.get("EndDate", ""))
    found: list[StoredItem] = []
    for stored in stored_items:
        el = etree.fromstring(stored.xml)
        if el.find(t("Recurrence")) is None:
            found.append(stored)
            continue
        deleted = _deleted_starts(el)
        try:
            for index, start, _ in rec.occurrences(el):
                if start >= end:
                    break
                if rec.utc_text(start) in deleted:
                    continue
                found.append(_occurrence(ctx, stored, index))
        except rec.RecurrenceNotSupported as exc:
            # Never a wrong answer: a series the emulator cannot expand is an error.
            raise EwsError("ErrorInvalidOperation", f"cannot expand the series: {exc}") from None
    return found


def _in_view(
    rows: list[tuple[StoredItem, etree._Element]], view: etree._Element
) -> list[tuple[StoredItem, etree._Element]]:
    start, end = view.get("StartDate", ""), view.get("EndDate", "")
    found = []
    for stored, el in rows:
        s, e = el.findtext(t("Start")), el.findtext(t("End"))
        # An item ending exactly where the view starts is in it (Exchange's edge), one starting
        # exactly where it ends is not.
        if s and e and it.compare(s, end) < 0 and it.compare(e, start) >= 0:
            found.append((stored, el))

    def by_start(a: tuple[StoredItem, etree._Element], b: tuple[StoredItem, etree._Element]) -> int:
        return it.compare(a[1].findtext(t("Start")) or "", b[1].findtext(t("Start")) or "")

    found.sort(key=functools.cmp_to_key(by_start))
    return found


# Change tracking


def _encode_state(folder_id: str, seq: int, generation: int = 0) -> str:
    return base64.b64encode(f"concord-sync:{generation}:{folder_id}:{seq}".encode()).decode()


def _decode_state(state: str, folder_id: str, generation: int = 0) -> int:
    """The change-log position in a state this folder handed out, since the last invalidation
    (`/__admin/invalidate-sync-states` stands for Exchange discarding its sync states)."""
    try:
        prefix, gen, fid, seq = base64.b64decode(state, validate=True).decode().split(":")
        if prefix != "concord-sync" or fid != folder_id or int(gen) != generation:
            raise ValueError(state)
        return int(seq)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise EwsError(
            "ErrorInvalidSyncStateData",
            "Synchronization state data is corrupt or otherwise invalid.",
        ) from None


def sync_folder_items(ctx: Context, req: etree._Element) -> etree._Element:
    shape = it.Shape(req.find(m("ItemShape")))

    def fill(node: etree._Element, msg: etree._Element) -> None:
        folder = resolve_folder(ctx, node)
        state = (req.findtext(m("SyncState")) or "").strip()
        max_changes = int(req.findtext(m("MaxChangesReturned")) or "512")
        ignored = {i.get("Id") for i in _children(req.find(m("Ignore")))}
        # (last seq, kind, item id, the item now): the page, then whether any change is left.
        page: list[tuple[int, str, str, StoredItem | None]] = []
        complete = True
        # The state a complete answer hands out stands at the folder's own last change, as
        # Exchange's does: a change elsewhere (another folder, another mailbox) leaves it as
        # it was, so a client holding one state per folder sees which folders changed.
        if not state:
            head = ctx.store.last_seq(folder.id)
            for stored in ctx.store.items_in(folder.id):
                if stored.id in ignored:
                    continue
                if len(page) == max_changes:
                    complete = False
                    break
                page.append((stored.created_seq, "Create", stored.id, stored))
        else:
            after = _decode_state(state, folder.id, ctx.store.sync_generation())
            head = after
            first: dict[str, str] = {}
            last: dict[str, int] = {}
            kinds: dict[str, set[str]] = {}
            for change in ctx.store.changes([folder.id], after):
                head = max(head, change.seq)
                first.setdefault(change.item_id, change.kind)
                last[change.item_id] = change.seq
                kinds.setdefault(change.item_id, set()).add(change.kind)
            # Items are read in the order of their last change, only until the page is full
            # and one more change is known to follow: a delta of 10,000 items answered in
            # pages of 512 reads each item once, not every item for every page.
            for item_id, seq in sorted(last.items(), key=lambda entry: entry[1]):
                if item_id in ignored:
                    continue
                current = ctx.store.item(item_id)
                present = current is not None and current.folder_id == folder.id
                existed = first[item_id] != "create"
                if existed and present:
                    kind = "ReadFlagChange" if kinds[item_id] == {"readflag"} else "Update"
                elif present:
                    kind = "Create"
                elif existed:
                    kind = "Delete"
                else:
                    continue
                if len(page) == max_changes:
                    complete = False
                    break
                page.append((seq, kind, item_id, current))
        # A change committed while this answer was built may be in it already: never hand out
        # a state older than what was reported, or it would be reported twice.
        reported = max((c[0] for c in page), default=0)
        new_seq = max(head, reported) if complete else page[-1][0]
        generation = ctx.store.sync_generation()
        sub(msg, m("SyncState"), _encode_state(folder.id, new_seq, generation))
        sub(msg, m("IncludesLastItemInRange"), str(complete).lower())
        container = sub(msg, m("Changes"))
        for _, kind, item_id, current in page:
            entry = sub(container, t(kind))
            if kind == "Delete" or current is None:
                sub(entry, t("ItemId"), Id=item_id)
            elif kind == "ReadFlagChange":
                sub(entry, t("ItemId"), Id=item_id, ChangeKey=current.change_key)
                is_read = etree.fromstring(current.xml).findtext(t("IsRead")) or "false"
                sub(entry, t("IsRead"), is_read)
            else:
                entry.append(render_item(ctx, current, shape))

    return _each("SyncFolderItems", _children(req.find(m("SyncFolderId"))), fill)


def sync_folder_hierarchy(ctx: Context, req: etree._Element) -> etree._Element:
    """The folders below SyncFolderId (the whole mailbox without one): all of them as created
    on a first sync, then what was created, changed or deleted since the state."""
    shape = _folder_shape(ctx, req)
    node = _children(req.find(m("SyncFolderId")))
    state = (req.findtext(m("SyncState")) or "").strip()

    def fill(_: etree._Element, msg: etree._Element) -> None:
        top = (
            resolve_folder(ctx, node[0])
            if node
            else ctx.store.distinguished_folder(ctx.acting_as, "root")
        )
        assert top is not None
        generation = ctx.store.sync_generation()
        head = ctx.store.last_seq()
        below = {f.id: f for f in _descendants(ctx, top, deep=True)}
        changes: list[tuple[str, str]] = []  # (kind, folder id)
        if not state:
            changes = [("Create", folder_id) for folder_id in below]
        else:
            after = _decode_state(state, top.id, generation)
            inside = {top.id, *below}
            first: dict[str, str] = {}
            for change in ctx.store.folder_changes(top.mailbox, after):
                if change.folder_id in inside or change.item_id in inside:
                    first.setdefault(change.item_id, change.kind)
            for folder_id, kind in first.items():
                if folder_id in below:
                    changes.append(("Create" if kind == "create" else "Update", folder_id))
                elif kind != "create":
                    changes.append(("Delete", folder_id))
        sub(msg, m("SyncState"), _encode_state(top.id, head, generation))
        sub(msg, m("IncludesLastFolderInRange"), "true")
        container = sub(msg, m("Changes"))
        for kind, folder_id in changes:
            entry = sub(container, t(kind))
            if kind == "Delete":
                sub(entry, t("FolderId"), Id=folder_id)
            else:
                entry.append(shape(folder_element(ctx, below[folder_id]), below[folder_id]))

    return _each("SyncFolderHierarchy", [req], fill)


def _encode_watermark(seq: int) -> str:
    return base64.b64encode(f"concord-wm:{seq}".encode()).decode()


def _decode_watermark(text: str) -> int:
    try:
        prefix, seq = base64.b64decode(text, validate=True).decode().split(":")
        if prefix != "concord-wm":
            raise ValueError(text)
        return int(seq)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise EwsError("ErrorInvalidWatermark", "The watermark is invalid.") from None


def subscribe(ctx: Context, req: etree._Element) -> etree._Element:
    def fill(node: etree._Element, msg: etree._Element) -> None:
        request = local(node.tag)
        if request not in {
            "PullSubscriptionRequest",
            "StreamingSubscriptionRequest",
            "PushSubscriptionRequest",
        }:
            raise EwsError("ErrorInvalidOperation", f"{request} is not supported")
        url = node.findtext(t("URL")) or ""
        if request == "PushSubscriptionRequest" and not url.startswith(("http://", "https://")):
            raise EwsError("ErrorInvalidPushSubscriptionUrl", "The push URL is invalid.")
        folders = [resolve_folder(ctx, f) for f in _children(node.find(t("FolderIds")))]
        all_folders = node.get("SubscribeToAllFolders", "false").lower() in {"true", "1"}
        if not folders and not all_folders:
            raise EwsError("ErrorInvalidSubscriptionRequest", "no folders to watch")
        events = [e.text or "" for e in _children(node.find(t("EventTypes")))]
        mark = node.findtext(t("Watermark"))
        seq = _decode_watermark(mark) if mark else ctx.store.last_seq()
        if all_folders:
            # Every folder of the mailbox, those made later included.
            mailbox, folder_ids = ctx.acting_as, [ALL_FOLDERS]
        else:
            mailbox, folder_ids = folders[0].mailbox, [f.id for f in folders]
        sub_id = ctx.store.add_subscription(mailbox, folder_ids, events, seq)
        if request == "PushSubscriptionRequest":
            minutes = int(node.findtext(t("StatusFrequency")) or "30")
            ctx.store.add_push_target(sub_id, url, minutes)
        sub(msg, m("SubscriptionId"), sub_id)
        if request != "StreamingSubscriptionRequest":
            sub(msg, m("Watermark"), _encode_watermark(seq))

    return _each("Subscribe", _children(req), fill)


def get_events(ctx: Context, req: etree._Element) -> etree._Element:
    def fill(node: etree._Element, msg: etree._Element) -> None:
        sub_id = req.findtext(m("SubscriptionId")) or ""
        found = ctx.store.subscription(sub_id)
        if found is None:
            raise EwsError("ErrorSubscriptionNotFound", "The subscription was not found.")
        mailbox, folder_ids, event_types, _ = found
        ctx.check_access(mailbox)
        after = _decode_watermark(req.findtext(m("Watermark")) or "")
        changes = ctx.store.changes(folder_ids, after, mailbox)[:512]
        note = sub(msg, m("Notification"))
        sub(note, t("SubscriptionId"), sub_id)
        sub(note, t("PreviousWatermark"), _encode_watermark(after))
        more = len(changes) == 512
        sub(note, t("MoreEvents"), str(more).lower())
        emitted = _add_events(ctx.store, note, changes, event_types)
        last = changes[-1].seq if changes else after
        if not emitted:
            status = sub(note, t("StatusEvent"))
            sub(status, t("Watermark"), _encode_watermark(last))
        ctx.store.set_watermark(sub_id, last)

    return _each("GetEvents", [req], fill)


def _add_events(
    store: Store, note: etree._Element, changes: list[Change], event_types: list[str]
) -> int:
    emitted = 0
    for change in changes:
        name = EVENT_ELEMENTS[change.kind]
        if name not in event_types:
            continue
        event = sub(note, t(name))
        sub(event, t("Watermark"), _encode_watermark(change.seq))
        stamp = dt.datetime.fromisoformat(change.at).replace(tzinfo=dt.UTC)
        sub(event, t("TimeStamp"), stamp.isoformat().replace("+00:00", "Z"))
        # As Exchange reports it: the ChangeKey the change left, so a client can tell an event
        # of its own write (whose answer carried that ChangeKey) from a later edit.
        key = change.change_key
        sub(event, t("ItemId"), Id=change.item_id, **({"ChangeKey": key} if key else {}))
        folder = store.folder(change.folder_id)
        if folder is not None:
            sub(event, t("ParentFolderId"), Id=folder.id, ChangeKey=folder.change_key)
        emitted += 1
    return emitted


def streaming_subscriptions(ctx: Context, req: etree._Element) -> list[str]:
    """The subscription ids of a GetStreamingEvents request, checked (a SoapFault otherwise)."""
    ids = [i.text or "" for i in _children(req.find(m("SubscriptionIds")))]
    unknown = [sub_id for sub_id in ids if ctx.store.subscription(sub_id) is None]
    if unknown:
        raise InvalidSubscriptions(unknown)
    for sub_id in ids:
        found = ctx.store.subscription(sub_id)
        assert found is not None
        try:
            ctx.check_access(found[0])
        except EwsError as exc:
            raise SoapFault(exc.code, exc.text) from None
    if not ids:
        raise SoapFault("ErrorInvalidRequest", "GetStreamingEvents needs SubscriptionIds")
    return ids


class InvalidSubscriptions(Exception):
    """GetStreamingEvents named subscriptions that do not exist (answered, not faulted)."""

    def __init__(self, sub_ids: list[str]) -> None:
        super().__init__(", ".join(sub_ids))
        self.sub_ids = sub_ids


def invalid_subscriptions(sub_ids: list[str]) -> etree._Element:
    """Exchange's answer to a stream request naming unknown subscriptions: an error message that
    lists them, so a client can drop those and keep the others."""
    message = _message("GetStreamingEvents", "ErrorInvalidSubscription", "Subscription is invalid.")
    ids = sub(message, m("ErrorSubscriptionIds"))
    for sub_id in sub_ids:
        # In m:, as Exchange sends them: exchangelib reads them there and its live suite, run
        # against a real server, expects the ids; the schema types the list with the request's
        # t: array (NonEmptyArrayOfSubscriptionIdsType).
        sub(ids, m("SubscriptionId"), sub_id)
    return envelope(_response("GetStreamingEvents", [message]))


def push_notification(store: Store, sub_id: str) -> tuple[etree._Element, int] | None:
    """The SendNotification document for a push subscription's new events (a status event when
    there are none) and the watermark it reaches; None when the subscription is gone."""
    found = store.subscription(sub_id)
    if found is None:
        return None
    mailbox, folder_ids, event_types, after = found
    changes = store.changes(folder_ids, after, mailbox)
    message = _message("SendNotification")
    note = sub(message, m("Notification"))
    sub(note, t("SubscriptionId"), sub_id)
    sub(note, t("PreviousWatermark"), _encode_watermark(after))
    sub(note, t("MoreEvents"), "false")
    last = changes[-1].seq if changes else after
    if not _add_events(store, note, changes, event_types):
        sub(sub(note, t("StatusEvent")), t("Watermark"), _encode_watermark(last))
    # The request's element is named for the operation, not "…Response".
    body = etree.Element(m("SendNotification"), nsmap={"m": M, "t": T})
    sub(body, m("ResponseMessages")).append(message)
    return envelope(body), last


def streaming_status(status: str) -> etree._Element:
    message = _message("GetStreamingEvents")
    sub(message, m("ConnectionStatus"), status)
    return _response("GetStreamingEvents", [message])


def streaming_envelope(store: Store, sub_ids: list[str], status: str) -> etree._Element | None:
    """One document of a GetStreamingEvents stream: new events (advancing each subscription), or
    None when there are none; with status "Closed" (the end), always a document."""
    message = _message("GetStreamingEvents")
    notes = etree.Element(m("Notifications"))
    for sub_id in sub_ids:
        found = store.subscription(sub_id)
        if found is None:
            continue
        mailbox, folder_ids, event_types, after = found
        changes = store.changes(folder_ids, after, mailbox)
        if not changes:
            continue
        note = etree.Element(t("Notification"))
        sub(note, t("SubscriptionId"), sub_id)
        sub(note, t("PreviousWatermark"), _encode_watermark(after))
        sub(note, t("MoreEvents"), "false")
        if _add_events(store, note, changes, event_types):
            notes.append(note)
        store.set_watermark(sub_id, changes[-1].seq)
    if len(notes):
        message.append(notes)
    elif status == "OK":
        return None
    sub(message, m("ConnectionStatus"), status)
    return envelope(_response("GetStreamingEvents", [message]))


def unsubscribe(ctx: Context, req: etree._Element) -> etree._Element:
    def fill(node: etree._Element, msg: etree._Element) -> None:
        sub_id = node.findtext(m("SubscriptionId")) or ""
        if ctx.store.is_push(sub_id):
            # A push subscription ends by answering a notification with Unsubscribe.
            raise EwsError(
                "ErrorInvalidSubscription",
                "Push subscriptions end when the client answers a notification with Unsubscribe.",
            )
        if not ctx.store.delete_subscription(sub_id):
            raise EwsError("ErrorSubscriptionNotFound", "The subscription was not found.")

    return _each("Unsubscribe", [req], fill)


def get_delegate(ctx: Context, req: etree._Element) -> etree._Element:
    """The mailbox's delegates (all, or those asked for by address); the emulator's delegates
    may open the whole mailbox, which Exchange reports as Editor on every folder."""
    mailbox = (req.findtext(f"{m('Mailbox')}/{t('EmailAddress')}") or ctx.acting_as).lower()
    ctx.check_access(mailbox)
    with_permissions = req.get("IncludePermissions", "false").lower() in {"true", "1"}
    delegates = ctx.store.delegates_of(mailbox)
    asked = _children(req.find(m("UserIds")))

    def delegate_user(msg: etree._Element, username: str) -> None:
        user = sub(msg, m("DelegateUser"))
        user_id = sub(user, t("UserId"))
        sub(user_id, t("PrimarySmtpAddress"), username)
        sub(user_id, t("DisplayName"), ctx.store.display_name(username))
        if with_permissions:
            rights = sub(user, t("DelegatePermissions"))
            for folder in ("Calendar", "Tasks", "Inbox", "Contacts", "Notes", "Journal"):
                sub(rights, t(f"{folder}FolderPermissionLevel"), "Editor")
        sub(user, t("ReceiveCopiesOfMeetingMessages"), "false")
        sub(user, t("ViewPrivateItems"), "true")

    messages = []
    wanted: list[etree._Element | None] = list(asked) or [None]
    for node in wanted:
        if node is None:
            targets = delegates
        else:
            sid = node.findtext(t("SID"))
            address = (node.findtext(t("PrimarySmtpAddress")) or "").lower()
            if sid is not None:
                # The emulator's users have no Windows SIDs: any SID names nobody.
                messages.append(
                    _error_message("DelegateUser", "ErrorInvalidUserSid", "SID is invalid.")
                )
                continue
            if ctx.store.user(address) is None and not ctx.store.mailbox_exists(address):
                messages.append(
                    _error_message(
                        "DelegateUser", "ErrorDelegateNoUser", "The user has no mailbox."
                    )
                )
                continue
            if address not in delegates:
                messages.append(
                    _error_message(
                        "DelegateUser", "ErrorNotDelegate", "The user is not a delegate."
                    )
                )
                continue
            targets = [address]
        for username in targets:
            msg = _message("DelegateUser")
            delegate_user(msg, username)
            messages.append(msg)
    for msg in messages:
        # The schema names these elements after their type.
        msg.tag = m("DelegateUserResponseMessageType")
    resp = etree.Element(m("GetDelegateResponse"), nsmap={"m": M, "t": T})
    resp.set("ResponseClass", "Success")
    sub(resp, m("ResponseCode"), "NoError")
    if messages:
        container = sub(resp, m("ResponseMessages"))
        for msg in messages:
            container.append(msg)
    sub(resp, m("DeliverMeetingRequests"), "DelegatesAndMe")
    return resp


# Inbox rules (MS-OXWSRULES): answered as the response element itself, with no ResponseMessages.


def _rules_mailbox(ctx: Context, req: etree._Element) -> str:
    mailbox = (req.findtext(m("MailboxSmtpAddress")) or ctx.acting_as).lower()
    ctx.check_access(mailbox)
    return mailbox


def _flat_error(op: str, exc: EwsError) -> etree._Element:
    answer = _message(op, exc.code, exc.text)
    answer.tag = m(f"{op}Response")
    return answer


def get_inbox_rules(ctx: Context, req: etree._Element) -> etree._Element:
    try:
        mailbox = _rules_mailbox(ctx, req)
    except EwsError as exc:
        return _flat_error("GetInboxRules", exc)
    answer = _message("GetInboxRules")
    answer.tag = m("GetInboxRulesResponse")
    # Outlook's client-only rule blob: the emulator never has one.
    sub(answer, m("OutlookRuleBlobExists"), "false")
    listed = sub(answer, m("InboxRules"))
    for _, xml in ctx.store.inbox_rules(mailbox):
        listed.append(etree.fromstring(xml))
    return answer


def update_inbox_rules(ctx: Context, req: etree._Element) -> etree._Element:
    op = "UpdateInboxRules"
    try:
        mailbox = _rules_mailbox(ctx, req)
    except EwsError as exc:
        return _flat_error(op, exc)

    def folder_of(node: etree._Element) -> tuple[str, str]:
        try:
            folder = resolve_folder(ctx, node)
        except EwsError:
            raise rules.FolderNotFound() from None
        return folder.id, folder.change_key

    existing = {rule_id for rule_id, _ in ctx.store.inbox_rules(mailbox)}
    changes, failed = rules.plan(req.find(m("Operations")), existing, folder_of)
    if failed:
        # All or nothing: one failing operation leaves the rule set as it was.
        answer = _flat_error(op, EwsError("ErrorInboxRulesValidationError", rules.VALIDATION_TEXT))
        rules.operation_errors(answer, failed)
        return answer
    ctx.store.replace_inbox_rules(mailbox, changes.upserts, changes.deletes)
    answer = _message(op)
    answer.tag = m(f"{op}Response")
    return answer


def convert_id(ctx: Context, req: etree._Element) -> etree._Element:
    destination = req.get("DestinationFormat", "EwsId")

    def fill(node: etree._Element, msg: etree._Element) -> None:
        source = node.get("Id", "")
        # The emulator's ids are opaque in every format; unknown ones are malformed, as for
        # exchangelib's version probe ("DUMMY").
        if ctx.store.item(source) is None and ctx.store.folder(source) is None:
            raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
        converted = sub(msg, m("AlternateId"), Format=destination, Id=source)
        converted.set("Mailbox", node.get("Mailbox", ""))
        # The element's declared type is abstract: the answer names the concrete one.
        converted.set(f"{{{XSI}}}type", "t:AlternateIdType")

    return _each("ConvertId", _children(req.find(m("SourceIds"))), fill)


OPERATIONS: dict[str, Callable[[Context, etree._Element], etree._Element]] = {
    "ConvertId": convert_id,
    "GetDelegate": get_delegate,
    "GetFolder": get_folder,
    "FindFolder": find_folder,
    "CreateFolder": create_folder,
    "DeleteFolder": delete_folder,
    "GetItem": get_item,
    "FindItem": find_item,
    "FindPeople": find_people,
    "GetPersona": get_persona,
    "GetMailTips": get_mail_tips,
    "CreateItem": create_item,
    "UpdateItem": update_item,
    "DeleteItem": delete_item,
    "MoveItem": move_item,
    "ArchiveItem": archive_item,
    "CopyItem": copy_item,
    "SendItem": send_item,
    "CreateAttachment": create_attachment,
    "GetAttachment": get_attachment,
    "DeleteAttachment": delete_attachment,
    "CreateUserConfiguration": create_user_configuration,
    "GetUserConfiguration": get_user_configuration,
    "UpdateUserConfiguration": update_user_configuration,
    "DeleteUserConfiguration": delete_user_configuration,
    "MarkAsJunk": mark_as_junk,
    "UpdateFolder": update_folder,
    "MoveFolder": move_folder,
    "EmptyFolder": empty_folder,
    "SyncFolderItems": sync_folder_items,
    "SyncFolderHierarchy": sync_folder_hierarchy,
    "Subscribe": subscribe,
    "GetEvents": get_events,
    "Unsubscribe": unsubscribe,
    "GetInboxRules": get_inbox_rules,
    "UpdateInboxRules": update_inbox_rules,
}


def operation_of(body: bytes) -> tuple[str, etree._Element, etree._Element | None]:
    """(operation name, its request element, the SOAP header) of a request."""
    try:
        root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise SoapFault("ErrorSchemaValidation", f"The request is not valid XML: {exc}") from None
    soap_body = root.find(f"{{{S}}}Body")
    if soap_body is None or not len(soap_body):
        raise SoapFault("ErrorInvalidRequest", "The request has no SOAP body.")
    request = soap_body[0]
    return local(request.tag), request, root.find(f"{{{S}}}Header")


def impersonated(header: etree._Element | None) -> str | None:
    if header is None:
        return None
    node = header.find(t("ExchangeImpersonation"))
    if node is None:
        return None
    sid = node.find(t("ConnectingSID"))
    if sid is None:
        return None
    for name in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
        value = sid.findtext(t(name))
        if value:
            return value.lower()
    return None


def handle(ctx: Context, operation: str, request: etree._Element) -> etree._Element:
    handler = OPERATIONS.get(operation)
    if handler is None:
        raise SoapFault(
            "ErrorInvalidRequest", f"The operation {operation} is not supported by the emulator."
        )
    try:
        return envelope(handler(ctx, request))
    except EwsError as exc:
        # An error before any per-element work (e.g. the target folder): one message for all.
        return envelope(_response(operation, [_error_message(operation, exc.code, exc.text)]))
