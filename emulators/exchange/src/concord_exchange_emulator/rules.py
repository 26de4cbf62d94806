"""Inbox rules (MS-OXWSRULES): the checks UpdateInboxRules makes before it saves a rule set.

A request's operations (CreateRuleOperation, SetRuleOperation, DeleteRuleOperation) are checked
one by one; if any fails, nothing is saved and the answer is ErrorInboxRulesValidationError with
a RuleOperationError per failing operation (its OperationIndex and each field's ValidationError),
as the protocol's example (MS-OXWSRULES 4.5) shows. Rules are stored and listed; applying them to
delivered mail is not emulated (the emulator delivers no mail).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from concord_exchange_emulator.xmlns import T, local, m, sub, t

VALIDATION_TEXT = "A validation error occurred while executing the rule operation."

# RuleType's children in schema order (MS-OXWSRULES 2.2.4.22).
RULE_ORDER = (
    "RuleId",
    "DisplayName",
    "Priority",
    "IsEnabled",
    "IsNotSupported",
    "IsInError",
    "Conditions",
    "Exceptions",
    "Actions",
)

# xs:boolean children of a rule, its predicates and its actions: clients may send "1"/"0"
# (exchangelib does), Exchange answers "true"/"false".
_BOOLEANS = frozenset(
    {
        "IsEnabled",
        "IsNotSupported",
        "IsInError",
        "Delete",
        "MarkAsRead",
        "PermanentDelete",
        "StopProcessingRules",
        "HasAttachments",
        "IsApprovalRequest",
        "IsAutomaticForward",
        "IsAutomaticReply",
        "IsEncrypted",
        "IsMeetingRequest",
        "IsMeetingResponse",
        "IsNDR",
        "IsPermissionControlled",
        "IsReadReceipt",
        "IsSigned",
        "IsVoicemail",
        "NotSentToMe",
        "SentCcMe",
        "SentOnlyToMe",
        "SentToMe",
        "SentToOrCcMe",
    }
)

# Actions the server refuses to save (text as Exchange answers it; SMS alerts need a
# provisioned text-messaging account).
_UNSUPPORTED_ACTIONS = frozenset({"SendSMSAlertToRecipients"})
_FOLDER_ACTIONS = frozenset({"CopyToFolder", "MoveToFolder"})


@dataclass
class RuleErrors:
    """The ValidationErrors of one operation: (FieldURI, ErrorCode, ErrorMessage, FieldValue)."""

    index: int
    errors: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, field_uri: str, code: str, message: str, value: str = "") -> None:
        self.errors.append((field_uri, code, message, value))


@dataclass
class RuleChanges:
    """What a valid request does: rules written (id, priority, Rule XML) and ids deleted."""

    upserts: list[tuple[str, int, bytes]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)


class FolderNotFound(Exception):
    """Raised by the folder resolver for an action's folder that does not exist."""


# Given a FolderId/DistinguishedFolderId element: (Id, ChangeKey) of the folder.
FolderResolver = Callable[[etree._Element], tuple[str, str]]


def new_rule_id() -> str:
    # Exchange's rule ids are base64 of an 8-byte rule number (e.g. "AQAAAAAAAAA=").
    return base64.b64encode(uuid.uuid4().bytes[:8]).decode()


def _normalised(
    rule: etree._Element, rule_id: str, resolve_folder: FolderResolver, errors: RuleErrors
) -> etree._Element:
    """The Rule element as the server keeps it: its id first, children in schema order,
    booleans as true/false, folder actions naming the folder by FolderId."""
    kept = etree.Element(t("Rule"), nsmap={"t": T})
    sub(kept, t("RuleId"), rule_id)
    children = {local(child.tag): child for child in rule if local(child.tag) != "RuleId"}
    for name in RULE_ORDER[1:]:
        child = children.get(name)
        if child is None:
            continue
        copy = etree.fromstring(etree.tostring(child))
        for node in [copy, *copy]:
            if local(node.tag) in _BOOLEANS and node.text is not None:
                node.text = "true" if node.text.strip() in {"1", "true"} else "false"
        if name == "Actions":
            for action in copy:
                if local(action.tag) in _FOLDER_ACTIONS and len(action):
                    try:
                        folder_id, change_key = resolve_folder(action[0])
                    except FolderNotFound:
                        errors.add(
                            f"Action:{local(action.tag)}",
                            "FolderDoesNotExist",
                            "The folder does not exist in the mailbox.",
                        )
                        continue
                    # Exchange answers the folder by its id, whichever way it was named.
                    action.remove(action[0])
                    sub(action, t("FolderId"), Id=folder_id, ChangeKey=change_key)
        kept.append(copy)
    return kept


