"""File and item attachments, kept inside their item as Exchange keeps them (MS-OXWSATT).

An item's stored `Attachments` hold each attachment whole (a file's Content, an item's embedded
item) with a key of its own. What a client sees depends on how it asks: GetItem lists them
without content; GetAttachment answers one whole; CreateItem and CreateAttachment answer only
the new ids. An attachment id names its item's id too, so it no longer resolves once the item
is moved, deleted or the attachment removed, as Exchange's ids do not.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable

from lxml import etree

from concord_exchange_emulator.xmlns import T, local, sub, t

ATTACHMENT_PREFIX = "AAMkAtt"
_KEY = re.compile(r"^[0-9A-F]{16}$")
KINDS = ("FileAttachment", "ItemAttachment")
# What GetItem lists of each attachment: everything but its content.
_SUMMARY = ("Name", "ContentType", "ContentId", "ContentLocation", "Size", "LastModifiedTime")
_ORDER = {
    name: i
    for i, name in enumerate(
        (
            "AttachmentId",
            "Name",
            "ContentType",
            "ContentId",
            "ContentLocation",
            "Size",
            "LastModifiedTime",
            "IsInline",
            "IsContactPhoto",
            "Content",
        )
    )
}


class AttachmentError(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def attachment_id(root_id: str, key: str) -> str:
    return f"{ATTACHMENT_PREFIX}{root_id}_{key}"


def parse_id(value: str) -> tuple[str, str]:
    """(root item id, attachment key) of an attachment id; malformed ones are refused as
    Exchange refuses an id it cannot decode."""
    if not value.startswith(ATTACHMENT_PREFIX):
        raise AttachmentError("ErrorInvalidIdMalformed", "Id is malformed.")
    root, _, key = value[len(ATTACHMENT_PREFIX) :].rpartition("_")
    if not root or not _KEY.match(key):
        raise AttachmentError("ErrorInvalidIdMalformed", "Id is malformed.")
    return root, key


def _order(attachment: etree._Element) -> None:
    children = list(attachment)
    for child in children:
        attachment.remove(child)
    for child in sorted(children, key=lambda c: _ORDER.get(local(c.tag), len(_ORDER))):
        attachment.append(child)


def _set(node: etree._Element, name: str, value: str) -> None:
    found = node.find(t(name))
    if found is None:
        found = sub(node, t(name))
    found.text = value


def prepare(
    attachment: etree._Element, now: str, embed: Callable[[etree._Element], etree._Element]
) -> etree._Element:
    """A client's attachment as stored: a key of its own and the fields Exchange sets (size,
    time, content type); `embed` prepares an item attachment's item as a new item."""
    kind = local(attachment.tag)
    if kind not in KINDS:
        raise AttachmentError(
            "ErrorInvalidItemForOperationCreateItemAttachment",
            f"{kind} attachments are not supported.",
        )
    if not (attachment.findtext(t("Name")) or "").strip():
        raise AttachmentError("ErrorRequiredPropertyMissing", "Required property is missing.")
    stored = etree.Element(t(kind), nsmap={"t": T})
    for child in attachment:
        if local(child.tag) not in {"AttachmentId", "Size", "LastModifiedTime"}:
            stored.append(etree.fromstring(etree.tostring(child)))
    sub(stored, t("AttachmentId"), Id=uuid.uuid4().hex[:16].upper())
    _set(stored, "LastModifiedTime", now)
    if stored.find(t("IsInline")) is None:
        _set(stored, "IsInline", "false")
    if kind == "FileAttachment":
        content = stored.findtext(t("Content")) or ""
        try:
            size = len(base64.b64decode(content, validate=True))
        except (binascii.Error, ValueError):
            raise AttachmentError(
                "ErrorSchemaValidation", "The attachment's Content is not base64."
            ) from None
        if stored.find(t("ContentType")) is None:
            _set(stored, "ContentType", "application/octet-stream")
        if stored.find(t("IsContactPhoto")) is None:
            _set(stored, "IsContactPhoto", "false")
    else:
        inner = next((c for c in stored if local(c.tag) not in _ORDER), None)
        if inner is None:
            raise AttachmentError(
                "ErrorMissingItemForCreateItemAttachment", "The item attachment has no item."
            )
        prepared = embed(inner)
        stored.replace(inner, prepared)
        size = len(etree.tostring(prepared))
    _set(stored, "Size", str(size))
    _order(stored)
    return stored


def add(item: etree._Element, attachment: etree._Element) -> None:
    container = item.find(t("Attachments"))
    if container is None:
        container = sub(item, t("Attachments"))
    container.append(attachment)
    mark(item)


def mark(item: etree._Element) -> None:
    """HasAttachments: whether the item has an attachment that is not shown inline."""
    container = item.find(t("Attachments"))
    if container is None:
        return
    shown = any(a.findtext(t("IsInline")) != "true" for a in container)
    if not len(container):
        item.remove(container)
    _set(item, "HasAttachments", "true" if shown else "false")


def find(item: etree._Element, key: str) -> etree._Element | None:
    for attachment in item.findall(f"{t('Attachments')}/*"):
        node = attachment.find(t("AttachmentId"))
        if node is not None and node.get("Id") == key:
            return attachment
    return None


def remove(item: etree._Element, attachment: etree._Element) -> None:
    container = item.find(t("Attachments"))
    assert container is not None
    container.remove(attachment)
    mark(item)


def _with_id(
    attachment: etree._Element, root_id: str, root_change_key: str | None
) -> etree._Element:
    out = etree.Element(attachment.tag, nsmap={"t": T})
    key = attachment.find(t("AttachmentId"))
    ident = sub(
        out,
        t("AttachmentId"),
        Id=attachment_id(root_id, key.get("Id", "") if key is not None else ""),
    )
    if root_change_key is not None:
        ident.set("RootItemId", root_id)
        ident.set("RootItemChangeKey", root_change_key)
    return out


def id_only(attachment: etree._Element, root_id: str, root_change_key: str) -> etree._Element:
    """What CreateItem and CreateAttachment answer of a new attachment."""
    return _with_id(attachment, root_id, root_change_key)


def summary(attachment: etree._Element, root_id: str) -> etree._Element:
    """What GetItem lists of an attachment: its id and properties, no content."""
    out = _with_id(attachment, root_id, None)
    for child in attachment:
        name = local(child.tag)
        if name in _SUMMARY or name in {"IsInline", "IsContactPhoto"}:
            out.append(etree.fromstring(etree.tostring(child)))
    return out


def whole(
    attachment: etree._Element,
    root_id: str,
    render_embedded: Callable[[etree._Element], etree._Element],
) -> etree._Element:
    """What GetAttachment answers: the attachment with its content or its item."""
    out = summary(attachment, root_id)
    for child in attachment:
        name = local(child.tag)
        if name == "Content":
            out.append(etree.fromstring(etree.tostring(child)))
        elif name not in _ORDER:
            out.append(render_embedded(child))
    _order(out)
    return out
