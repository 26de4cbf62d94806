"""Email sharing decisions: selection, the exactly-once key, the EmailMessage, attachments."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as hs

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.linker.v1 import linker_service_pb2 as linker
from concord_reconciler.mailboxes.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
)
from concord_reconciler.sharing.domain.sharing import (
    LINKER_MAX_PARTICIPANTS,
    AttachmentPolicy,
    EmailFieldLimits,
    EmailSelection,
    Quarantine,
    SharePlan,
    apply_choice,
    attachments_from_mime,
    clean_display_name,
    email_selection,
    is_valid_address,
    normalise_message_id,
    participants_of,
    plan_share,
    relations_from,
    select_shared,
    share_key,
    thread_identifier,
    truncate_html,
    truncate_text,
)

pytestmark = pytest.mark.timeout(60)


def _email(**fields: object) -> res.EmailItem:
    item = res.EmailItem(
        internet_message_id=str(fields.pop("message_id", "<m1@example.com>")),
        subject=str(fields.pop("subject", "Quarterly numbers")),
        from_address=res.EmailAddress(address="ann@acme.com", display_name="Ann"),
        to=[res.EmailAddress(address="bob@example.org", display_name="Bob")],
        body_text="Hello",
        folder=str(fields.pop("folder", "Inbox")),
    )
    item.sent_time.FromDatetime(datetime(2026, 11, 2, 9, 30, tzinfo=UTC))
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(item, name).extend(value)
        else:
            setattr(item, name, value)
    return item


def _change(item: res.EmailItem, collection: str = "") -> res.MailChange:
    return res.MailChange(
        type=res.CHANGE_TYPE_UPSERT,
        ref=res.ItemRef(kind=res.OBJECT_KIND_EMAIL, native_id="n", collection=collection),
        item=res.MailItem(email=item),
    )


DEFAULT = email_selection(effective_mailbox_settings("m", None, default_org_settings("acme"), ""))


# ---- selection ----------------------------------------------------------------------------


def test_the_default_shares_the_folder_and_the_category_only() -> None:
    changes = [
        _change(_email(folder="Inbox/Salesforce Emails")),
        _change(_email(categories=["salesforce "])),
        _change(_email()),
    ]
    assert select_shared(changes, DEFAULT) == {0: "folder", 1: "category"}


def test_a_categorised_draft_waits_for_its_sent_copy() -> None:
    draft = _email(folder="Drafts", categories=["Salesforce"])
    sent = _email(folder="Sent Items", categories=["Salesforce"])
    assert select_shared([_change(draft)], DEFAULT) == {}
    assert select_shared([_change(draft, "drafts"), _change(sent)], DEFAULT) == {1: "category"}


def test_thread_mode_shares_the_rest_of_a_saved_thread() -> None:
    settings = st.MailboxSettings(
        sharing=[
            st.ObjectSharing(
                kind=res.OBJECT_KIND_EMAIL,
                enabled=True,
                direction=res.SYNC_DIRECTION_MAIL_TO_CRM,
                selection_modes=[st.SELECTION_MODE_CATEGORY, st.SELECTION_MODE_THREAD],
            )
        ]
    )
    selection = email_selection(settings)
    root = _email(message_id="<root@x.com>", categories=["Salesforce"])
    reply = _email(message_id="<r1@x.com>", references=["<root@X.COM>"])
    other = _email(message_id="<o@x.com>")
    old_thread = _email(message_id="<late@x.com>", references=["<earlier@x.com>"])
    changes = [_change(root), _change(reply), _change(other), _change(old_thread)]
    assert select_shared(changes, selection, saved_threads=["<earlier@x.com>"]) == {
        0: "category",
        1: "thread",
        3: "thread",
    }
    assert select_shared(changes, email_selection(st.MailboxSettings())) == {}


def test_auto_share_covers_new_mail_only() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    selection = EmailSelection(category=None, folder=None, all_new=True, all_new_since=since)
    old = _email()
    old.sent_time.FromDatetime(datetime(2026, 10, 1, tzinfo=UTC))
    assert select_shared([_change(old), _change(_email())], selection) == {1: "all_new"}


def test_deletes_and_disabled_sharing_share_nothing() -> None:
    delete = res.MailChange(type=res.CHANGE_TYPE_DELETE, ref=res.ItemRef(native_id="n"))
    assert select_shared([delete], DEFAULT) == {}
    off = EmailSelection(enabled=False)
    assert select_shared([_change(_email(categories=["Salesforce"]))], off) == {}


# ---- key ----------------------------------------------------------------------------------


def test_the_key_ignores_brackets_folding_comments_and_domain_case() -> None:
    forms = [
        "<AbC.123@Mail.Example.COM>",
        "  <AbC.123@mail.example.com>  ",
        "AbC.123@mail.example.com",
        "<AbC.123@\r\n mail.example.com> (sent by Outlook)",
    ]
    assert {normalise_message_id(f) for f in forms} == {"AbC.123@mail.example.com"}
    # The left part is case-sensitive: two ids differing there are two emails.
    assert normalise_message_id("<abc.123@x.com>") != normalise_message_id("<ABC.123@x.com>")


def test_orgs_keep_their_own_keys() -> None:
    item = _email()
    assert share_key("acme", item).link_id != share_key("globex", item).link_id
    assert share_key("acme", item).link_id == share_key("acme", _email()).link_id


def test_a_missing_message_id_falls_back_to_a_stable_hash_and_says_so() -> None:
    first = share_key("acme", _email(message_id=""))
    again = share_key("acme", _email(message_id="  <> ", body_text="Hello\r\n"))
    other = share_key("acme", _email(message_id="", subject="Another"))
    assert not first.from_message_id
    assert first.note
    assert first == again
    assert first.value.startswith("sha256:")
    assert first != other
    assert share_key("acme", _email()).note == ""


_ATOM = hs.text(
    alphabet=hs.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<>@()"),
    min_size=1,
    max_size=40,
)


@given(left=_ATOM, right=_ATOM, pad=hs.sampled_from(["", " ", "\r\n ", "\t"]))
def test_normalising_is_idempotent_and_bracket_blind(left: str, right: str, pad: str) -> None:
    raw = f"{pad}<{left}@{right}>{pad}"
    once = normalise_message_id(raw)
    assert once == normalise_message_id(once)
    assert once == normalise_message_id(f"{left}@{right.upper()}")
    assert once.startswith(left.strip("<>")) or not left.strip("<>")


@given(a=_ATOM, b=_ATOM, domain=_ATOM)
def test_different_left_parts_never_share_a_key(a: str, b: str, domain: str) -> None:
    assume(a.strip("<>") != b.strip("<>") and a.strip("<>") and b.strip("<>"))
    assert normalise_message_id(f"<{a}@{domain}>") != normalise_message_id(f"<{b}@{domain}>")


# ---- truncation ---------------------------------------------------------------------------


@given(text=hs.text(max_size=400), limit=hs.integers(min_value=1, max_value=300))
def test_truncated_text_fits_and_keeps_its_start(text: str, limit: int) -> None:
    cut, truncated = truncate_text(text, limit)
    assert len(cut) <= limit
    assert truncated == (len(text) > limit)
    if not truncated:
        assert cut == text
    elif limit > 80:
        assert "Truncated by Concord" in cut
        head = cut.split("\n\n[Truncated by Concord")[0]
        assert text.startswith(head)


@given(
    html=hs.text(alphabet='<p>ab &amp;;/"=', max_size=500),
    limit=hs.integers(min_value=100, max_value=400),
)
def test_truncated_html_fits_and_ends_in_the_note(html: str, limit: int) -> None:
    cut, truncated = truncate_html(html, limit)
    assert len(cut) <= limit
    if truncated:
        assert cut.endswith("</p>")
        assert "Truncated by Concord" in cut
        head = cut[: cut.rindex("<p>[Truncated")]
        assert html.startswith(head)
        assert "<" not in head[head.rfind(">") + 1 :]
    else:
        assert cut == html


# ---- addresses ----------------------------------------------------------------------------


def test_addresses() -> None:
    assert is_valid_address("ann.lee+crm@mail.acme.co.uk")
    assert is_valid_address("joerg@bücher.de")
    # SMTPUTF8 local parts: Salesforce's email fields refuse them.
    assert not is_valid_address("jörg@bücher.de")
    for bad in (
        "",
        "ann",
        "ann@",
        "@acme.com",
        "ann@@acme.com",
        "a b@acme.com",
        "ann@acme",
        "ann..lee@acme.com",
        "ann\x00@acme.com",
        "ann@acme.com\x7f",
        "ann@-acme.com",
    ):
        assert not is_valid_address(bad), bad


def test_subjects_keep_their_quotes_and_bodies_lose_nul() -> None:
    plan = _plan(_email(subject='"Urgent"\r\n re: \x00deal', body_text="a\x00b\tc\r\nd\x1b"))
    assert plan.fields["Subject"] == '"Urgent" re: deal'
    assert plan.fields["TextBody"] == "ab\tc\r\nd"


def test_display_names_lose_control_characters() -> None:
    assert clean_display_name("Ann\x00 \x1b[31mLee\u202e\r\nSales") == "Ann [31mLee Sales"
    assert clean_display_name('"Lee, Ann"') == "Lee, Ann"


def test_enormous_recipient_lists_are_capped_for_the_linker_and_the_fields() -> None:
    to = [res.EmailAddress(address=f"person{i}@example.org") for i in range(3000)]
    to.append(res.EmailAddress(address="not an address"))
    item = _email(to=to)
    participants, losses = participants_of(item)
    assert len(participants) == LINKER_MAX_PARTICIPANTS
    assert participants[0].role == res.PARTICIPANT_ROLE_SENDER
    assert {loss.detail.split(" ")[0] for loss in losses} == {"1", "2502"}
    plan = _plan(item)
    assert len(plan.fields["ToAddress"]) <= 4000
    assert plan.fields["ToAddress"].endswith(".org")  # whole addresses only
    assert any(loss.field == "ToAddress" and loss.kind == "TRUNCATED" for loss in plan.losses)


# ---- the EmailMessage ---------------------------------------------------------------------


def _resolution() -> linker.ResolveParticipantsResponse:
    ann = linker.LinkedRecord(sobject_type="Contact", id="003000000000001AAA")
    bob = linker.LinkedRecord(sobject_type="Lead", id="00Q000000000001AAA")
    return linker.ResolveParticipantsResponse(
        who=ann,
        what=linker.LinkedRecord(sobject_type="Opportunity", id="006000000000001AAA"),
        relations=[ann, bob],
        resolutions=[
            linker.ParticipantResolution(
                participant=res.Participant(email="ann@acme.com", role=res.PARTICIPANT_ROLE_SENDER),
                record=ann,
            ),
            linker.ParticipantResolution(
                participant=res.Participant(
                    email="bob@example.org", role=res.PARTICIPANT_ROLE_TO_RECIPIENT
                ),
                record=bob,
            ),
            linker.ParticipantResolution(
                participant=res.Participant(
                    email="carl@example.org", role=res.PARTICIPANT_ROLE_CC_RECIPIENT
                ),
            ),
        ],
    )


def _plan(item: res.EmailItem, **options: object) -> SharePlan:
    plan = plan_share(
        share_key("acme", item),
        item,
        mailbox_address=str(options.pop("mailbox_address", "bob@example.org")),
        resolution=_resolution(),
        **options,  # type: ignore[arg-type]
    )
    assert isinstance(plan, SharePlan)
    return plan


def test_one_email_message_with_relations_for_each_person() -> None:
    plan = _plan(_email(references=["<root@acme.com>"], cc=[res.EmailAddress(address="x@y")]))
    assert plan.fields == {
        "Subject": "Quarterly numbers",
        "FromAddress": "ann@acme.com",
        "FromName": "Ann",
        "ToAddress": "bob@example.org",
        "TextBody": "Hello",
        "MessageDate": "2026-11-02T09:30:00Z",
        "MessageIdentifier": "<m1@example.com>",
        "ThreadIdentifier": "<root@acme.com>",
        "Incoming": True,
        "Status": "1",
        "RelatedToId": "006000000000001AAA",
    }
    assert [(r.relation_id, r.relation_type) for r in plan.relations] == [
        ("003000000000001AAA", "FromAddress"),
        ("00Q000000000001AAA", "ToAddress"),
    ]
    assert [loss.field for loss in plan.losses] == ["CcAddress"]


def test_sent_mail_is_outgoing_and_bodies_are_truncated_with_a_note() -> None:
    limits = EmailFieldLimits(TextBody=200, HtmlBody=200)
    item = _email(body_text="x" * 1000, body_html="<p>" + "y" * 1000 + "</p>")
    plan = _plan(item, mailbox_address="ANN@acme.com", limits=limits)
    assert plan.fields["Status"] == "3"
    assert plan.fields["Incoming"] is False
    assert len(plan.fields["TextBody"]) == 200
    assert "1000 characters" in plan.fields["TextBody"]
    assert len(plan.fields["HtmlBody"]) <= 200
    assert {loss.field for loss in plan.losses} == {"TextBody", "HtmlBody"}


def test_limits_come_from_the_describe_where_it_has_them() -> None:
    limits = EmailFieldLimits.from_lengths({"TextBody": 32000, "Unrelated": 5})
    assert limits.TextBody == 32000
    assert limits.Subject == 3000


def _mime(attachments: list[tuple[str, bytes]]) -> bytes:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = "ann@acme.com"
    message["To"] = "bob@example.org"
    message["Subject"] = "files"
    message["Message-ID"] = "<m1@example.com>"
    message.set_content("see attached")
    for name, data in attachments:
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return message.as_bytes()


def test_attachments_follow_the_policy_and_its_size_cap() -> None:
    mime = _mime([("small.pdf", b"%PDF small"), ("big.pdf", b"x" * 5000)])
    files, losses = attachments_from_mime(mime, AttachmentPolicy(max_bytes=1000))
    assert [(f.name, f.content) for f in files] == [("small.pdf", b"%PDF small")]
    assert "over the 1000-byte cap" in losses[0].detail
    assert attachments_from_mime(mime, AttachmentPolicy(enabled=False)) == ([], [])
    plan = _plan(_email(mime_content=mime), attachments=AttachmentPolicy(max_bytes=1000))
    (record,) = plan.attachment_fields("02s000000000001AAA")
    assert base64.b64decode(record["Body"]) == b"%PDF small"
    assert record["ParentId"] == "02s000000000001AAA"


def test_broken_mime_is_quarantined_with_a_reason() -> None:
    broken = (
        b'From: ann@acme.com\r\nContent-Type: multipart/mixed; boundary="zz"\r\n\r\n'
        b"no boundary ever starts here\r\n"
    )
    plan = plan_share(
        share_key("acme", _email()),
        _email(mime_content=broken),
        mailbox_address="bob@example.org",
        resolution=_resolution(),
    )
    assert isinstance(plan, Quarantine)
    assert plan.reason == "MALFORMED_MIME"
    assert "StartBoundaryNotFoundDefect" in plan.message


def test_thread_identifier_prefers_the_thread_root() -> None:
    assert thread_identifier(_email(in_reply_to="<p@X.com>")) == "<p@x.com>"
    assert thread_identifier(_email(message_id="", conversation_id="AAQk")) == "AAQk"


# ---- the user's choice (the Save button with chosen records) -------------------------------


def test_the_users_choice_narrows_relations_and_sets_related_to() -> None:
    chosen = ["003000000000001AAA", "001000000000009AAA"]
    narrowed, losses = apply_choice(_resolution(), chosen)
    assert [r.record.id for r in narrowed.resolutions] == ["003000000000001AAA"]
    assert narrowed.what.id == "001000000000009AAA"  # the Account replaces the Opportunity
    assert losses == []
    relations = relations_from(narrowed)
    assert [(r.relation_id, r.relation_type) for r in relations] == [
        ("003000000000001AAA", "FromAddress")
    ]


def test_a_chosen_person_who_is_not_a_participant_is_reported_not_related() -> None:
    narrowed, losses = apply_choice(_resolution(), ["003000000000777AAA", "006000000000001"])
    assert list(narrowed.resolutions) == []
    assert narrowed.what.id == "006000000000001"
    assert [(loss.field, loss.kind) for loss in losses] == [("Relation", "DROPPED")]
    assert "003000000000777AAA" in losses[0].detail


def test_choosing_nothing_to_relate_to_clears_the_linkers_related_to() -> None:
    # 15- and 18-character forms of one Id are the same record.
    narrowed, _ = apply_choice(_resolution(), ["00Q000000000001"])
    assert [r.record.id for r in narrowed.resolutions] == ["00Q000000000001AAA"]
    assert not narrowed.HasField("what")
