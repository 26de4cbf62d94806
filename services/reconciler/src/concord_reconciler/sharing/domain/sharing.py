"""Email sharing (issue #7): which listed emails go to Salesforce, under which key, as what.

One way and exactly once: an email becomes one EmailMessage per org, keyed by its Internet
Message-ID, whichever mailbox shares it first; the others only add their relations. This
module decides and builds; it does no I/O (the adapter in `adapters/sharing.py` claims keys,
calls the linker and writes through crm-connector). It is long because it holds everything an
email becomes on the way — selection, key, field limits, relations, attachments — each part
small and pure, and split apart they would only import each other.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.policy
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage as MimeMessage
from email.parser import BytesParser
from typing import Any

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.linker.v1 import linker_service_pb2 as linker
from concord_rpc import Aborted, FailedPrecondition, NotFound

__all__ = [
    "DRAFTS_FOLDERS",
    "LINKER_MAX_PARTICIPANTS",
    "AttachmentFile",
    "AttachmentPolicy",
    "EmailFieldLimits",
    "EmailNotFound",
    "EmailNotShareable",
    "EmailSelection",
    "EmailShareBusy",
    "FieldLoss",
    "MalformedMime",
    "Quarantine",
    "Relation",
    "ShareKey",
    "SharePlan",
    "apply_choice",
    "attachments_from_mime",
    "clean_body",
    "clean_display_name",
    "email_selection",
    "is_draft",
    "is_valid_address",
    "normalise_message_id",
    "one_line",
    "participants_of",
    "plan_share",
    "select_shared",
    "share_key",
    "thread_identifier",
    "truncate_html",
    "truncate_text",
]

SALESFORCE_CATEGORY = "Salesforce"
SALESFORCE_EMAILS_FOLDER = "Salesforce Emails"

# Well-known names of the drafts folder (EWS distinguished folder, Graph, Gmail, IMAP SPECIAL-USE
# conventions). An email categorised while being written sits here until it is sent; sharing it
# then would freeze an unfinished text in Salesforce, so it waits for its copy in Sent Items.
DRAFTS_FOLDERS = frozenset({"drafts", "draft", "[gmail]/drafts", "entwürfe", "brouillons"})

# The linker answers INVALID_ARGUMENT beyond this many participants (its MAX_PARTICIPANTS).
LINKER_MAX_PARTICIPANTS = 500

# Salesforce EmailMessage.Status: 1 Read (received), 3 Sent. Never 5 (Draft): a shared email
# is a finished message, and non-draft EmailMessages cannot be edited afterwards.
STATUS_READ = "1"
STATUS_SENT = "3"


# ---- selection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailSelection:
    """How a user marks emails to share, read from their effective MailboxSettings."""

    enabled: bool = True
    category: str | None = SALESFORCE_CATEGORY
    folder: str | None = SALESFORCE_EMAILS_FOLDER
    thread: bool = False
    all_new: bool = False
    # Auto-share covers *new* mail: messages dated at or after this instant.
    all_new_since: datetime | None = None


def email_selection(
    settings: st.MailboxSettings, *, all_new_since: datetime | None = None
) -> EmailSelection:
    """The EMAIL entry of effective settings; no entry (or disabled, or NONE) shares nothing."""
    for sharing in settings.sharing:
        if sharing.kind != res.OBJECT_KIND_EMAIL:
            continue
        modes = set(sharing.selection_modes)
        enabled = sharing.enabled and sharing.direction != res.SYNC_DIRECTION_NONE
        return EmailSelection(
            enabled=enabled,
            category=(sharing.category or SALESFORCE_CATEGORY)
            if st.SELECTION_MODE_CATEGORY in modes
            else None,
            folder=(sharing.folder or SALESFORCE_EMAILS_FOLDER)
            if st.SELECTION_MODE_FOLDER in modes
            else None,
            thread=st.SELECTION_MODE_THREAD in modes,
            all_new=st.SELECTION_MODE_ALL_NEW in modes,
            all_new_since=all_new_since,
        )
    return EmailSelection(enabled=False)


def _folder_leaf(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip().casefold()


def is_draft(item: res.EmailItem, collection: str = "") -> bool:
    folder = (item.folder or collection).replace("\\", "/").strip().casefold()
    return folder in DRAFTS_FOLDERS or _folder_leaf(folder) in DRAFTS_FOLDERS


def _in_folder(item: res.EmailItem, collection: str, folder: str) -> bool:
    wanted = folder.replace("\\", "/").strip("/").casefold()
    held = (item.folder or collection).replace("\\", "/").strip("/").casefold()
    # A display path (`Inbox/Salesforce Emails`) or just the folder's own name both count.
    return held == wanted or _folder_leaf(held) == _folder_leaf(wanted)


def _message_time(item: res.EmailItem) -> datetime | None:
    for stamp in (item.sent_time, item.received_time):
        if stamp.seconds or stamp.nanos:
            return stamp.ToDatetime(tzinfo=UTC)
    return None


def thread_identifier(item: res.EmailItem) -> str:
    """The thread's root Message-ID, the same in every mailbox and provider.

    A provider's conversation id differs between mailboxes, so it is only the fallback when the
    message carries no threading headers at all.
    """
    for candidate in (*item.references[:1], item.in_reply_to, item.internet_message_id):
        normalised = normalise_message_id(candidate)
        if normalised:
            return f"<{normalised}>"
    return item.conversation_id


def _direct_reason(item: res.EmailItem, collection: str, selection: EmailSelection) -> str | None:
    if selection.folder and _in_folder(item, collection, selection.folder):
        return "folder"
    if selection.category and any(
        c.strip().casefold() == selection.category.casefold() for c in item.categories
    ):
        return "category"
    if selection.all_new:
        when = _message_time(item)
        if selection.all_new_since is None or (
            when is not None and when >= selection.all_new_since
        ):
            return "all_new"
    return None


def select_shared(
    changes: Sequence[res.MailChange],
    selection: EmailSelection,
    saved_threads: Iterable[str] = (),
) -> dict[int, str]:
    """Which listed changes are to be shared, by index, with why.

    `saved_threads` are the thread identifiers (and provider conversation ids) of emails this
    mailbox already shared; with thread mode on, every other message of those threads is
    shared too, as is every message of a thread something in this listing selects.
    Deletes, drafts and items listed with a problem are left to the caller (problems are
    quarantined, deletes never unshare: sharing is one way).
    """
    if not selection.enabled:
        return {}
    chosen: dict[int, str] = {}
    candidates: list[tuple[int, res.EmailItem]] = []
    for index, change in enumerate(changes):
        if change.type != res.CHANGE_TYPE_UPSERT or not change.item.HasField("email"):
            continue
        item = change.item.email
        if is_draft(item, change.ref.collection):
            continue
        candidates.append((index, item))
        reason = _direct_reason(item, change.ref.collection, selection)
        if reason:
            chosen[index] = reason
    if selection.thread:
        threads = set(saved_threads)
        for index, item in candidates:
            if index in chosen:
                threads.add(thread_identifier(item))
                if item.conversation_id:
                    threads.add(item.conversation_id)
        for index, item in candidates:
            if index not in chosen and (
                thread_identifier(item) in threads
                or (item.conversation_id and item.conversation_id in threads)
            ):
                chosen[index] = "thread"
    return chosen


# ---- the exactly-once key -----------------------------------------------------------------

_MSGID_TOKEN = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")
_COMMENT = re.compile(r"\([^()]*\)")


def normalise_message_id(raw: str) -> str:
    """The Message-ID as one canonical token without angle brackets, or "" when there is none.

    Servers and clients differ in what they hand back: with or without `<>`, folded onto two
    lines, with a trailing comment, with the domain in another case. The left part is kept as
    it is (RFC 5322 makes it case-sensitive); the right part is a domain, so it is lower-cased.
    """
    text = _COMMENT.sub("", raw or "")
    bracketed = _MSGID_TOKEN.search(text)
    token = bracketed.group(1) if bracketed else text
    token = _WHITESPACE.sub("", token).strip("<>")
    if not token or any(ord(c) < 0x21 or ord(c) == 0x7F for c in token):
        return ""
    left, at, right = token.rpartition("@")
    if not at:
        return token
    return f"{left}@{right.lower()}"


@dataclass(frozen=True)
class ShareKey:
    """What makes sharing exactly once inside one org."""

    org_id: str
    # The normalised Message-ID, or `sha256:<hex>` of the content when the email has none.
    value: str
    from_message_id: bool

    @property
    def digest(self) -> str:
        """Fixed-length form of the key for the store's unique index."""
        return hashlib.sha256(f"{self.org_id}\n{self.value}".encode()).hexdigest()

    @property
    def link_id(self) -> str:
        """The EmailMessage's `Concord_Link_Id__c`: Salesforce refuses a second one (unique)."""
        return f"email-{self.digest[:40]}"

    @property
    def note(self) -> str:
        if self.from_message_id:
            return ""
        return (
            "the email has no Message-ID; it is keyed by a hash of its sender, date, subject "
            "and body, so an edited copy would count as another email"
        )


