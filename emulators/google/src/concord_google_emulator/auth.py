"""OAuth 2.0 for service accounts with domain-wide delegation, as Google's token endpoint does it.

The emulator makes each service account's RSA key and hands out the JSON key file a client loads
(`google.oauth2.service_account`); the token endpoint verifies the signed JWT assertion (RS256,
`kid` naming the key, `aud` the token URI, `iat`/`exp`), that the subject is a user of the
domain, and that every scope asked for was granted to the account's client id, as an admin does
in the Admin console.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

__all__ = ["ALL_SCOPES", "Grant", "OAuthError", "ServiceAccount", "TokenIssuer"]

ALL_SCOPES = (
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/contacts",
    "https://www.googleapis.com/auth/tasks",
    "https://www.googleapis.com/auth/gmail.modify",
)
TOKEN_LIFETIME = 3600
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


class OAuthError(Exception):
    """An error of the token endpoint, in RFC 6749's shape."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass
class ServiceAccount:
    client_email: str
    client_id: str
    key_id: str
    private_pem: str = field(repr=False)
    public_pem: str
    # Domain-wide delegation: the scopes an admin granted this client id.
    granted_scopes: set[str]

    def key_file(self, token_uri: str) -> dict[str, Any]:
        """The JSON key a client downloads, pointing at this emulator's token endpoint."""
        return {
            "type": "service_account",
            "project_id": "concord-emulator",
            "private_key_id": self.key_id,
            "private_key": self.private_pem,
            "client_email": self.client_email,
            "client_id": self.client_id,
            "auth_uri": token_uri.rsplit("/", 1)[0] + "/auth",
            "token_uri": token_uri,
        }


@dataclass(frozen=True)
class Grant:
    """What an access token lets its bearer do."""

    client_email: str
    user: str
    scopes: frozenset[str]
    expires_at: float


class TokenIssuer:
    def __init__(self) -> None:
        self.accounts: dict[str, ServiceAccount] = {}
        self.tokens: dict[str, Grant] = {}

    def create_account(self, name: str, scopes: set[str] | None = None) -> ServiceAccount:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        account = ServiceAccount(
            client_email=f"{name}@concord-emulator.iam.gserviceaccount.com",
            client_id=str(100000000000000000000 + secrets.randbelow(10**20)),
            key_id=secrets.token_hex(20),
            private_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            public_pem=key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
            granted_scopes=set(ALL_SCOPES if scopes is None else scopes),
        )
        self.accounts[account.client_email] = account
        return account

    def load_account(self, key: dict[str, Any], scopes: set[str] | None = None) -> ServiceAccount:
        """A service account from the JSON key an earlier run handed out, so that file keeps
        working across restarts."""
        private = serialization.load_pem_private_key(str(key["private_key"]).encode(), None)
        account = ServiceAccount(
            client_email=str(key["client_email"]),
            client_id=str(key["client_id"]),
            key_id=str(key["private_key_id"]),
            private_pem=str(key["private_key"]),
            public_pem=private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
            granted_scopes=set(ALL_SCOPES if scopes is None else scopes),
        )
        self.accounts[account.client_email] = account
        return account

    def exchange(self, form: dict[str, str], token_uri: str, users: set[str]) -> dict[str, Any]:
        """The JWT bearer grant (RFC 7523): an access token for the assertion's subject."""
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            raise OAuthError(400, "unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion", "")
        try:
            unverified = jwt.decode(assertion, verify=False)  # type: ignore[no-untyped-call]
            header = jwt.decode_header(assertion)  # type: ignore[no-untyped-call]
        except (ValueError, auth_exceptions.GoogleAuthError):
            raise OAuthError(400, "invalid_grant", "Invalid JWT: malformed.") from None
        account = self.accounts.get(str(unverified.get("iss", "")))
        if account is None or header.get("kid") != account.key_id:
            raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.")
        if header.get("alg") != "RS256":
            raise OAuthError(400, "invalid_grant", "Invalid JWT: the algorithm must be RS256.")
        try:
            claims = jwt.decode(  # type: ignore[no-untyped-call]
                assertion,
                certs={account.key_id: account.public_pem},
                # google-auth signs for Google's own token URI whatever the key file says.
                audience=[token_uri, GOOGLE_TOKEN_URI],
            )
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:
            # Signature, audience, iat and exp are all checked by google-auth's decoder.
            raise OAuthError(400, "invalid_grant", f"Invalid JWT: {exc}") from None
        subject = str(claims.get("sub") or account.client_email).lower()
        if subject != account.client_email and subject not in users:
            raise OAuthError(400, "invalid_grant", "Invalid email or User ID")
        asked = set(str(claims.get("scope", "")).split())
        if not asked:
            raise OAuthError(400, "invalid_scope", "Empty or missing scope not allowed.")
        if not asked <= account.granted_scopes:
            raise OAuthError(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.",
            )
        token = "ya29.emulator-" + secrets.token_urlsafe(32)
        self.tokens[token] = Grant(
            account.client_email, subject, frozenset(asked), time.time() + TOKEN_LIFETIME
        )
        return {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}

    def grant(self, authorization: str | None) -> Grant | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        grant = self.tokens.get(authorization.removeprefix("Bearer "))
        if grant is None or grant.expires_at < time.time():
            return None
        return grant