def _check(rule: etree._Element, errors: RuleErrors) -> int:
    """Field checks of a rule to be saved; its priority (0 when it is not valid)."""
    if not (rule.findtext(t("DisplayName")) or "").strip():
        errors.add("DisplayName", "EmptyValueFound", "The value of the field is empty.")
    priority_text = rule.findtext(t("Priority"))
    priority = 0
    if priority_text is None:
        errors.add("Priority", "MissingParameter", "The required field is missing.")
    else:
        try:
            priority = int(priority_text)
        except ValueError:
            priority = 0
        if priority < 1:
            errors.add(
                "Priority", "InvalidValue", "Priority must be greater than 0.", priority_text
            )
    actions = rule.find(t("Actions"))
    if actions is None or not len(actions):
        errors.add("Actions", "MissingAction", "A rule must have at least one action.")
        return priority
    for action in actions:
        name = local(action.tag)
        if name in _UNSUPPORTED_ACTIONS:
            errors.add(
                f"Action:{name}",
                "UnsupportedRule",
                "The operation on this unsupported rule is not allowed.",
            )
        if name == "ServerReplyWithMessage" and not action.get("Id"):
            # The action is an ItemIdType: the reply's id is the element's own Id attribute.
            errors.add(f"Action:{name}", "InvalidValue", "Id must be non-empty.")
    return priority


def plan(
    operations: etree._Element | None,
    existing: set[str],
    resolve_folder: FolderResolver,
) -> tuple[RuleChanges, list[RuleErrors]]:
    """Check a request's Operations against the mailbox's rule ids; the changes, or the errors."""
    changes = RuleChanges()
    failed: list[RuleErrors] = []
    touched: set[str] = set()
    for index, op in enumerate(operations if operations is not None else []):
        errors = RuleErrors(index)
        kind = local(op.tag)
        if kind == "DeleteRuleOperation":
            rule_id = op.findtext(t("RuleId")) or ""
            if rule_id not in existing or rule_id in touched:
                errors.add("RuleId", "RuleNotFound", "The rule was not found.", rule_id)
            else:
                changes.deletes.append(rule_id)
                touched.add(rule_id)
        elif kind in {"CreateRuleOperation", "SetRuleOperation"}:
            rule = op.find(t("Rule"))
            if rule is None:
                errors.add("Rule", "MissingParameter", "The required field is missing.")
            else:
                given_id = rule.findtext(t("RuleId"))
                if kind == "CreateRuleOperation":
                    if given_id:
                        errors.add(
                            "RuleId",
                            "CreateWithRuleId",
                            "A rule id cannot be given when a rule is created.",
                            given_id,
                        )
                    rule_id = new_rule_id()
                else:
                    rule_id = given_id or ""
                    if rule_id not in existing or rule_id in touched:
                        errors.add("RuleId", "RuleNotFound", "The rule was not found.", rule_id)
                priority = _check(rule, errors)
                kept = _normalised(rule, rule_id, resolve_folder, errors)
                if not errors.errors:
                    changes.upserts.append((rule_id, priority, etree.tostring(kept)))
                    touched.add(rule_id)
        else:
            errors.add(kind, "UnexpectedError", f"Unknown rule operation {kind}.")
        if errors.errors:
            failed.append(errors)
    return changes, failed


def operation_errors(parent: etree._Element, failed: list[RuleErrors]) -> None:
    """RuleOperationErrors in the shape of MS-OXWSRULES 4.5 (its children in the types
    namespace, where exchangelib and the protocol's example put them)."""
    container = sub(parent, m("RuleOperationErrors"))
    for op in failed:
        node = sub(container, t("RuleOperationError"))
        sub(node, t("OperationIndex"), str(op.index))
        validation = sub(node, t("ValidationErrors"))
        for field_uri, code, message, value in op.errors:
            error = sub(validation, t("Error"))
            sub(error, t("FieldURI"), field_uri)
            sub(error, t("ErrorCode"), code)
            sub(error, t("ErrorMessage"), message)
            sub(error, t("FieldValue"), value)
