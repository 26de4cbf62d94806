"""Every object of the recorded global describe, and the standard objects a new org has.

Recorded describes (`describes/*.json`) and `synthetic.py` cover the objects Concord works with
in full. Every other object of the recorded global describe (`describes/_global.json`) is
served from its global-describe entry (its flags: createable, updateable, queryable…) with the
standard fields every object carries (Id, the audit fields and, for objects that have one,
Name). The standard objects that recording lacks and clients use (Note, Product2, Pricebook2,
PricebookEntry, OpportunityLineItem, BusinessHours, CronTrigger, LoginHistory, RecordType) and
the recorded-but-bare ones (Campaign, CampaignMember) get the fields Salesforce's *Object
Reference* lists for them; Organization's fields are those of the recorded Organization row.
These describes are synthesised, not recorded (see `describes/PROVENANCE.md`).
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

from concord_salesforce_emulator import synthetic

Describe = dict[str, Any]

# name -> (key prefix, global-describe flags, field specs "Name type [length] [flags…]").
# Flags: required, name, ro (read-only), `to=A,B` reference targets, `rel=Name`, `values=a|b`.
_OBJECT_REFERENCE: dict[str, tuple[str, dict[str, bool], list[str]]] = {
    "Campaign": (
        "701",
        {},
        [
            "Name string 80 required name",
            "ParentId reference to=Campaign rel=Parent",
            "Type picklist 255 values=Conference|Webinar|Trade Show|Public Relations|Partners|"
            "Referral Program|Advertisement|Banner Ads|Direct Mail|Email|Telemarketing|Other",
            "Status picklist 255 values=Planned|In Progress|Completed|Aborted",
            "StartDate date",
            "EndDate date",
            "ExpectedRevenue currency",
            "BudgetedCost currency",
            "ActualCost currency",
            "ExpectedResponse percent",
            "NumberSent double",
            "IsActive boolean",
            "Description textarea 32000",
            "NumberOfLeads int ro",
            "NumberOfContacts int ro",
            "OwnerId reference to=User rel=Owner",
        ],
    ),
    "CampaignMember": (
        "00v",
        {},
        [
            "CampaignId reference to=Campaign rel=Campaign required",
            "LeadId reference to=Lead rel=Lead",
            "ContactId reference to=Contact rel=Contact",
            "Status picklist 40 values=Planned|Received|Responded|Sent",
            "HasResponded boolean ro",
            "FirstRespondedDate date ro",
            "Name string 255 ro name",
        ],
    ),
    "Note": (
        "002",
        {"createable": True, "updateable": True, "queryable": True},
        [
            "Title string 255 required name",
            "Body textarea 32000",
            "IsPrivate boolean",
            "ParentId reference required to=Account,Contact,Opportunity,Lead,Case,Campaign,"
            "Product2 rel=Parent",
            "OwnerId reference to=User rel=Owner",
        ],
    ),
    "Product2": (
        "01t",
        {"createable": True, "updateable": True, "queryable": True},
        [
            "Name string 255 required name",
            "ProductCode string 255",
            "Description textarea 4000",
            "IsActive boolean",
            "Family picklist 40 values=None",
            "QuantityUnitOfMeasure picklist 255 values=Each",
            "StockKeepingUnit string 180",
            "DisplayUrl url 1000",
            "ExternalId string 255",
        ],
    ),
    "Pricebook2": (
        "01s",
        {"createable": True, "updateable": True, "queryable": True},
        [
            "Name string 255 required name",
            "IsActive boolean",
            "IsStandard boolean ro",
            "Description string 255",
        ],
    ),
    "PricebookEntry": (
        "01u",
        {"createable": True, "updateable": True, "queryable": True},
        [
            "Name string 255 ro name",
            "Pricebook2Id reference required to=Pricebook2 rel=Pricebook2",
            "Product2Id reference required to=Product2 rel=Product2",
            "UnitPrice currency required",
            "IsActive boolean",
            "UseStandardPrice boolean",
            "ProductCode string 255 ro",
        ],
    ),
    "OpportunityLineItem": (
        "00k",
        {"createable": True, "updateable": True, "queryable": True},
        [
            "OpportunityId reference required to=Opportunity rel=Opportunity",
            "PricebookEntryId reference to=PricebookEntry rel=PricebookEntry",
            "Product2Id reference to=Product2 rel=Product2",
            "ProductCode string 255 ro",
            "Name string 376 ro name",
            "Quantity double required",
            "TotalPrice currency",
            "UnitPrice currency",
            "ListPrice currency ro",
            "ServiceDate date",
            "Description string 255",
        ],
    ),
    "BusinessHours": (
        "01m",
        {"createable": False, "updateable": True, "queryable": True},
        [
            "Name string 80 required name",
            "IsActive boolean",
            "IsDefault boolean",
            "TimeZoneSidKey picklist 40 values=America/Los_Angeles|GMT",
            *(
                f"{day}{edge}Time time"
                for day in (
                    "Sunday",
                    "Monday",
                    "Tuesday",
                    "Wednesday",
                    "Thursday",
                    "Friday",
                    "Saturday",
                )
                for edge in ("Start", "End")
            ),
        ],
    ),
    "CronTrigger": (
        "08e",
        {"createable": False, "updateable": False, "deletable": False, "queryable": True},
        [
            "CronJobDetailId reference ro to=CronJobDetail rel=CronJobDetail",
            "NextFireTime datetime ro",
            "PreviousFireTime datetime ro",
            "State string 16 ro",
            "StartTime datetime ro",
            "EndTime datetime ro",
            "CronExpression string 255 ro",
            "TimeZoneSidKey string 40 ro",
            "OwnerId reference ro to=User rel=Owner",
            "TimesTriggered int ro",
        ],
    ),
    "CronJobDetail": (
        "08a",
        {"createable": False, "updateable": False, "deletable": False, "queryable": True},
        ["Name string 255 ro name", "JobType picklist 40 ro values=7|8|9|A"],
    ),
    "LoginHistory": (
        "0Ya",
        {"createable": False, "updateable": False, "deletable": False, "queryable": True},
        [
            "UserId reference ro to=User rel=User",
            "LoginTime datetime ro",
            "LoginType picklist 40 ro values=Application|Remote Access 2.0|SAML Idp Initiated SSO",
            "SourceIp string 39 ro",
            "LoginUrl string 1024 ro",
            "Browser string 64 ro",
            "Platform string 64 ro",
            "Status string 128 ro",
            "Application string 255 ro",
            "ApiType string 32 ro",
            "ApiVersion string 32 ro",
        ],
    ),
    "RecordType": (
        "012",
        {"createable": False, "updateable": False, "deletable": False, "queryable": True},
        [
            "Name string 80 ro name",
            "DeveloperName string 80 ro",
            "NamespacePrefix string 15 ro",
            "Description string 255 ro",
            "BusinessProcessId reference ro to=BusinessProcess rel=BusinessProcess",
            "SobjectType picklist 40 ro values=Account|Contact|Lead|Opportunity|Case",
            "IsActive boolean ro",
        ],
    ),
}

# Objects with no Name field: rows of another object's history, sharing, feed or change events.
_NAMELESS_SUFFIXES = ("Share", "History", "Feed", "ChangeEvent", "Relation", "Access", "Member")


def _global_entries() -> list[dict[str, Any]]:
    folder = resources.files(__package__).joinpath("describes")
    body: dict[str, Any] = json.loads(folder.joinpath("_global.json").read_text())
    entries: list[dict[str, Any]] = body["sobjects"]
    return entries


def _organization_row() -> dict[str, Any]:
    folder = resources.files(__package__).joinpath("describes")
    row: dict[str, Any] = json.loads(folder.joinpath("_organization_row.json").read_text())
    return row


def organization_values() -> dict[str, Any]:
    """The recorded Organization row's values (the org's id and name are the emulator's own)."""
    row = _organization_row()
    return {k: v for k, v in row.items() if k not in ("attributes", "Id", "Address")}