def _canonical_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return _WHITESPACE.sub(" ", text).strip()


def share_key(org_id: str, item: res.EmailItem) -> ShareKey:
    message_id = normalise_message_id(item.internet_message_id)
    if message_id:
        return ShareKey(org_id, message_id, from_message_id=True)
    when = _message_time(item)
    parts = [
        item.from_address.address.strip().lower(),
        when.replace(microsecond=0).isoformat() if when else "",
        _canonical_text(item.subject),
        _canonical_text(item.body_text),
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return ShareKey(org_id, f"sha256:{digest}", from_message_id=False)


# ---- addresses ----------------------------------------------------------------------------

# An addr-spec as Salesforce's email fields accept it: one @, a dot-atom-ish local part, a
# domain of labels. Quoted local parts and IP literals are rare enough to be treated as invalid.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")
_DOMAIN = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)


def is_valid_address(address: str) -> bool:
    local, at, domain = address.strip().rpartition("@")
    if not at or not _LOCAL.fullmatch(local) or local.startswith(".") or ".." in local:
        return False
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return bool(_DOMAIN.fullmatch(ascii_domain))


def one_line(text: str) -> str:
    """`text` without control or format characters, on one line.

    Headers can carry anything a sender typed, including NUL, escape sequences and bidi
    overrides; none of it belongs in a Salesforce name or subject field.
    """
    kept = "".join(
        " " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
        for c in text
        if unicodedata.category(c) != "Cf"
    )
    return _WHITESPACE.sub(" ", kept).strip()


