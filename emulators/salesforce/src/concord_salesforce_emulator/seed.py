"""The org's first user, and the `demo` seed `make up` starts with."""

from __future__ import annotations

import datetime as dt
from typing import Any

from concord_salesforce_emulator import catalog, ids, timefmt
from concord_salesforce_emulator.org import Org
from concord_salesforce_emulator.store import StoredRecord


def ensure_admin_user(org: Org, username: str) -> str:
    """The user every token acts as; made directly because creating a User needs a user."""
    user = org.schema.get("User")
    assert user is not None
    existing = org.find_by(user, "Username", username)
    if existing:
        return existing[0].id
    now = timefmt.format_datetime(timefmt.now())
    record_id = ids.mint(user.key_prefix, org.store.next_sequence("User"))
    fields: dict[str, Any] = {f["name"]: None for f in user.describe["fields"]}
    fields.update(
        Id=record_id,
        Username=username,
        FirstName="Concord",
        LastName="Admin",
        Name="Concord Admin",
        Email=username,
        Alias="cadmin",
        IsActive=True,
        TimeZoneSidKey="GMT",
        IsDeleted=False,
        CreatedDate=now,
        CreatedById=record_id,
        LastModifiedDate=now,
        LastModifiedById=record_id,
        SystemModstamp=now,
    )
    org.commit_records([StoredRecord(record_id, "User", fields)])
    return record_id


_WEEK = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def ensure_standard_rows(org: Org, admin_user_id: str) -> None:
    """The rows every new org has: its Organization, the Standard Price Book and the default
    business hours (24 hours, every day). Made directly: Salesforce does not let a client create
    them either."""
    now = timefmt.format_datetime(timefmt.now())
    audit = {
        "IsDeleted": False,
        "CreatedDate": now,
        "CreatedById": admin_user_id,
        "LastModifiedDate": now,
        "LastModifiedById": admin_user_id,
        "SystemModstamp": now,
    }
    rows: list[tuple[str, str | None, dict[str, Any]]] = [
        (
            "Organization",
            org.org_id,
            {**catalog.organization_values(), "Name": "Concord Emulated Org"},
        ),
        ("Pricebook2", None, {"Name": "Standard Price Book", "IsActive": True, "IsStandard": True}),
        (
            "BusinessHours",
            None,
            {
                "Name": "Default",
                "IsActive": True,
                "IsDefault": True,
                "TimeZoneSidKey": "America/Los_Angeles",
                **{
                    f"{day}{edge}Time": "00:00:00.000Z"
                    for day in _WEEK
                    for edge in ("Start", "End")
                },
            },
        ),
    ]
    records = []
    for name, fixed_id, values in rows:
        sobject = org.schema.get(name)
        assert sobject is not None
        if any(True for _ in org.live(sobject)):
            continue
        record_id = fixed_id or ids.mint(sobject.key_prefix, org.store.next_sequence(name))
        fields: dict[str, Any] = {f["name"]: None for f in sobject.describe["fields"]}
        fields.update({k: v for k, v in values.items() if sobject.field(k) is not None})
        fields.update(audit, Id=record_id)
        records.append(StoredRecord(record_id, name, fields))
    if records:
        org.commit_records(records)


_COMPANIES = [
    ("Acme Corporation", "https://www.acme.example", "acme.example"),
    ("Globex", "https://globex.example", "globex.example"),
    ("Initech", "http://initech.example", "initech.example"),
]
_PEOPLE = [
    ("Ada", "Lovelace"),
    ("Alan", "Turing"),
    ("Grace", "Hopper"),
    ("Edsger", "Dijkstra"),
    ("Barbara", "Liskov"),
    ("Donald", "Knuth"),
]


def demo(org: Org, admin_user_id: str) -> dict[str, Any]:
    """Idempotent: a second run finds the records it made (by name) and adds nothing."""
    schema = org.schema

    def sobject(name: str) -> Any:
        found = schema.get(name)
        assert found is not None
        return found

    def ensure(name: str, key: str, values: dict[str, Any]) -> str:
        kind = sobject(name)
        for record in org.live(kind):
            if record.fields.get(key) == values[key]:
                return record.id
        return org.create(kind, values, admin_user_id).id

    users = [
        ensure(
            "User",
            "Username",
            {
                "Username": f"{first.lower()}@concord-demo.example",
                "FirstName": first,
                "LastName": last,
                "Alias": first[:8],
                "Email": f"{first.lower()}@concord-demo.example",
                "TimeZoneSidKey": "Europe/London",
            },
        )
        for first, last in [("Sales", "Rep"), ("Support", "Agent")]
    ]
    accounts, contacts, leads, opportunities = [], [], [], []
    close = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    for index, (company, website, domain) in enumerate(_COMPANIES):
        account = ensure("Account", "Name", {"Name": company, "Website": website})
        accounts.append(account)
        for first, last in _PEOPLE[index * 2 : index * 2 + 2]:
            contacts.append(
                ensure(
                    "Contact",
                    "Email",
                    {
                        "FirstName": first,
                        "LastName": last,
                        "AccountId": account,
                        "Email": f"{first.lower()}.{last.lower()}@{domain}",
                    },
                )
            )
        opportunities.append(
            ensure(
                "Opportunity",
                "Name",
                {
                    "Name": f"{company} renewal",
                    "AccountId": account,
                    "StageName": "Prospecting",
                    "CloseDate": close,
                },
            )
        )
    for first, last, company in [
        ("Linus", "Torvalds", "Kernel Org"),
        ("Margaret", "Hamilton", "Apollo Labs"),
    ]:
        leads.append(
            ensure(
                "Lead",
                "Email",
                {
                    "FirstName": first,
                    "LastName": last,
                    "Company": company,
                    "Email": f"{first.lower()}@{company.split()[0].lower()}.example",
                },
            )
        )
    return {
        "users": [admin_user_id, *users],
        "accounts": accounts,
        "contacts": contacts,
        "leads": leads,
        "opportunities": opportunities,
    }
