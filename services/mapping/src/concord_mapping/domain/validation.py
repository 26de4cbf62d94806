"""A table checked against Salesforce's describe before it is stored: every bad field at once."""

from __future__ import annotations

from collections.abc import Mapping

from concord_mapping.domain.describe import SObjectDescribe
from concord_mapping.domain.table import Table
from concord_mapping.domain.transforms import TRANSFORMS

__all__ = ["HINT_PREFIX", "validate_table"]

# Not Salesforce fields: values the linker and crm-connector turn into lookups and related rows.
HINT_PREFIX = "concord."


def validate_table(table: Table, describes: Mapping[str, SObjectDescribe]) -> list[tuple[str, str]]:
    """(field path, reason) for each problem; empty when the table can be used."""
    problems: list[tuple[str, str]] = []
    describe = describes.get(table.target_sobject)
    if describe is None:
        known = ", ".join(sorted(describes))
        return [("table.target_sobject", f"no describe for this object (known: {known})")]
    for index, rule in enumerate(table.rules):
        where = f"table.rules[{index}]"
        for side, spec in (("to_crm", rule.to_crm), ("to_mail", rule.to_mail)):
            if spec.name not in TRANSFORMS:
                problems.append((f"{where}.{side}.name", f"unknown transform {spec.name!r}"))
        if rule.to_crm.name not in TRANSFORMS or rule.crm_field.startswith(HINT_PREFIX):
            continue
        transform = TRANSFORMS[rule.to_crm.name]
        to_crm = rule.to_crm_in(table.direction)
        targets = [rule.crm_field, *transform.extra_fields(rule, rule.to_crm.params)]
        for position, name in enumerate(targets):
            path = f"{where}.crm_field" if position == 0 else f"{where}.to_crm.params"
            found = describe.field(name)
            if found is None:
                if not describe.live and name.endswith("__c") and not describe.name.endswith("__c"):
                    # An org's own custom fields are not in a shipped describe; only the org's
                    # live describe can say they do not exist.
                    continue
                problems.append((path, f"{table.target_sobject} has no field {name}"))
                continue
            if to_crm and not found.writable:
                problems.append((path, f"{table.target_sobject}.{name} is read-only"))
            if position == 0 and transform.crm_types and found.type not in transform.crm_types:
                problems.append(
                    (path, f"{name} is {found.type}; {rule.to_crm.name} writes {_types(transform)}")
                )
        found = describe.field(rule.crm_field)
        if found and found.picklist_values and rule.to_crm.name in ("picklist", "constant"):
            params = rule.to_crm.params
            offered = list((params.get("values") or {}).values())
            offered += [params[k] for k in ("fallback", "value") if k in params]
            for value in offered:
                if value not in found.picklist_values:
                    problems.append(
                        (
                            f"{where}.to_crm.params",
                            f"{value!r} is not a value of {table.target_sobject}.{found.name}",
                        )
                    )
    return problems


def _types(transform: object) -> str:
    types = getattr(transform, "crm_types", None) or ()
    return "/".join(sorted(types))