def clean_display_name(name: str) -> str:
    """A display name as one clean line, without the quotes a header may wrap it in."""
    return one_line(name).strip('"').strip()


_BODY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_body(text: str) -> str:
    """A body without the C0 controls (NUL above all) that a text field cannot hold."""
    return _BODY_CONTROLS.sub("", text)


def participants_of(item: res.EmailItem) -> tuple[list[res.Participant], list[FieldLoss]]:
    """Sender, To and Cc with valid addresses, once each, for the linker.

    Bcc is left out: the people in To and Cc never saw those addresses, and the record is
    visible to them through their Contacts. Beyond the linker's limit the rest is dropped and
    said so; the EmailMessage's address fields still carry as many as fit.
    """
    groups = (
        ([item.from_address] if item.from_address.address else [], res.PARTICIPANT_ROLE_SENDER),
        (list(item.to), res.PARTICIPANT_ROLE_TO_RECIPIENT),
        (list(item.cc), res.PARTICIPANT_ROLE_CC_RECIPIENT),
    )
    seen: set[str] = set()
    found: list[res.Participant] = []
    invalid = 0
    for addresses, role in groups:
        for address in addresses:
            text = address.address.strip()
            if not is_valid_address(text):
                invalid += 1
                continue
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            found.append(
                res.Participant(
                    email=text, display_name=clean_display_name(address.display_name), role=role
                )
            )
    losses: list[FieldLoss] = []
    if invalid:
        losses.append(
            FieldLoss("participants", "DROPPED", f"{invalid} invalid address(es) left out")
        )
    if len(found) > LINKER_MAX_PARTICIPANTS:
        losses.append(
            FieldLoss(
                "participants",
                "DROPPED",
                f"{len(found) - LINKER_MAX_PARTICIPANTS} participant(s) beyond the first "
                f"{LINKER_MAX_PARTICIPANTS} not linked",
            )
        )
        found = found[:LINKER_MAX_PARTICIPANTS]
    return found, losses


