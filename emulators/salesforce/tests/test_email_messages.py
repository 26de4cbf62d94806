"""EmailMessage, EmailMessageRelation and Attachment as Concord's email sharing writes them:
through simple-salesforce, Collections and Composite, checked against the describes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from .conftest import TypedSalesforce, error_body

pytestmark = pytest.mark.integration


def _message(**fields: Any) -> dict[str, Any]:
    return {
        "Subject": "Renewal",
        "FromAddress": "ann@corp.example",
        "ToAddress": "bob@acme.com",
        "TextBody": "Let's renew.",
        "MessageDate": "2026-11-02T09:30:00.000+0000",
        "MessageIdentifier": "<deal-1@corp.example>",
        "ThreadIdentifier": "<deal-1@corp.example>",
        "Incoming": True,
        "Status": "1",
        **fields,
    }


def _code(excinfo: pytest.ExceptionInfo[SalesforceMalformedRequest]) -> str:
    content = error_body(excinfo.value)
    assert isinstance(content, list)
    return str(content[0]["errorCode"])


def _contact(sf: TypedSalesforce, email: str) -> str:
    return str(sf.Contact.create({"LastName": "Lee", "Email": email})["id"])


def test_an_email_with_relations_and_an_attachment_in_one_composite_call(
    sf: TypedSalesforce,
) -> None:
    ann = _contact(sf, "ann@corp.example")
    message = sf.EmailMessage.upsert("Concord_Link_Id__c/email-0001", _message(), raw_response=True)
    assert message.status_code == 201
    message_id = sf.query("SELECT Id FROM EmailMessage")["records"][0]["Id"]
    pdf = b"%PDF-1.4 tiny"
    body = {
        "compositeRequest": [
            {
                "method": "POST",
                "url": "/services/data/v62.0/composite/sobjects",
                "referenceId": "children",
                "body": {
                    "allOrNone": False,
                    "records": [
                        {
                            "attributes": {"type": "EmailMessageRelation"},
                            "EmailMessageId": message_id,
                            "RelationId": ann,
                            "RelationType": "FromAddress",
                            "RelationAddress": "ann@corp.example",
                        },
                        {
                            "attributes": {"type": "Attachment"},
                            "ParentId": message_id,
                            "Name": "quote.pdf",
                            "ContentType": "application/pdf",
                            "Body": base64.b64encode(pdf).decode(),
                        },
                    ],
                },
            }
        ]
    }
    answer = sf.restful("composite", method="POST", json=body)
    assert answer is not None
    results = answer["compositeResponse"][0]["body"]
    assert [r["success"] for r in results] == [True, True]
    relations = sf.query(
        f"SELECT RelationId, RelationType FROM EmailMessageRelation "
        f"WHERE EmailMessageId = '{message_id}'"
    )["records"]
    assert [(r["RelationId"], r["RelationType"]) for r in relations] == [(ann, "FromAddress")]
    (attachment,) = sf.query(
        f"SELECT Id, Name, BodyLength, Body FROM Attachment WHERE ParentId = '{message_id}'"
    )["records"]
    assert attachment["Name"] == "quote.pdf"
    assert attachment["BodyLength"] == len(pdf)
    # Blobs come back as their URL, never inline.
    assert attachment["Body"] == (
        f"/services/data/v62.0/sobjects/Attachment/{attachment['Id']}/Body"
    )
    assert sf.Attachment.get(attachment["Id"])["Body"] == attachment["Body"]


def test_the_link_id_keeps_an_email_message_single(sf: TypedSalesforce) -> None:
    for _ in range(2):
        sf.EmailMessage.upsert("Concord_Link_Id__c/email-0002", _message())
    assert sf.query("SELECT COUNT() FROM EmailMessage")["totalSize"] == 1
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.EmailMessage.create({**_message(), "Concord_Link_Id__c": "EMAIL-0002"})
    assert _code(excinfo) == "DUPLICATE_VALUE"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"Status": None}, "REQUIRED_FIELD_MISSING"),
        ({"Status": "9"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"Subject": "x" * 3001}, "STRING_TOO_LONG"),
        ({"ToAddress": "a@b.example; " * 400}, "STRING_TOO_LONG"),
        ({"TextBody": "x" * 131_073}, "STRING_TOO_LONG"),
        ({"RelatedToId": "003000000000000AAA"}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"Headers2": "x"}, "INVALID_FIELD"),
    ],
)
def test_email_message_fields_are_checked_against_the_describe(
    sf: TypedSalesforce, fields: dict[str, Any], code: str
) -> None:
    values = {k: v for k, v in _message(**fields).items() if v is not None}
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.EmailMessage.create(values)
    assert _code(excinfo) == code


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"Body": "not base64!"}, "JSON_PARSER_ERROR"),
        ({"Body": None}, "REQUIRED_FIELD_MISSING"),
        ({"ParentId": None}, "REQUIRED_FIELD_MISSING"),
        ({"Name": "x" * 256}, "STRING_TOO_LONG"),
        ({"BodyLength": 3}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
    ],
)
def test_attachments_are_checked_against_the_describe(
    sf: TypedSalesforce, fields: dict[str, Any], code: str
) -> None:
    parent = sf.EmailMessage.create(_message())["id"]
    values = {"ParentId": parent, "Name": "a.txt", "Body": base64.b64encode(b"hi").decode()}
    values.update(fields)
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Attachment.create({k: v for k, v in values.items() if v is not None})
    assert _code(excinfo) == code


def test_a_relation_needs_a_known_type_and_a_person(sf: TypedSalesforce) -> None:
    message = sf.EmailMessage.create(_message())["id"]
    ann = _contact(sf, "ann@corp.example")
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.EmailMessageRelation.create(
            {"EmailMessageId": message, "RelationId": ann, "RelationType": "Sender"}
        )
    assert _code(excinfo) == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    account = sf.Account.create({"Name": "Acme"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.EmailMessageRelation.create(
            {"EmailMessageId": message, "RelationId": account, "RelationType": "ToAddress"}
        )
    assert _code(excinfo) == "FIELD_INTEGRITY_EXCEPTION"
