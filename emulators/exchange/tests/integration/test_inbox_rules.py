"""Inbox rules (#18): GetInboxRules lists a mailbox's rules, UpdateInboxRules creates, sets and
deletes them; a request with an operation Exchange refuses saves nothing and answers
ErrorInboxRulesValidationError naming the operation's field, code and message (MS-OXWSRULES)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from exchangelib import DELEGATE, Account, Message  # type: ignore[import-untyped]
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorAccessDenied,
    ErrorInboxRulesValidationError,
)
from exchangelib.properties import (  # type: ignore[import-untyped]
    Actions,
    Address,
    Conditions,
    DistinguishedFolderId,
    Exceptions,
    Mailbox,
    MoveToFolder,
    Rule,
)
from exchangelib.services import GetInboxRules  # type: ignore[import-untyped]
from exchangelib.services.inbox_rules import CreateInboxRule  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration


def _rule(account: Any, name: str, priority: int = 1, **actions: Any) -> Any:
    return Rule(
        account=account,
        display_name=name,
        priority=priority,
        is_enabled=True,
        conditions=Conditions(contains_sender_strings=["quotes@acme.example"]),
        exceptions=Exceptions(),
        actions=Actions(**(actions or {"mark_as_read": True})),
    )


def test_a_rule_is_created_listed_changed_and_deleted(account: Any) -> None:
    assert account.rules == []
    rule = _rule(account, "Quotes", assign_categories=["Salesforce"], stop_processing_rules=True)
    rule.save()
    assert rule.id
    [listed] = account.rules
    assert (listed.id, listed.display_name, listed.priority, listed.is_enabled) == (
        rule.id,
        "Quotes",
        1,
        True,
    )
    assert listed.conditions.contains_sender_strings == ["quotes@acme.example"]
    assert listed.actions.assign_categories == ["Salesforce"]
    assert listed.actions.stop_processing_rules is True

    rule.display_name = "Acme quotes"
    rule.is_enabled = False
    rule.save()
    [changed] = account.rules
    assert (changed.id, changed.display_name, changed.is_enabled) == (rule.id, "Acme quotes", False)

    rule.delete()
    assert account.rules == []


def test_rules_are_listed_in_priority_order_and_kept_per_mailbox(
    account: Any, make_config: Callable[..., Any], new_user: Callable[..., tuple[str, str]]
) -> None:
    _rule(account, "second", priority=5).save()
    _rule(account, "first", priority=2).save()
    assert [r.display_name for r in account.rules] == ["first", "second"]
    address, password = new_user()
    other = Account(
        address, config=make_config(address, password), autodiscover=False, access_type=DELEGATE
    )
    assert other.rules == []
    # Another mailbox's rules are not the caller's to read.
    with pytest.raises(ErrorAccessDenied):
        list(GetInboxRules(account=other).call(mailbox=account.primary_smtp_address))


def test_a_folder_action_names_the_folder_by_its_id(account: Any) -> None:
    trash = account.trash
    by_name = DistinguishedFolderId(
        id="deleteditems", mailbox=Mailbox(email_address=account.primary_smtp_address)
    )
    _rule(
        account, "move", priority=1, move_to_folder=MoveToFolder(distinguished_folder_id=by_name)
    ).save()
    _rule(account, "copy", priority=2, copy_to_folder=trash).save()
    moved, copied = account.rules
    assert moved.actions.move_to_folder.folder_id.id == trash.id
    assert copied.actions.copy_to_folder.folder_id.id == trash.id


def test_an_unsupported_action_is_refused_and_nothing_is_saved(account: Any) -> None:
    with pytest.raises(ErrorInboxRulesValidationError) as refused:
        _rule(
            account,
            "sms",
            send_sms_alert_to_recipients=[Address(email_address="rep@concord.test")],
        ).save()
    assert refused.value.args[0] == (
        "A validation error occurred while executing the rule operation. (UnsupportedRule on field "
        "Action:SendSMSAlertToRecipients: The operation on this unsupported rule is not allowed.)"
    )
    assert account.rules == []


def test_a_reply_template_must_be_named_by_the_actions_own_id(account: Any) -> None:
    # ServerReplyWithMessage is an ItemIdType: its Id is an attribute of the action itself;
    # exchangelib nests an ItemId element inside, which leaves that attribute empty.
    template = Message(folder=account.inbox, subject="Thanks").save()
    with pytest.raises(ErrorInboxRulesValidationError) as refused:
        _rule(account, "reply", server_reply_with_message=template.to_id()).save()
    assert refused.value.args[0].endswith(
        "(InvalidValue on field Action:ServerReplyWithMessage: Id must be non-empty.)"
    )


def test_setting_or_deleting_an_unknown_rule_is_a_validation_error(account: Any) -> None:
    ghost = _rule(account, "ghost")
    ghost.id = "AAAAAAAAAAA="
    with pytest.raises(ErrorInboxRulesValidationError, match="RuleNotFound on field RuleId"):
        ghost.save()
    with pytest.raises(ErrorInboxRulesValidationError, match="RuleNotFound on field RuleId"):
        account.delete_rule(ghost)


def test_a_new_rule_cannot_bring_its_own_id(account: Any) -> None:
    rule = _rule(account, "with id")
    rule.id = "dCsAAABjz0Q="
    with pytest.raises(ErrorInboxRulesValidationError, match="CreateWithRuleId on field RuleId"):
        CreateInboxRule(account=account).get(rule=rule, remove_outlook_rule_blob=True)
    assert account.rules == []