# ---- the EmailMessage ---------------------------------------------------------------------


@dataclass(frozen=True)
class FieldLoss:
    """A field that did not reach Salesforce intact (never carries the value)."""

    field: str
    # TRUNCATED, DROPPED or UNREPRESENTABLE, as FieldLossKind names them.
    kind: str
    detail: str


@dataclass(frozen=True)
class EmailFieldLimits:
    """Maximum lengths of EmailMessage text fields.

    The defaults are the Object Reference's; the adapter replaces them with the org's own
    describe (crm-connector DescribeObject), which is what Salesforce enforces.
    """

    Subject: int = 3000
    FromAddress: int = 1000
    FromName: int = 1000
    ToAddress: int = 4000
    CcAddress: int = 4000
    TextBody: int = 131072
    HtmlBody: int = 131072
    MessageIdentifier: int = 255
    ThreadIdentifier: int = 255

    @classmethod
    def from_lengths(cls, lengths: Mapping[str, int]) -> EmailFieldLimits:
        defaults = cls()
        known = {
            name: lengths.get(name) or getattr(defaults, name) for name in cls.__dataclass_fields__
        }
        return cls(**known)


TRUNCATION_NOTE = "\n\n[Truncated by Concord: the original was {size} characters long.]"
HTML_TRUNCATION_NOTE = "<p>[Truncated by Concord: the original was {size} characters long.]</p>"


def _truncate(text: str, limit: int, note: str) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    marker = note.format(size=len(text))
    if len(marker) >= limit:
        return text[:limit], True
    return text[: limit - len(marker)] + marker, True


