"""Real malformed MIME (Debian's enmime test data, the SpamAssassin corpus): quarantined with a
reason or shared with what survives, and never a crash. Sources in tests/data/mime/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.linker.v1 import linker_service_pb2 as linker
from concord_reconciler.sharing.domain.sharing import Quarantine, SharePlan, plan_share, share_key

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parents[1] / "data" / "mime"

QUARANTINED = {
    "enmime/low-quality-bad-header-wrap.raw": "MissingHeaderBodySeparatorDefect",
    "enmime/mail-erroneous.raw": "MissingHeaderBodySeparatorDefect",
    "enmime/mail-header-only.raw": "StartBoundaryNotFoundDefect",
    "enmime/mail-qp-utf8-header-no-break.raw": "MissingHeaderBodySeparatorDefect",
    "spamassassin/00467.5b733c506b7165424a0d4a298e67970f.txt": "StartBoundaryNotFoundDefect",
    "spamassassin/01214.973b4598b630a989967ff69b19f95d4a.txt": "StartBoundaryNotFoundDefect",
}
# Shared: the attachments that survive, and the words of the loss that says what did not.
SHARED = {
    "enmime/low-quality-bad-final-boundary.raw": ([], "closing boundary"),
    "enmime/parts-badboundary.raw": ([], "closing boundary"),
    "enmime/low-quality-malformed-base64-attach.raw": ([], "InvalidBase64CharactersDefect"),
    "enmime/mail-mime-bad-content-type.raw": ([], "InvalidBase64PaddingDefect"),
    "enmime/low-quality-empty-header.raw": ([], ""),
    "enmime/low-quality-missing-content-type.raw": ([], ""),
    "enmime/mail-attachment.raw": (["test.html"], ""),
    "enmime/mail-mime-bad-8bit-filename.raw": (["管理.doc"], ""),
    "spamassassin/00986.93b7eb74f26330872be1d58ec9d2b64c.txt": (["PATCH"], ""),
}


def _plan(name: str) -> SharePlan | Quarantine:
    item = res.EmailItem(
        internet_message_id=f"<{name}@corpus.test>",
        subject="corpus",
        from_address=res.EmailAddress(address="ann@acme.com"),
        has_attachments=True,
        mime_content=(DATA / name).read_bytes(),
    )
    return plan_share(
        share_key("acme", item),
        item,
        mailbox_address="bob@example.org",
        resolution=linker.ResolveParticipantsResponse(),
    )


def test_the_selection_is_all_there() -> None:
    on_disk = {str(p.relative_to(DATA)) for p in DATA.glob("*/*")}
    assert on_disk == set(QUARANTINED) | set(SHARED)


@pytest.mark.parametrize("name", sorted(QUARANTINED))
def test_broken_mime_is_quarantined_with_its_reason(name: str) -> None:
    plan = _plan(name)
    assert isinstance(plan, Quarantine), name
    assert plan.reason == "MALFORMED_MIME"
    assert QUARANTINED[name] in plan.message


@pytest.mark.parametrize("name", sorted(SHARED))
def test_damaged_but_readable_mime_is_shared_with_what_survives(name: str) -> None:
    plan = _plan(name)
    assert isinstance(plan, SharePlan), name
    files, loss = SHARED[name]
    assert [f.name for f in plan.attachments] == files
    details = " ".join(loss.detail for loss in plan.losses)
    assert loss in details
    if not loss:
        assert not plan.losses
