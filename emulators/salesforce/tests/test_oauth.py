"""The token endpoint and session checks, shaped like Salesforce's (see salesforce-fixtures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceExpiredSession

from concord_salesforce_emulator.app import Running, running_in_thread

from .conftest import REFERENCE, VERSION, TypedSalesforce, api, bearer

pytestmark = pytest.mark.integration

FIXTURES = REFERENCE / "salesforce-fixtures"


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _form(emulator: Running, **overrides: str) -> dict[str, str]:
    settings = emulator.emulator.settings
    form = {
        "grant_type": "password",
        "client_id": settings.client_id,
        "client_secret": settings.client_secret,
        "username": settings.username,
        "password": settings.password,
    }
    form.update(overrides)
    return form


def test_password_grant_answers_like_salesforce(token: dict[str, Any], emulator: Running) -> None:
    expected = _fixture("auth_success_response.json")
    assert set(expected) <= set(token)
    assert token["instance_url"] == emulator.url
    assert token["token_type"] == "Bearer"


def test_client_credentials_grant(emulator: Running, http: requests.Session) -> None:
    form = _form(emulator, grant_type="client_credentials")
    del form["username"], form["password"]
    response = http.post(f"{emulator.url}/services/oauth2/token", data=form)
    assert response.status_code == 200
    session = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert http.get(api(emulator, "sobjects"), headers=session).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"password": "wrong"}, "invalid_grant"),
        ({"username": "nobody@example.com"}, "invalid_grant"),
        ({"client_id": "wrong"}, "invalid_client_id"),
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
    ],
)
def test_bad_credentials_get_the_oauth_error_shape(
    emulator: Running, http: requests.Session, overrides: dict[str, str], error: str
) -> None:
    response = http.post(f"{emulator.url}/services/oauth2/token", data=_form(emulator, **overrides))
    assert response.status_code == 400
    body = response.json()
    assert set(body) == set(_fixture("auth_error_response.json"))
    assert body["error"] == error


@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Basic abc", "Bearer "])
def test_missing_or_invalid_tokens_get_invalid_session_id(
    emulator: Running, http: requests.Session, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = http.get(api(emulator, "sobjects"), headers=headers)
    assert response.status_code == 401
    assert response.json() == _fixture("expired_session_response.json")
    assert response.headers["Sforce-Limit-Info"] == "api-usage=0/100000"


def test_expired_session_raises_in_simple_salesforce(
    sf: TypedSalesforce, emulator: Running, http: requests.Session
) -> None:
    sf.describe()
    http.post(f"{emulator.url}/__admin/expire-sessions").raise_for_status()
    with pytest.raises(SalesforceExpiredSession):
        sf.describe()


def test_sessions_and_records_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "org"
    with running_in_thread(data_dir) as first:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(first.ca_cert)
        token = session.post(f"{first.url}/services/oauth2/token", data=_form(first)).json()
        created = session.post(
            api(first, "sobjects/Account"), json={"Name": "Kept"}, headers=bearer(token)
        ).json()
        session.close()
    ca_before = (first.ca_cert).read_bytes()
    with running_in_thread(data_dir) as second:
        assert second.ca_cert.read_bytes() == ca_before
        session = requests.Session()
        session.trust_env = False
        session.verify = str(second.ca_cert)
        response = session.get(
            f"{second.url}/services/data/v{VERSION}/sobjects/Account/{created['id']}",
            headers=bearer(token),
        )
        session.close()
    assert response.status_code == 200
    assert response.json()["Name"] == "Kept"


def test_each_user_logs_in_as_themselves_and_their_edits_carry_their_id(
    emulator: Running, http: requests.Session, token: dict[str, Any]
) -> None:
    """Like Salesforce: the token's identity URL ends in the user's Id, and every write is
    stamped LastModifiedById with the user who made it (what tells Concord's writes apart)."""
    admin_id = token["id"].rsplit("/", 1)[1]
    user = http.post(
        api(emulator, "sobjects/User"),
        json={
            "Username": "rep@example.com",
            "LastName": "Rep",
            "Alias": "rep",
            "Email": "rep@example.com",
            "TimeZoneSidKey": "GMT",
        },
        headers=bearer(token),
    ).json()["id"]
    theirs = http.post(
        f"{emulator.url}/services/oauth2/token", data=_form(emulator, username="rep@example.com")
    ).json()
    assert theirs["id"].endswith(f"/id/{emulator.emulator.org.org_id}/{user}")
    assert theirs["access_token"] != token["access_token"]
    created = http.post(
        api(emulator, "sobjects/Account"), json={"Name": "Stamped"}, headers=bearer(token)
    ).json()["id"]
    path = api(emulator, f"sobjects/Account/{created}")

    def last_modified_by() -> str:
        got = http.get(f"{path}?fields=LastModifiedById", headers=bearer(token)).json()
        return str(got["LastModifiedById"])

    assert last_modified_by() == admin_id
    edit = http.patch(path, json={"Name": "Edited"}, headers=bearer(theirs))
    assert edit.status_code == 204
    assert last_modified_by() == user
    composite = http.patch(
        api(emulator, "composite/sobjects"),
        json={"records": [{"attributes": {"type": "Account"}, "id": created, "Name": "Back"}]},
        headers=bearer(token),
    )
    assert composite.json()[0]["success"]
    assert last_modified_by() == admin_id
