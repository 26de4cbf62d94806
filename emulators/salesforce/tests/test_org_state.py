"""A hypothesis state machine: the org agrees with a plain model through writes and restarts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from concord_salesforce_emulator.errors import SalesforceError
from concord_salesforce_emulator.org import Org, WriteResult
from concord_salesforce_emulator.schema import SObjectType, load_schema
from concord_salesforce_emulator.store import OrgStore

pytestmark = pytest.mark.unit

SCHEMA = load_schema()


def _sobject(name: str) -> SObjectType:
    found = SCHEMA.get(name)
    assert found is not None, name
    return found


TASK = _sobject("Task")
USER = "0055e0000000001AAA"
LINKS = st.sampled_from(["a", "b", "c", "A", "d"])
SUBJECTS = st.sampled_from(["Call", "Email", "x" * 256, None])


class OrgMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.path = Path(self.folder.name) / "org.db"
        self.org = Org(OrgStore(self.path), SCHEMA)
        # The model: link (lower-cased) -> (id, subject) of live tasks; deleted ids.
        self.live: dict[str, tuple[str, str | None]] = {}
        self.deleted: set[str] = set()

    def teardown(self) -> None:
        self.org.store.close()
        self.folder.cleanup()

    def _upsert(self, records: list[dict[str, Any]]) -> list[WriteResult | SalesforceError]:
        operations = []
        for values in records:
            kind, existing = self.org.upsert_plan(TASK, "Concord_Link_Id__c", values["link"])
            body = {"Subject": values["subject"]}
            if kind == "create":
                body["Concord_Link_Id__c"] = values["link"]
            operations.append((kind, TASK, existing, body))
        return self.org.write_many(operations, USER, all_or_none=False)

    @rule(link=LINKS, subject=SUBJECTS)
    def upsert(self, link: str, subject: str | None) -> None:
        (result,) = self._upsert([{"link": link, "subject": subject}])
        if subject is not None and len(subject) > 255:
            assert isinstance(result, SalesforceError)
            assert result.code == "STRING_TOO_LONG"
            return
        assert isinstance(result, WriteResult)
        known = self.live.get(link.lower())
        assert result.created == (known is None)
        if known is not None:
            assert result.id == known[0]
        self.live[link.lower()] = (result.id, subject)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        link = data.draw(st.sampled_from(sorted(self.live)))
        record_id, _ = self.live.pop(link)
        (result,) = self.org.delete_many([record_id], all_or_none=False)
        assert isinstance(result, WriteResult)
        self.deleted.add(record_id)
        (again,) = self.org.delete_many([record_id], all_or_none=False)
        assert isinstance(again, SalesforceError)
        assert again.code == "ENTITY_IS_DELETED"

    @rule()
    def restart(self) -> None:
        self.org.store.close()
        self.org = Org(OrgStore(self.path), SCHEMA)

    @invariant()
    def agrees_with_the_model(self) -> None:
        live = {r.id: r for r in self.org.live(TASK)}
        assert set(live) == {record_id for record_id, _ in self.live.values()}
        for link, (record_id, subject) in self.live.items():
            assert live[record_id].fields["Subject"] == subject
            assert [r.id for r in self.org.find_by(TASK, "Concord_Link_Id__c", link)] == [record_id]
        everything = {r.id for r in self.org.live(TASK, include_deleted=True)}
        assert everything == set(live) | self.deleted


TestOrgMachine = OrgMachine.TestCase
TestOrgMachine.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)
