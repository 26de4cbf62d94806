"""Mapping one item or record with a table: the rules in order, losses collected, failures
raised for that item alone (the caller records them and goes on with the batch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from concord_mapping.domain.describe import SObjectDescribe
from concord_mapping.domain.errors import MappingFailure
from concord_mapping.domain.table import Table
from concord_mapping.domain.transforms import TRANSFORMS, Loss, Side, Step, get_path
from concord_mapping.domain.validation import HINT_PREFIX

__all__ = [
    "ONE_WAY",
    "WRONG_KIND",
    "MappedFields",
    "crm_fields_read",
    "map_to_crm",
    "map_to_mail",
]

WRONG_KIND = "WRONG_KIND"
ONE_WAY = "ONE_WAY"


@dataclass(frozen=True)
class MappedFields:
    fields: dict[str, Any]
    losses: list[Loss]


def map_to_crm(
    table: Table, describe: SObjectDescribe | None, payload_name: str, payload: Mapping[str, Any]
) -> MappedFields:
    """Salesforce fields for one canonical payload (`calendar_item`, `task`, ... as JSON)."""
    if payload_name != table.kind_prefix:
        raise MappingFailure(WRONG_KIND, f"the table maps {table.kind_prefix}, not {payload_name}")
    if not table.direction.to_crm:
        raise MappingFailure(ONE_WAY, f"{table.target_sobject} is not mirrored to Salesforce")
    out: dict[str, Any] = {}
    losses: list[Loss] = []
    rules = table.crm_rules
    if not rules:
        return MappedFields(out, losses)
    # One step per item, pointed at each rule in turn: a transform uses it only while it runs.
    step = Step(rules[0], rules[0].to_crm.params, payload, out, losses, describe, side=Side.CRM)
    for rule in rules:
        transform = rule.to_crm
        step.rule = rule
        step.params = transform.params
        TRANSFORMS[transform.name].to_crm(step, get_path(payload, rule.mail_key))
    return MappedFields(out, losses)


def map_to_mail(
    table: Table, describe: SObjectDescribe | None, fields: Mapping[str, Any], mailbox_zone: str
) -> MappedFields:
    """The canonical payload (JSON) for one Salesforce record's fields."""
    if not table.direction.to_mail:
        raise MappingFailure(ONE_WAY, f"{table.target_sobject} is not mirrored to the mailbox")
    out: dict[str, Any] = {}
    losses: list[Loss] = []
    for rule in table.mail_rules:
        step = Step(
            rule, rule.to_mail.params, fields, out, losses, describe, mailbox_zone, Side.MAIL
        )
        TRANSFORMS[rule.to_mail.name].to_mail(step, step.read())
    return MappedFields(out, losses)


def crm_fields_read(table: Table) -> list[str]:
    """Every Salesforce field `map_to_mail` reads with this table: each rule's own and those its
    transform reads beside it. A record listed with only these maps as one listed in full, so a
    listing need not carry the rest of the describe (issue #18)."""
    names: dict[str, None] = {}
    if not table.direction.to_mail:
        return []
    for rule in table.mail_rules:
        reads = TRANSFORMS[rule.to_mail.name].mail_reads(rule, rule.to_mail.params)
        for name in (rule.crm_field, *reads):
            # `concord.*` values are Concord's own, never selected from Salesforce.
            if not name.startswith(HINT_PREFIX):
                names.setdefault(name)
    return list(names)