def truncate_text(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to `limit` characters with a note saying so; unchanged when it fits."""
    return _truncate(text, limit, TRUNCATION_NOTE)


_OPEN_TAG_TAIL = re.compile(r"<[^>]*$")
_OPEN_ENTITY_TAIL = re.compile(r"&[#A-Za-z0-9]{0,31}$")


def truncate_html(html: str, limit: int) -> tuple[str, bool]:
    """Like `truncate_text`, without leaving half a tag or entity before the note."""
    if len(html) <= limit:
        return html, False
    marker = HTML_TRUNCATION_NOTE.format(size=len(html))
    if len(marker) >= limit:
        return html[:limit], True
    head = html[: limit - len(marker)]
    head = _OPEN_ENTITY_TAIL.sub("", _OPEN_TAG_TAIL.sub("", head))
    return head + marker, True


def _address_field(
    addresses: Sequence[res.EmailAddress], limit: int, name: str
) -> tuple[str, list[FieldLoss]]:
    """Valid addresses joined by `; `, whole addresses only, as many as fit."""
    valid = [a.address.strip() for a in addresses if is_valid_address(a.address)]
    losses = []
    if len(valid) < len(addresses):
        losses.append(
            FieldLoss(name, "DROPPED", f"{len(addresses) - len(valid)} invalid address(es)")
        )
    kept: list[str] = []
    size = 0
    for address in valid:
        extra = len(address) + (2 if kept else 0)
        if size + extra > limit:
            losses.append(
                FieldLoss(
                    name,
                    "TRUNCATED",
                    f"{len(valid) - len(kept)} of {len(valid)} addresses did not fit "
                    f"in {limit} characters",
                )
            )
            break
        kept.append(address)
        size += extra
    return "; ".join(kept), losses


@dataclass(frozen=True)
class Relation:
    """One EmailMessageRelation: a person the email is related to, in one role."""

    relation_id: str
    relation_type: str  # FromAddress, ToAddress, CcAddress
    address: str


_RELATION_TYPES = {
    res.PARTICIPANT_ROLE_SENDER: "FromAddress",
    res.PARTICIPANT_ROLE_TO_RECIPIENT: "ToAddress",
    res.PARTICIPANT_ROLE_CC_RECIPIENT: "CcAddress",
}
_RELATABLE = ("Contact", "Lead", "User")


def relations_from(resolution: linker.ResolveParticipantsResponse) -> list[Relation]:
    """One relation per resolved person and role: one EmailMessage, never a clone per person."""
    found: dict[tuple[str, str], Relation] = {}
    for decision in resolution.resolutions:
        record = decision.record
        if not record.id or record.sobject_type not in _RELATABLE:
            continue
        kind = _RELATION_TYPES.get(decision.participant.role)
        if kind is None:
            continue
        found.setdefault((record.id, kind), Relation(record.id, kind, decision.participant.email))
    return list(found.values())


# Salesforce key prefixes of what the sidebar offers: people become relations, the rest the
# email's RelatedTo (Account, Opportunity, Case).
_PEOPLE_PREFIXES = ("003", "00Q", "005")
_RELATED_TO_PREFIXES = ("001", "006", "500")


def apply_choice(
    resolution: linker.ResolveParticipantsResponse, chosen: Sequence[str]
) -> tuple[linker.ResolveParticipantsResponse, list[FieldLoss]]:
    """The linker's resolution narrowed to the records the user chose in the sidebar.

    A relation names a participant's role (from, to, cc), so a chosen person becomes one only
    where the resolution found them among the email's participants; a chosen person who is
    not a participant is reported, not related under a made-up role. The chosen Account,
    Opportunity or Case replaces the linker's RelatedTo. Records the user left out are
    dropped: the choice is theirs.
    """
    ids = {c.strip() for c in chosen if c.strip()}
    chosen_ids = {i[:15] for i in ids}
    narrowed = linker.ResolveParticipantsResponse()
    narrowed.CopyFrom(resolution)
    del narrowed.resolutions[:]
    placed: set[str] = set()
    for decision in resolution.resolutions:
        if decision.record.id[:15] in chosen_ids:
            narrowed.resolutions.append(decision)
            placed.add(decision.record.id[:15])
    narrowed.ClearField("what")
    related = [i for i in ids if i.startswith(_RELATED_TO_PREFIXES)]
    if related:
        narrowed.what.id = sorted(related)[0]
    losses = [
        FieldLoss("Relation", "DROPPED", f"{record_id} is not among the email's participants")
        for record_id in sorted(ids)
        if record_id.startswith(_PEOPLE_PREFIXES) and record_id[:15] not in placed
    ]
    if len(related) > 1:
        losses.append(
            FieldLoss("RelatedToId", "DROPPED", "an email relates to one record; kept the first")
        )
    return narrowed, losses


@dataclass(frozen=True)
class AttachmentPolicy:
    """Which attachments go with a shared email.

    OrgSettings has no attachment fields yet, so the caller passes the org's policy. The
    default cap keeps one file, grown by a third in base64, inside one gRPC message to
    crm-connector (4 MiB by default); 10 files per email at most.
    """

    enabled: bool = True
    max_bytes: int = 2_500_000
    max_count: int = 10


@dataclass(frozen=True)
class AttachmentFile:
    name: str
    content_type: str
    content: bytes


class MalformedMime(Exception):
    """The message's MIME cannot be trusted; the email is quarantined with this reason."""

    reason = "MALFORMED_MIME"


# Defects after which the parts of a message are guesses, not what the sender sent.
_FATAL_DEFECTS = (
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.NoBoundaryInMultipartDefect,
)


_DECODING_DEFECTS = (
    email.errors.InvalidBase64CharactersDefect,
    email.errors.InvalidBase64PaddingDefect,
    email.errors.InvalidBase64LengthDefect,
)


def _defects(message: MimeMessage) -> list[email.errors.MessageDefect]:
    found: list[email.errors.MessageDefect] = []
    for part in message.walk():
        found.extend(part.defects)
    return found


def _safe_name(name: str, index: int) -> str:
    cleaned = clean_display_name(name).replace("/", "_").replace("\\", "_")
    return cleaned[:255] or f"attachment-{index}"


def attachments_from_mime(
    mime: bytes, policy: AttachmentPolicy
) -> tuple[list[AttachmentFile], list[FieldLoss]]:
    """The attachments to share, per policy; `MalformedMime` when the structure is broken.

    The text and HTML bodies come from the mail connector already converted; the MIME is
    read here only for attachments, and to refuse a message whose parts cannot be told apart.
    """
    try:
        message = BytesParser(policy=email.policy.default).parsebytes(mime)
        assert isinstance(message, MimeMessage)
        fatal = [d for d in _defects(message) if isinstance(d, _FATAL_DEFECTS)]
        if fatal or not message.keys():
            kinds = sorted({type(d).__name__ for d in fatal}) or ["no headers"]
            raise MalformedMime(f"MIME structure is broken ({', '.join(kinds)})")
        if not policy.enabled:
            return [], []
        files: list[AttachmentFile] = []
        losses: list[FieldLoss] = []
        if any(isinstance(d, email.errors.CloseBoundaryNotFoundDefect) for d in _defects(message)):
            # Common after a relay cut the message short: the parts read fine but the last one
            # may be incomplete, so the email is shared and no attachment is guessed at.
            losses.append(
                FieldLoss("Attachment", "DROPPED", "the MIME ends before its closing boundary")
            )
            return files, losses
        for index, part in enumerate(message.iter_attachments(), start=1):
            assert isinstance(part, MimeMessage)
            content = _payload(part)
            name = _safe_name(part.get_filename() or "", index)
            # Decoding records base64/quoted-printable damage on the part: its bytes would be a
            # guess, so that file stays behind and the rest of the email goes.
            damaged = [d for d in part.defects if isinstance(d, _DECODING_DEFECTS)]
            if damaged:
                losses.append(
                    FieldLoss(
                        "Attachment",
                        "DROPPED",
                        f"attachment {index} is damaged ({type(damaged[0]).__name__})",
                    )
                )
                continue
            if len(files) >= policy.max_count:
                losses.append(
                    FieldLoss("Attachment", "DROPPED", f"more than {policy.max_count} files")
                )
                break
            if len(content) > policy.max_bytes:
                losses.append(
                    FieldLoss(
                        "Attachment",
                        "DROPPED",
                        f"attachment {index} is {len(content)} bytes, over the "
                        f"{policy.max_bytes}-byte cap",
                    )
                )
                continue
            files.append(AttachmentFile(name, part.get_content_type()[:120], content))
        return files, losses
    except MalformedMime:
        raise
    except (
        email.errors.MessageError,
        LookupError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        binascii.Error,
    ) as error:
        # The stdlib parser raises these on header and charset garbage it cannot recover from.
        raise MalformedMime(f"MIME could not be parsed ({type(error).__name__})") from error


def _payload(part: MimeMessage) -> bytes:
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        return raw
    # A message/rfc822 attachment: share it as the .eml it is.
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], MimeMessage):
        return inner[0].as_bytes(policy=email.policy.SMTP)
    return b""


