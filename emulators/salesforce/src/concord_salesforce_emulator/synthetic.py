"""Describes for objects no recording covers, from Salesforce's Object Reference.

Each field copies every key of a recorded field (so clients that read `describe` see the real
shape) and overrides what the Object Reference states: type, length, required-ness, picklist
values, reference targets. The field sets are reduced to what Concord reads and writes.
"""

from __future__ import annotations

import copy
from typing import Any

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "datetime": "xsd:dateTime",
    "date": "xsd:date",
    "int": "xsd:int",
    "double": "xsd:double",
    "base64": "xsd:base64Binary",
}


def _field(template: dict[str, Any], name: str, kind: str, **overrides: Any) -> dict[str, Any]:
    field = copy.deepcopy(template)
    length = overrides.pop("length", 0)
    values = overrides.pop("values", [])
    field.update(
        name=name,
        label=overrides.pop("label", name),
        type=kind,
        soapType=_SOAP_TYPES.get(kind, "xsd:string"),
        length=length,
        byteLength=length * 3 if kind not in ("id", "reference") else 18,
        nameField=False,
        nillable=True,
        createable=True,
        updateable=True,
        defaultedOnCreate=False,
        defaultValue=None,
        picklistValues=[
            {
                "active": True,
                "defaultValue": v == overrides.get("default_value"),
                "label": v,
                "validFor": None,
                "value": v,
            }
            for v in values
        ],
        restrictedPicklist=False,
        referenceTo=[],
        relationshipName=None,
        polymorphicForeignKey=False,
        namePointing=False,
        externalId=False,
        unique=False,
        idLookup=False,
        caseSensitive=False,
        custom=False,
        calculated=False,
        groupable=kind not in ("textarea", "double", "datetime"),
        sortable=kind != "textarea",
        filterable=kind != "textarea",
    )
    if kind in ("id", "reference"):
        field["length"] = 18
    overrides.pop("default_value", None)
    field.update(overrides)
    return field


def _system(template: dict[str, Any]) -> list[dict[str, Any]]:
    ro = {"createable": False, "updateable": False}
    return [
        _field(template, "IsDeleted", "boolean", nillable=False, defaultedOnCreate=True, **ro),
        _field(template, "CreatedDate", "datetime", nillable=False, defaultedOnCreate=True, **ro),
        _field(
            template,
            "CreatedById",
            "reference",
            referenceTo=["User"],
            relationshipName="CreatedBy",
            nillable=False,
            defaultedOnCreate=True,
            **ro,
        ),
        _field(
            template, "LastModifiedDate", "datetime", nillable=False, defaultedOnCreate=True, **ro
        ),
        _field(
            template,
            "LastModifiedById",
            "reference",
            referenceTo=["User"],
            relationshipName="LastModifiedBy",
            nillable=False,
            defaultedOnCreate=True,
            **ro,
        ),
        _field(
            template, "SystemModstamp", "datetime", nillable=False, defaultedOnCreate=True, **ro
        ),
    ]


def _id(template: dict[str, Any]) -> dict[str, Any]:
    return _field(
        template,
        "Id",
        "id",
        nillable=False,
        createable=False,
        updateable=False,
        defaultedOnCreate=True,
        idLookup=True,
    )


def link_field(template: dict[str, Any]) -> dict[str, Any]:
    """The demo org's `Concord_Link_Id__c`: a unique, case-insensitive external id."""
    return _field(
        template,
        "Concord_Link_Id__c",
        "string",
        label="Concord Link Id",
        length=255,
        externalId=True,
        unique=True,
        idLookup=True,
        custom=True,
    )


