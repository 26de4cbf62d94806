"""`CrmDirectory` over crm-connector's gRPC API (Search, QueryRecords, GetRecords, ApplyBatch).

Every method is one call to crm-connector (one Salesforce API call), except where noted.
Matching is re-checked here after SOSL: SOSL matches tokens anywhere in a field, linking
needs exact addresses and registrable domains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2

from concord.common.v1 import resources_pb2
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord_linker.domain.addresses import DomainRules, domain_of, website_host
from concord_linker.domain.errors import CrmWriteRejected, CrmWriteRetryable
from concord_linker.domain.model import Account, Case, Opportunity, Person
from concord_linker.domain.ports import AccountMatch

__all__ = ["GrpcCrmDirectory"]

_CONTACT_FIELDS = [
    "Id", "Name", "Email", "AccountId", "Account.Name", "Title", "Phone", "LastModifiedDate",
]  # fmt: skip
_LEAD_FIELDS = [
    "Id", "Name", "Email", "Company", "Title", "Phone", "IsConverted", "LastModifiedDate",
]  # fmt: skip
_ACCOUNT_FIELDS = ["Id", "Name", "Website", "LastModifiedDate"]
_OPPORTUNITY_FIELDS = [
    "Id", "Name", "AccountId", "OwnerId", "IsClosed", "LastActivityDate", "LastModifiedDate",
]  # fmt: skip
_CASE_FIELDS = [
    "Id", "CaseNumber", "Subject", "AccountId", "ContactId", "IsClosed", "LastModifiedDate",
]  # fmt: skip
_SEARCH_LIMIT = 200
_OK = resources_pb2.WRITE_STATUS_OK
_RETRYABLE = resources_pb2.WRITE_STATUS_RETRYABLE


def _fields(record: resources_pb2.CrmRecord) -> dict[str, Any]:
    values: dict[str, Any] = json_format.MessageToDict(record.fields)
    return values


def _text(values: Mapping[str, Any], name: str) -> str:
    if "." in name:
        # Relationship fields come back nested ({"Account": {"Name": ...}}) or flat.
        head, _, tail = name.partition(".")
        nested = values.get(head)
        if isinstance(nested, Mapping):
            return _text(nested, tail)
    value = values.get(name)
    return "" if value is None else str(value)


def _person(record: resources_pb2.CrmRecord) -> Person:
    values = _fields(record)
    return Person(
        sobject_type=record.sobject_type,
        id=record.id or _text(values, "Id"),
        name=_text(values, "Name"),
        email=_text(values, "Email").lower(),
        last_modified=_text(values, "LastModifiedDate"),
        account_id=_text(values, "AccountId"),
        account_name=_text(values, "Account.Name"),
        company=_text(values, "Company"),
        title=_text(values, "Title"),
        phone=_text(values, "Phone"),
    )


def _account(record: resources_pb2.CrmRecord) -> Account:
    values = _fields(record)
    return Account(
        record.id or _text(values, "Id"),
        _text(values, "Name"),
        _text(values, "Website"),
        _text(values, "LastModifiedDate"),
    )


def _filter(field: str, values: Sequence[str | bool]) -> crm.FieldFilter:
    converted = [
        struct_pb2.Value(bool_value=v) if isinstance(v, bool) else struct_pb2.Value(string_value=v)
        for v in values
    ]
    return crm.FieldFilter(field=field, values=converted)


class GrpcCrmDirectory:
    def __init__(
        self,
        stub: crm_grpc.CrmConnectorServiceStub,
        rules: DomainRules,
        *,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._stub = stub
        self._rules = rules
        # Every call has a deadline: a hung crm-connector must fail the resolution (and the
        # reconciler's session item), not hold it forever.
        self._timeout = timeout_seconds

    @staticmethod
    def _org(org: str) -> str:
        return f"orgs/{org}"

    async def people_by_emails(self, org: str, emails: Sequence[str]) -> Sequence[Person]:
        wanted = {e.lower() for e in emails}
        response = await self._stub.Search(
            crm.SearchRequest(
                org=self._org(org),
                emails=sorted(wanted),
                targets=[
                    crm.SearchTarget(sobject_type="Contact", fields=_CONTACT_FIELDS),
                    crm.SearchTarget(sobject_type="Lead", fields=_LEAD_FIELDS),
                ],
            ),
            timeout=self._timeout,
        )
        people = []
        for record in response.records:
            values = _fields(record)
            if record.sobject_type == "Lead" and values.get("IsConverted") is True:
                continue  # a converted Lead lives on as its Contact
            person = _person(record)
            if person.email in wanted:
                people.append(person)
        return people

    async def accounts_by_domains(self, org: str, domains: Sequence[str]) -> Sequence[AccountMatch]:
        """One Search; a second call (GetRecords) for Accounts known only through Contacts."""
        wanted = set(domains)
        response = await self._stub.Search(
            crm.SearchRequest(
                org=self._org(org),
                terms=sorted(wanted),
                targets=[
                    crm.SearchTarget(
                        sobject_type="Account", fields=_ACCOUNT_FIELDS, limit=_SEARCH_LIMIT
                    ),
                    crm.SearchTarget(
                        sobject_type="Contact", fields=_CONTACT_FIELDS, limit=_SEARCH_LIMIT
                    ),
                ],
            ),
            timeout=self._timeout,
        )
        found: list[AccountMatch] = []
        accounts: dict[str, Account] = {}
        via_contacts: list[tuple[str, str, str]] = []
        for record in response.records:
            if record.sobject_type == "Account":
                account = _account(record)
                accounts[account.id] = account
                host = website_host(account.website)
                domain = self._rules.registrable_domain(host) if host else ""
                if domain in wanted:
                    found.append(AccountMatch(account, domain, "website", f"website {host}"))
            elif record.sobject_type == "Contact":
                person = _person(record)
                domain = self._rules.registrable_domain(domain_of(person.email))
                if person.account_id and domain in wanted:
                    evidence = f"Contact {person.name} at {domain_of(person.email)}"
                    via_contacts.append((person.account_id, domain, evidence))
        missing = sorted({a for a, _, _ in via_contacts if a not in accounts})
        if missing:
            for account in await self.accounts_by_ids(org, missing):
                accounts[account.id] = account
        for account_id, domain, evidence in via_contacts:
            if account_id in accounts:
                found.append(AccountMatch(accounts[account_id], domain, "contact", evidence))
        return found

    async def accounts_by_ids(self, org: str, ids: Sequence[str]) -> Sequence[Account]:
        response = await self._stub.GetRecords(
            crm.GetRecordsRequest(
                org=self._org(org), sobject_type="Account", ids=list(ids), fields=_ACCOUNT_FIELDS
            ),
            timeout=self._timeout,
        )
        return [_account(r) for r in response.records]

    async def open_opportunities(
        self, org: str, account_ids: Sequence[str], owner_id: str
    ) -> Sequence[Opportunity]:
        filters = [_filter("AccountId", list(account_ids)), _filter("IsClosed", [False])]
        if owner_id:
            filters.append(_filter("OwnerId", [owner_id]))
        response = await self._stub.QueryRecords(
            crm.QueryRecordsRequest(
                org=self._org(org),
                sobject_type="Opportunity",
                fields=_OPPORTUNITY_FIELDS,
                filters=filters,
                order_by="LastActivityDate DESC NULLS LAST",
                page_size=_SEARCH_LIMIT,
            ),
            timeout=self._timeout,
        )
        opportunities = []
        for record in response.records:
            values = _fields(record)
            opportunities.append(
                Opportunity(
                    id=record.id or _text(values, "Id"),
                    name=_text(values, "Name"),
                    account_id=_text(values, "AccountId"),
                    owner_id=_text(values, "OwnerId"),
                    is_closed=values.get("IsClosed") is True,
                    last_activity=_text(values, "LastActivityDate"),
                    last_modified=_text(values, "LastModifiedDate"),
                )
            )
        return opportunities

    async def cases(
        self,
        org: str,
        *,
        account_ids: Sequence[str] = (),
        contact_ids: Sequence[str] = (),
        case_numbers: Sequence[str] = (),
    ) -> Sequence[Case]:
        """One query per kind of condition given (QueryRecords ANDs its filters)."""
        queries = []
        if case_numbers:
            queries.append([_filter("CaseNumber", list(case_numbers))])
        if account_ids:
            queries.append([_filter("AccountId", list(account_ids)), _filter("IsClosed", [False])])
        if contact_ids:
            queries.append([_filter("ContactId", list(contact_ids)), _filter("IsClosed", [False])])
        cases: dict[str, Case] = {}
        for filters in queries:
            response = await self._stub.QueryRecords(
                crm.QueryRecordsRequest(
                    org=self._org(org),
                    sobject_type="Case",
                    fields=_CASE_FIELDS,
                    filters=filters,
                    order_by="LastModifiedDate DESC",
                    page_size=_SEARCH_LIMIT,
                ),
                timeout=self._timeout,
            )
            for record in response.records:
                values = _fields(record)
                case = Case(
                    id=record.id or _text(values, "Id"),
                    case_number=_text(values, "CaseNumber"),
                    subject=_text(values, "Subject"),
                    account_id=_text(values, "AccountId"),
                    contact_id=_text(values, "ContactId"),
                    is_closed=values.get("IsClosed") is True,
                    last_modified=_text(values, "LastModifiedDate"),
                )
                cases[case.id] = case
        return list(cases.values())

    async def search(
        self, org: str, terms: Sequence[str]
    ) -> tuple[Sequence[Person], Sequence[Account]]:
        response = await self._stub.Search(
            crm.SearchRequest(
                org=self._org(org),
                terms=list(terms),
                targets=[
                    crm.SearchTarget(sobject_type="Contact", fields=_CONTACT_FIELDS, limit=10),
                    crm.SearchTarget(sobject_type="Lead", fields=_LEAD_FIELDS, limit=10),
                    crm.SearchTarget(sobject_type="Account", fields=_ACCOUNT_FIELDS, limit=10),
                ],
            ),
            timeout=self._timeout,
        )
        people: list[Person] = []
        accounts: list[Account] = []
        for record in response.records:
            if record.sobject_type == "Account":
                accounts.append(_account(record))
            elif (
                record.sobject_type in ("Contact", "Lead")
                and _fields(record).get("IsConverted") is not True
            ):
                people.append(_person(record))
        return people, accounts

    async def create(
        self, org: str, sobject_type: str, fields: Mapping[str, str], idempotency_key: str
    ) -> str:
        values = struct_pb2.Struct()
        values.update(dict(fields))
        # Upsert by the external id: a retry after a lost answer finds the record it made.
        write = crm.CrmWrite(
            operation=crm.CRM_WRITE_OPERATION_UPSERT,
            sobject_type=sobject_type,
            link_id=idempotency_key,
            fields=values,
        )
        return await self._write(org, write)

    async def attach_to_account(self, org: str, contact: Person, account_id: str) -> None:
        values = struct_pb2.Struct()
        values.update({"AccountId": account_id})
        # Setting the same AccountId twice is harmless: a plain update is idempotent here.
        write = crm.CrmWrite(
            operation=crm.CRM_WRITE_OPERATION_UPDATE,
            sobject_type="Contact",
            id=contact.id,
            fields=values,
        )
        await self._write(org, write)

    async def _write(self, org: str, write: crm.CrmWrite) -> str:
        sobject_type = write.sobject_type
        response = await self._stub.ApplyBatch(
            crm.ApplyBatchRequest(org=self._org(org), writes=[write], all_or_none=True),
            timeout=self._timeout,
        )
        result = response.results[0] if response.results else None
        record_id = (result.id if result is not None else "") or write.id
        if result is not None and result.status == _OK and record_id:
            return record_id
        codes = ", ".join(e.code for e in result.errors) if result else "no result"
        if result is not None and result.status == _RETRYABLE:
            raise CrmWriteRetryable(f"Salesforce could not write the {sobject_type}: {codes}")
        raise CrmWriteRejected(
            f"Salesforce refused to write the {sobject_type}: {codes}",
            metadata={"sobject_type": sobject_type},
        )