@dataclass(frozen=True)
class Quarantine:
    """An email that cannot be shared as it is; shown on the dashboard, retried on request."""

    reason: str
    message: str


@dataclass(frozen=True)
class SharePlan:
    """Everything to write for one email."""

    key: ShareKey
    fields: dict[str, Any]
    relations: tuple[Relation, ...]
    attachments: tuple[AttachmentFile, ...]
    losses: tuple[FieldLoss, ...]
    notes: tuple[str, ...] = field(default=())
    thread: str = ""

    def attachment_fields(self, email_message_id: str) -> list[dict[str, Any]]:
        """Salesforce Attachment records under the EmailMessage (`ParentId`)."""
        return [
            {
                "ParentId": email_message_id,
                "Name": file.name,
                "ContentType": file.content_type,
                "Body": base64.b64encode(file.content).decode("ascii"),
            }
            for file in self.attachments
        ]


def plan_share(
    key: ShareKey,
    item: res.EmailItem,
    *,
    mailbox_address: str,
    resolution: linker.ResolveParticipantsResponse,
    limits: EmailFieldLimits = EmailFieldLimits(),
    attachments: AttachmentPolicy = AttachmentPolicy(),
    linking_losses: Sequence[FieldLoss] = (),
) -> SharePlan | Quarantine:
    """The EmailMessage, its relations and attachments, or why the email is quarantined."""
    losses: list[FieldLoss] = list(linking_losses)
    files: list[AttachmentFile] = []
    if item.mime_content:
        try:
            files, attachment_losses = attachments_from_mime(item.mime_content, attachments)
        except MalformedMime as error:
            return Quarantine(MalformedMime.reason, str(error))
        losses.extend(attachment_losses)
    elif item.has_attachments and attachments.enabled:
        losses.append(
            FieldLoss("Attachment", "DROPPED", "the mail connector gave no MIME to read them from")
        )

    fields: dict[str, Any] = {}

    def text(name: str, value: str, html: bool = False) -> None:
        limit = getattr(limits, name)
        cut, truncated = (truncate_html if html else truncate_text)(value, limit)
        if truncated:
            losses.append(FieldLoss(name, "TRUNCATED", f"{len(value)} characters cut to {limit}"))
        if cut:
            fields[name] = cut

    text("Subject", one_line(item.subject))
    sender = item.from_address.address.strip()
    if sender and is_valid_address(sender):
        text("FromAddress", sender)
    elif sender:
        losses.append(FieldLoss("FromAddress", "DROPPED", "the sender's address is invalid"))
    text("FromName", clean_display_name(item.from_address.display_name))
    for name, addresses in (("ToAddress", item.to), ("CcAddress", item.cc)):
        value, address_losses = _address_field(addresses, getattr(limits, name), name)
        losses.extend(address_losses)
        if value:
            fields[name] = value
    text("TextBody", clean_body(item.body_text))
    text("HtmlBody", clean_body(item.body_html), html=True)
    when = _message_time(item)
    if when is not None:
        fields["MessageDate"] = when.isoformat().replace("+00:00", "Z")
    if key.from_message_id:
        text("MessageIdentifier", f"<{key.value}>")
    thread = thread_identifier(item)
    text("ThreadIdentifier", thread)
    outgoing = bool(sender) and sender.lower() == mailbox_address.strip().lower()
    fields["Incoming"] = not outgoing
    fields["Status"] = STATUS_SENT if outgoing else STATUS_READ
    if resolution.HasField("what") and resolution.what.id:
        fields["RelatedToId"] = resolution.what.id
    notes = (key.note,) if key.note else ()
    return SharePlan(
        key=key,
        fields=fields,
        relations=tuple(relations_from(resolution)),
        attachments=tuple(files),
        losses=tuple(losses),
        notes=notes,
        thread=thread,
    )


# ---- what the Save button answers -----------------------------------------------------------


class EmailNotFound(NotFound):
    reason = "EMAIL_NOT_FOUND"

    def __init__(self, mailbox: str, native_id: str) -> None:
        super().__init__(
            f"{mailbox} has no such email", metadata={"mailbox": mailbox, "nativeId": native_id}
        )


class EmailNotShareable(FailedPrecondition):
    """Malformed, refused by Salesforce, or the org keeps emails elsewhere; `cause` says which."""

    reason = "EMAIL_NOT_SHAREABLE"

    def __init__(self, mailbox: str, cause: str, message: str) -> None:
        super().__init__(
            f"the email cannot be shared: {message}",
            metadata={"mailbox": mailbox, "cause": cause},
            precondition_violations=[("EMAIL", cause, message)],
        )


class EmailShareBusy(Aborted):
    """Another session is writing the same email right now; retrying shortly succeeds."""

    reason = "EMAIL_SHARE_BUSY"