def _spec_field(template: dict[str, Any], spec: str) -> dict[str, Any]:
    words = spec.split(" ")
    name, kind = words[0], words[1]
    rest = " ".join(words[2:])
    options: dict[str, Any] = {}
    values: list[str] = []
    for word in rest.split(" ") if rest else []:
        if word.isdigit():
            options["length"] = int(word)
        elif word == "required":
            options["nillable"] = False
        elif word == "name":
            options["nameField"] = True
        elif word == "ro":
            options.update(createable=False, updateable=False)
        elif word.startswith("to="):
            options["referenceTo"] = word[3:].split(",")
        elif word.startswith("rel="):
            options["relationshipName"] = word[4:]
    if "values=" in rest:
        values = rest.split("values=", 1)[1].split("|")
    if kind == "reference" and len(options.get("referenceTo", [])) > 1:
        options.update(polymorphicForeignKey=True, namePointing=True)
    if kind == "boolean":
        options.update(nillable=False, defaultedOnCreate=True)
    if kind in ("string", "picklist", "textarea", "url") and "length" not in options:
        options["length"] = 255
    return synthetic.field(template, name, kind, values=values, **options)


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    return "string"


def describes(
    known: set[str], template_field: dict[str, Any], object_template: Describe
) -> list[Describe]:
    """Describes for every object not already described (`known`), from the sources above."""
    entries = {e["name"]: e for e in _global_entries()}
    for name, (prefix, flags, _) in _OBJECT_REFERENCE.items():
        recorded = entries.get(name)
        if recorded is None:
            # Not in the recording: the shape of a standard object's entry, its own names.
            recorded = {**entries["Account"], "keyPrefix": None, "labelPlural": f"{name}s"}
            recorded.update(name=name, label=name)
        entries[name] = {**recorded, "keyPrefix": recorded.get("keyPrefix") or prefix, **flags}
    result = []
    used = {e["keyPrefix"] for e in entries.values() if e.get("keyPrefix")}
    spare = _spare_prefixes(used)
    for name, entry in sorted(entries.items()):
        if name in known:
            continue
        describe = copy.deepcopy(object_template)
        describe.update({k: v for k, v in entry.items() if k != "urls"})
        if not describe.get("keyPrefix"):
            # Salesforce gives these objects no key prefix; ids still need one here.
            describe["keyPrefix"] = next(spare)
        describe["childRelationships"] = []
        describe["recordTypeInfos"] = []
        describe["urls"] = {
            "sobject": f"/services/data/vxx.0/sobjects/{name}",
            "describe": f"/services/data/vxx.0/sobjects/{name}/describe",
            "rowTemplate": f"/services/data/vxx.0/sobjects/{name}/{{ID}}",
        }
        fields = [synthetic.id_field(template_field)]
        if name == "Organization":
            fields += [
                synthetic.field(
                    template_field,
                    key,
                    _value_kind(value),
                    length=255 if _value_kind(value) == "string" else 0,
                    createable=False,
                    updateable=False,
                    nameField=key == "Name",
                )
                for key, value in organization_values().items()
                if key not in synthetic.SYSTEM_FIELD_NAMES
            ]
        elif name in _OBJECT_REFERENCE:
            fields += [_spec_field(template_field, s) for s in _OBJECT_REFERENCE[name][2]]
        elif not name.endswith(_NAMELESS_SUFFIXES):
            fields.append(
                synthetic.field(
                    template_field,
                    "Name",
                    "string",
                    length=80,
                    nameField=True,
                    nillable=not entry.get("createable"),
                    createable=bool(entry.get("createable")),
                    updateable=bool(entry.get("updateable")),
                )
            )
        fields += synthetic.system_fields(template_field)
        describe["fields"] = fields
        result.append(describe)
    return result