def describes(
    template_field: dict[str, Any], object_template: dict[str, Any]
) -> list[dict[str, Any]]:
    t = template_field
    task_status = ["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"]
    objects: list[tuple[str, str, str, list[dict[str, Any]]]] = [
        (
            "Task",
            "00T",
            "Tasks",
            [
                _id(t),
                _field(
                    t,
                    "WhoId",
                    "reference",
                    referenceTo=["Contact", "Lead"],
                    relationshipName="Who",
                    polymorphicForeignKey=True,
                    namePointing=True,
                ),
                _field(
                    t,
                    "WhatId",
                    "reference",
                    referenceTo=["Account", "Opportunity", "Case"],
                    relationshipName="What",
                    polymorphicForeignKey=True,
                    namePointing=True,
                ),
                _field(
                    t,
                    "Subject",
                    "combobox",
                    length=255,
                    nameField=True,
                    values=["Call", "Send Letter", "Send Quote", "Other"],
                ),
                _field(t, "ActivityDate", "date"),
                _field(
                    t,
                    "Status",
                    "picklist",
                    length=40,
                    nillable=False,
                    defaultedOnCreate=True,
                    defaultValue="Not Started",
                    values=task_status,
                    default_value="Not Started",
                ),
                _field(
                    t,
                    "Priority",
                    "picklist",
                    length=40,
                    nillable=False,
                    defaultedOnCreate=True,
                    defaultValue="Normal",
                    values=["High", "Normal", "Low"],
                    default_value="Normal",
                ),
                _field(
                    t,
                    "IsHighPriority",
                    "boolean",
                    nillable=False,
                    defaultedOnCreate=True,
                    createable=False,
                    updateable=False,
                ),
                _field(
                    t,
                    "OwnerId",
                    "reference",
                    referenceTo=["User"],
                    relationshipName="Owner",
                    nillable=False,
                    defaultedOnCreate=True,
                ),
                _field(t, "Description", "textarea", length=32000),
                _field(
                    t,
                    "AccountId",
                    "reference",
                    referenceTo=["Account"],
                    relationshipName="Account",
                    createable=False,
                    updateable=False,
                ),
                _field(
                    t,
                    "IsClosed",
                    "boolean",
                    nillable=False,
                    defaultedOnCreate=True,
                    createable=False,
                    updateable=False,
                ),
                _field(t, "CompletedDateTime", "datetime", createable=False, updateable=False),
                _field(t, "ReminderDateTime", "datetime"),
                _field(t, "IsReminderSet", "boolean", nillable=False, defaultedOnCreate=True),
                _field(
                    t,
                    "TaskSubtype",
                    "picklist",
                    length=40,
                    restrictedPicklist=True,
                    values=["Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"],
                ),
                *_system(t),
            ],
        ),
        (
            "User",
            "005",
            "Users",
            [
                _id(t),
                _field(
                    t, "Username", "string", length=80, nillable=False, unique=True, idLookup=True
                ),
                _field(t, "LastName", "string", length=80, nillable=False),
                _field(t, "FirstName", "string", length=40),
                _field(
                    t,
                    "Name",
                    "string",
                    length=121,
                    nameField=True,
                    createable=False,
                    updateable=False,
                ),
                _field(t, "Email", "email", length=128, nillable=False),
                _field(t, "Alias", "string", length=8, nillable=False),
                _field(
                    t,
                    "IsActive",
                    "boolean",
                    nillable=False,
                    defaultedOnCreate=True,
                    defaultValue=True,
                ),
                _field(
                    t,
                    "TimeZoneSidKey",
                    "picklist",
                    length=40,
                    nillable=False,
                    restrictedPicklist=True,
                    values=[
                        "America/Los_Angeles",
                        "America/New_York",
                        "Europe/London",
                        "Europe/Berlin",
                        "Asia/Tokyo",
                        "GMT",
                    ],
                ),
                *_system(t),
            ],
        ),
        (
            "EmailMessage",
            "02s",
            "Email Messages",
            [
                _id(t),
                _field(t, "ParentId", "reference", referenceTo=["Case"], relationshipName="Parent"),
                _field(
                    t,
                    "ActivityId",
                    "reference",
                    referenceTo=["Task"],
                    relationshipName="Activity",
                    createable=False,
                    updateable=False,
                ),
                _field(
                    t,
                    "RelatedToId",
                    "reference",
                    referenceTo=["Account", "Opportunity", "Case"],
                    relationshipName="RelatedTo",
                    polymorphicForeignKey=True,
                ),
                _field(t, "Subject", "string", length=3000, nameField=True),
                _field(t, "FromAddress", "email", length=1000),
                _field(t, "FromName", "string", length=1000),
                _field(t, "ToAddress", "string", length=4000),
                _field(t, "CcAddress", "string", length=4000),
                _field(t, "BccAddress", "string", length=4000),
                _field(t, "TextBody", "textarea", length=131072),
                _field(t, "HtmlBody", "textarea", length=131072),
                _field(t, "Headers", "textarea", length=32000),
                _field(t, "MessageDate", "datetime"),
                _field(t, "MessageIdentifier", "string", length=255),
                _field(t, "ThreadIdentifier", "string", length=255),
                _field(t, "Incoming", "boolean", nillable=False, defaultedOnCreate=True),
                _field(
                    t,
                    "Status",
                    "picklist",
                    length=40,
                    nillable=False,
                    restrictedPicklist=True,
                    values=["0", "1", "2", "3", "4", "5"],
                ),
                *_system(t),
            ],
        ),
        (
            "EmailMessageRelation",
            "0Rc",
            "Email Message Relations",
            [
                _id(t),
                _field(
                    t,
                    "EmailMessageId",
                    "reference",
                    referenceTo=["EmailMessage"],
                    relationshipName="EmailMessage",
                    nillable=False,
                    updateable=False,
                ),
                _field(
                    t,
                    "RelationId",
                    "reference",
                    referenceTo=["Contact", "Lead", "User"],
                    relationshipName="Relation",
                    polymorphicForeignKey=True,
                ),
                _field(
                    t,
                    "RelationType",
                    "picklist",
                    length=40,
                    nillable=False,
                    restrictedPicklist=True,
                    values=["FromAddress", "ToAddress", "CcAddress", "BccAddress"],
                ),
                _field(t, "RelationAddress", "string", length=1000),
                *_system(t),
            ],
        ),
        (
            # Files on an EmailMessage: Salesforce stores them as Attachment records whose
            # ParentId is the EmailMessage (the Object Reference's EmailMessage page).
            "Attachment",
            "00P",
            "Attachments",
            [
                _id(t),
                _field(
                    t,
                    "ParentId",
                    "reference",
                    referenceTo=[
                        "Account",
                        "Case",
                        "Contact",
                        "EmailMessage",
                        "Event",
                        "Lead",
                        "Opportunity",
                        "Task",
                    ],
                    relationshipName="Parent",
                    polymorphicForeignKey=True,
                    nillable=False,
                    updateable=False,
                ),
                _field(t, "Name", "string", length=255, nameField=True, nillable=False),
                _field(t, "IsPrivate", "boolean", nillable=False, defaultedOnCreate=True),
                _field(t, "ContentType", "string", length=120),
                _field(
                    t,
                    "BodyLength",
                    "int",
                    createable=False,
                    updateable=False,
                    groupable=False,
                ),
                _field(t, "Body", "base64", nillable=False, filterable=False, sortable=False),
                _field(
                    t,
                    "OwnerId",
                    "reference",
                    referenceTo=["User"],
                    relationshipName="Owner",
                    nillable=False,
                    defaultedOnCreate=True,
                ),
                _field(t, "Description", "textarea", length=500),
                *_system(t),
            ],
        ),
        (
            "EventRelation",
            "0RE",
            "Event Relations",
            [
                _id(t),
                _field(
                    t,
                    "EventId",
                    "reference",
                    referenceTo=["Event"],
                    relationshipName="Event",
                    nillable=False,
                    updateable=False,
                ),
                _field(
                    t,
                    "RelationId",
                    "reference",
                    referenceTo=["Contact", "Lead", "User"],
                    relationshipName="Relation",
                    polymorphicForeignKey=True,
                    nillable=False,
                    updateable=False,
                ),
                _field(
                    t,
                    "Status",
                    "picklist",
                    length=40,
                    restrictedPicklist=True,
                    values=["New", "Declined", "Accepted", "Uninvited", "Maybe"],
                ),
                _field(t, "Response", "string", length=255),
                _field(t, "RespondedDate", "datetime"),
                _field(t, "IsParent", "boolean", nillable=False, defaultedOnCreate=True),
                _field(t, "IsInvitee", "boolean", nillable=False, defaultedOnCreate=True),
                _field(t, "IsWhat", "boolean", nillable=False, defaultedOnCreate=True),
                *_system(t),
            ],
        ),
    ]
    result = []
    for name, prefix, plural, fields in objects:
        describe = copy.deepcopy(object_template)
        describe.update(
            name=name,
            label=name,
            labelPlural=plural,
            keyPrefix=prefix,
            fields=fields,
            childRelationships=[],
            recordTypeInfos=[],
            custom=False,
            customSetting=False,
            urls={
                "sobject": f"/services/data/vxx.0/sobjects/{name}",
                "describe": f"/services/data/vxx.0/sobjects/{name}/describe",
                "rowTemplate": f"/services/data/vxx.0/sobjects/{name}/{{ID}}",
            },
        )
        result.append(describe)
    return result


# The builders other modules synthesise describes with (catalog.py).
field = _field
system_fields = _system
id_field = _id
SYSTEM_FIELD_NAMES = frozenset(
    {
        "Id",
        "IsDeleted",
        "CreatedDate",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "SystemModstamp",
    }
)
