"""The demo: the org's Salesforce connection and the demo mailbox, registered as an admin would.

Both are idempotent, so a second `make up` over the same var/ finds them in place — with the
addresses of this run: with `--free-ports` the emulators listen elsewhere each time, so each
write's request id names this run and what it writes (a retry within the run replays; every
run applies, even one whose addresses an earlier run had, since the run between may have
written others), and an existing mailbox gets this run's account. Without the emulators (a
checkout that has none installed) the mailbox is registered without an account and syncs
nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message, struct_pb2

from concord.common.v1 import resources_pb2
from concord.crm.v1 import crm_connector_service_pb2, crm_connector_service_pb2_grpc
from concord.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from concord.mail.v1 import mail_connector_service_pb2, mail_connector_service_pb2_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_devstack.tokens import (
    DEMO_ADDRESS,
    DEMO_GRAPH_MAILBOX,
    DEMO_MAILBOX,
    DEMO_ORG,
    DEMO_USER,
)
from concord_rpc.identity import AttachIdentity, Identity, IdentitySigner, acting_as

# The Google emulator's demo user, registered beside the Exchange one (issue #14).
DEMO_GOOGLE_MAILBOX = "demo-google"

# The integration user the demo mailbox's records belong to, when the emulator does not say.
DEMO_CRM_USER = "005000000000001AAA"


def content_request_id(kind: str, written: message.Message, run: str) -> str:
    """A request id that names the run and what is written: a retry of the same write in the
    same run replays, any other write applies.

    Content alone is not enough: `make up` on default ports, then with `--free-ports`, then on
    default ports again writes the first run's content a third time, and the peer replayed the
    first run's answer (kept a day) without applying it, so the org's connection and the
    mailbox's account kept the second run's addresses (issue #17, case 5).
    """
    digest = hashlib.sha256(written.SerializeToString(deterministic=True)).hexdigest()[:24]
    return f"devstack-{kind}-{run}-{digest}"


def new_run() -> str:
    """The id of one `up`: its writes are its own requests."""
    return uuid.uuid4().hex[:12]


def register_demo(
    addresses: dict[str, str],
    admin_token: str,
    emulators: dict[str, dict[str, Any]],
    identity_key: str,
) -> None:
    """`addresses` holds the gateway's, crm-connector's and mail-connector's."""
    asyncio.run(_register_demo(addresses, admin_token, emulators, identity_key))


async def _register_demo(
    addresses: dict[str, str],
    admin_token: str,
    emulators: dict[str, dict[str, Any]],
    identity_key: str,
) -> None:
    crm_user_id = DEMO_CRM_USER
    signer = IdentitySigner(identity_key)
    run = new_run()
    if "salesforce" in emulators:
        with acting_as(Identity(subject="devstack", org=DEMO_ORG, role="admin")):
            crm_user_id = await _connect_org(
                addresses["crm-connector"], emulators["salesforce"], signer, run
            )
    request = gateway_service_pb2.RegisterMailboxRequest(
        mailbox_id=DEMO_MAILBOX,
        mailbox=rres.Mailbox(
            org=f"orgs/{DEMO_ORG}",
            owner_user_id=DEMO_USER,
            crm_user_id=crm_user_id,
            address=DEMO_ADDRESS,
            provider=resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS,
        ),
    )
    if "exchange" in emulators:
        request.account.CopyFrom(_exchange_account(emulators["exchange"]))
    requests = [request]
    if "graph" in emulators:
        # The same demo mailbox's data, served by the Graph emulator, as a mailbox of its own
        # (of another Salesforce user: see DEMO_GRAPH_CRM_USERNAME).
        graph_user = crm_user_id
        if "salesforce" in emulators:
            with acting_as(Identity(subject="devstack", org=DEMO_ORG, role="admin")):
                graph_user = await _crm_user(
                    addresses["crm-connector"], DEMO_GRAPH_CRM_USERNAME, signer
                )
        graph = gateway_service_pb2.RegisterMailboxRequest(
            mailbox_id=DEMO_GRAPH_MAILBOX,
            mailbox=rres.Mailbox(
                org=f"orgs/{DEMO_ORG}",
                owner_user_id=DEMO_USER,
                crm_user_id=graph_user,
                address=str(emulators["graph"]["mailbox"]),
                provider=resources_pb2.MAIL_PROVIDER_GRAPH,
            ),
            account=_graph_account(emulators["graph"]),
        )
        requests.append(graph)
    if "google" in emulators:
        # The same data again through the Google emulator, of a third Salesforce user.
        google_user = crm_user_id
        if "salesforce" in emulators:
            with acting_as(Identity(subject="devstack", org=DEMO_ORG, role="admin")):
                google_user = await _crm_user(
                    addresses["crm-connector"], DEMO_GOOGLE_CRM_USERNAME, signer
                )
        requests.append(_google_request(emulators["google"], google_user))
    for each in requests:
        each.request_id = content_request_id("register", each, run)
        await _register(addresses, admin_token, signer, each, run)


def _google_request(
    info: dict[str, Any], crm_user_id: str
) -> gateway_service_pb2.RegisterMailboxRequest:
    """`demo-google`: the Google emulator's demo user, reached through its service account."""
    key = json.loads(Path(str(info["service_account_file"])).read_text())
    address = str(info["user"])
    return gateway_service_pb2.RegisterMailboxRequest(
        mailbox_id=DEMO_GOOGLE_MAILBOX,
        mailbox=rres.Mailbox(
            org=f"orgs/{DEMO_ORG}",
            owner_user_id=DEMO_USER,
            crm_user_id=crm_user_id,
            address=address,
            provider=resources_pb2.MAIL_PROVIDER_GOOGLE,
        ),
        account=mail_connector_service_pb2.MailboxAccount(
            address=address,
            provider=resources_pb2.MAIL_PROVIDER_GOOGLE,
            google=mail_connector_service_pb2.GoogleSettings(
                service_account_email=str(key["client_email"]), api_url=str(info["url"])
            ),
            secret=json.dumps(key).encode(),
        ),
    )


async def _register(
    addresses: dict[str, str],
    admin_token: str,
    signer: IdentitySigner,
    request: gateway_service_pb2.RegisterMailboxRequest,
    run: str,
) -> None:
    async with grpc.aio.insecure_channel(addresses["gateway"]) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        try:
            await stub.RegisterMailbox(
                request, metadata=[("authorization", f"Bearer {admin_token}")], timeout=20
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise RuntimeError(f"registering the demo mailbox failed: {err.details()}") from err
            if request.HasField("account"):
                with acting_as(Identity(subject="devstack", org=DEMO_ORG, role="admin")):
                    await _replace_account(
                        addresses["mail-connector"],
                        request.mailbox_id,
                        request.account,
                        signer,
                        run,
                    )


async def _replace_account(
    address: str,
    mailbox: str,
    account: mail_connector_service_pb2.MailboxAccount,
    signer: IdentitySigner,
    run: str,
) -> None:
    """The mailbox registered by an earlier run keeps its links and cursors; only how it is
    reached changes (the emulator's address differs from run to run with `--free-ports`)."""
    replaced = mail_connector_service_pb2.MailboxAccount()
    replaced.CopyFrom(account)
    replaced.name = f"mailboxes/{mailbox}/account"
    upsert = mail_connector_service_pb2.UpsertMailboxAccountRequest(account=replaced)
    upsert.request_id = content_request_id("account", upsert, run)
    async with grpc.aio.insecure_channel(address, interceptors=[AttachIdentity(signer)]) as channel:
        stub = mail_connector_service_pb2_grpc.MailConnectorServiceStub(channel)
        try:
            await stub.UpsertMailboxAccount(upsert, timeout=20)
        except grpc.aio.AioRpcError as err:
            reason = err.details()
            raise RuntimeError(f"updating the demo mailbox's account failed: {reason}") from err


def _exchange_account(info: dict[str, Any]) -> mail_connector_service_pb2.MailboxAccount:
    service = info.get("service_account") or {}
    return mail_connector_service_pb2.MailboxAccount(
        address=DEMO_ADDRESS,
        provider=resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS,
        ews=mail_connector_service_pb2.EwsSettings(
            service_url=str(info["url"]),
            username=str(service.get("username") or info["username"]),
            auth_type="basic",
        ),
        secret=str(service.get("password") or info["password"]).encode(),
    )


def _graph_account(info: dict[str, Any]) -> mail_connector_service_pb2.MailboxAccount:
    return mail_connector_service_pb2.MailboxAccount(
        address=str(info["mailbox"]),
        provider=resources_pb2.MAIL_PROVIDER_GRAPH,
        graph=mail_connector_service_pb2.GraphSettings(
            tenant_id=str(info["tenant_id"]),
            client_id=str(info["client_id"]),
            authority_url=str(info["authority_url"]),
            graph_url=str(info["url"]),
        ),
        secret=str(info["client_secret"]).encode(),
    )


# Each demo mailbox belongs to its own Salesforce user, as two people's mailboxes would: the
# Graph (and Google) demo mailboxes hold the same seeded meetings as the Exchange one, and one
# user's two mailboxes would mirror the same Events both ways and undo each other's changes.
DEMO_GRAPH_CRM_USERNAME = "sales@concord-demo.example"
DEMO_GOOGLE_CRM_USERNAME = "support@concord-demo.example"


async def _crm_user(address: str, username: str, signer: IdentitySigner) -> str:
    """The Salesforce User Id of `username` in the demo org (connected already)."""
    async with grpc.aio.insecure_channel(address, interceptors=[AttachIdentity(signer)]) as channel:
        stub = crm_connector_service_pb2_grpc.CrmConnectorServiceStub(channel)
        try:
            found = await stub.QueryRecords(
                crm_connector_service_pb2.QueryRecordsRequest(
                    org=f"orgs/{DEMO_ORG}",
                    sobject_type="User",
                    fields=["Id"],
                    filters=[
                        crm_connector_service_pb2.FieldFilter(
                            field="Username", values=[struct_pb2.Value(string_value=username)]
                        )
                    ],
                ),
                timeout=30,
            )
        except grpc.aio.AioRpcError as err:
            raise RuntimeError(f"reading the demo org's users failed: {err.details()}") from err
    if not found.records:
        raise RuntimeError(f"the demo org has no user {username}")
    return found.records[0].id


async def _connect_org(address: str, info: dict[str, Any], signer: IdentitySigner, run: str) -> str:
    """Connect the demo org; the Salesforce User Id of the integration user, who owns the demo
    mailbox's records (an OwnerId Salesforce does not know refuses every write).

    Connecting an org is an operator's act on crm-connector itself (no gateway API), so the
    calls carry an identity signed with the stack's internal key, as every internal call must.
    """
    connection = crm_connector_service_pb2.OrgConnection(
        name=f"orgs/{DEMO_ORG}/connection",
        login_url=str(info["url"]),
        auth_flow=crm_connector_service_pb2.AUTH_FLOW_PASSWORD,
        client_id=str(info["client_id"]),
        username=str(info["username"]),
        secret=json.dumps(
            {"client_secret": info["client_secret"], "password": info["password"]}
        ).encode(),
    )
    async with grpc.aio.insecure_channel(address, interceptors=[AttachIdentity(signer)]) as channel:
        stub = crm_connector_service_pb2_grpc.CrmConnectorServiceStub(channel)
        upsert = crm_connector_service_pb2.UpsertOrgConnectionRequest(connection=connection)
        upsert.request_id = content_request_id("connect", upsert, run)
        try:
            await stub.UpsertOrgConnection(upsert, timeout=30)
            found = await stub.QueryRecords(
                crm_connector_service_pb2.QueryRecordsRequest(
                    org=f"orgs/{DEMO_ORG}",
                    sobject_type="User",
                    fields=["Id"],
                    filters=[
                        crm_connector_service_pb2.FieldFilter(
                            field="Username",
                            values=[struct_pb2.Value(string_value=str(info["username"]))],
                        )
                    ],
                ),
                timeout=30,
            )
        except grpc.aio.AioRpcError as err:
            raise RuntimeError(f"connecting the demo org failed: {err.details()}") from err
    if not found.records:
        raise RuntimeError(f"the demo org has no user {info['username']}")
    return found.records[0].id