def _spare_prefixes(used: set[str]) -> Any:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for first in "zyx":
        for second in alphabet:
            for third in alphabet:
                prefix = f"{first}{second}{third}"
                if prefix not in used:
                    yield prefix


def add_child_relationships(describes: list[Describe], recorded: tuple[str, ...]) -> None:
    """Each reference field as its parent's child relationship, where the parent lacks it.

    Recorded describes are served as recorded: they already list their child relationships."""
    by_name = {d["name"]: d for d in describes if d["name"] not in recorded}
    for child in describes:
        for described in child["fields"]:
            if (
                described["type"] != "reference"
                or not described.get("relationshipName")
                or described["name"] in synthetic.SYSTEM_FIELD_NAMES
                or described["name"] == "OwnerId"
            ):
                continue
            for parent_name in described["referenceTo"]:
                parent = by_name.get(parent_name)
                if parent is None:
                    continue
                relations = parent.setdefault("childRelationships", [])
                if any(
                    r["childSObject"] == child["name"] and r["field"] == described["name"]
                    for r in relations
                ):
                    continue
                plural = (child.get("labelPlural") or f"{child['name']}s").replace(" ", "")
                if any(r.get("relationshipName") == plural for r in relations):
                    continue
                relations.append(
                    {
                        "cascadeDelete": False,
                        "childSObject": child["name"],
                        "deprecatedAndHidden": False,
                        "field": described["name"],
                        "junctionIdListNames": [],
                        "junctionReferenceTo": [],
                        "relationshipName": plural,
                        "restrictedDelete": False,
                    }
                )


def apply_global_flags(describes: list[Describe], recorded: tuple[str, ...]) -> None:
    """A synthesised describe of an object the global describe records takes its flags from
    there (User may not be deleted, for one)."""
    entries = {e["name"]: e for e in _global_entries()}
    for describe in describes:
        entry = entries.get(describe["name"])
        if entry is None or describe["name"] in recorded:
            continue
        describe.update({k: v for k, v in entry.items() if k not in ("urls", "keyPrefix")})
