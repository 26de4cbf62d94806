"""Bearer tokens -> principal: what verifies, and what each refusal says."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from concord_gateway.domain.errors import TokenExpired, TokenInvalid, TokenMissing
from concord_gateway.domain.principal import Principal, Role
from concord_gateway.domain.tokens import TokenVerifier, bearer_token
from concord_rpc import DomainError

pytestmark = pytest.mark.unit

KEY = "k" * 40
OLD_KEY = "o" * 40


def token(key: str = KEY, algorithm: str = "HS256", **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "concord",
        "aud": "concord-gateway",
        "sub": "ann",
        "org": "acme",
        "role": "user",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=algorithm)


def verifier(*keys: str) -> TokenVerifier:
    return TokenVerifier(keys or (KEY,), issuer="concord", audience="concord-gateway", leeway=5)


def refusal(kind: type[DomainError], raw: str, v: TokenVerifier | None = None) -> DomainError:
    with pytest.raises(kind) as raised:
        (v or verifier()).verify(raw)
    assert raw not in str(raised.value)
    assert raw not in repr(raised.value.metadata)
    return raised.value


def test_a_valid_token_gives_the_principal() -> None:
    assert verifier().verify(token(role="admin")) == Principal("ann", "acme", Role.ADMIN)
    assert verifier().verify(token()).org_name == "orgs/acme"


def test_an_expired_token_is_token_expired() -> None:
    error = refusal(TokenExpired, token(exp=int(time.time()) - 60))
    assert error.reason == "TOKEN_EXPIRED"


def test_expiry_within_the_leeway_still_verifies() -> None:
    assert verifier().verify(token(exp=int(time.time()) - 2)).user_id == "ann"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (token(key="x" * 40), "signature"),
        (token(aud="someone-else"), "audience"),
        (token(iss="evil"), "issuer"),
        (token(nbf=int(time.time()) + 600), "not valid yet"),
        (token(key="x" * 64, algorithm="HS512"), "HS256"),
        ("not-a-token", "malformed"),
    ],
)
def test_a_bad_token_is_token_invalid_saying_why(raw: str, why: str) -> None:
    error = refusal(TokenInvalid, raw)
    assert error.reason == "TOKEN_INVALID"
    assert why in error.message


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode(
        {
            "iss": "concord",
            "aud": "concord-gateway",
            "sub": "a",
            "org": "o",
            "role": "admin",
            "exp": int(time.time()) + 60,
        },
        "",
        algorithm="none",
    )
    refusal(TokenInvalid, unsigned)


@pytest.mark.parametrize("claim", ["exp", "sub", "iss", "aud", "org", "role"])
def test_every_required_claim_is_required(claim: str) -> None:
    error = refusal(TokenInvalid, token(**{claim: None}))  # type: ignore[arg-type]
    assert claim in error.message


@pytest.mark.parametrize(
    "changes", [{"role": "root"}, {"role": ["admin"]}, {"org": "orgs/acme"}, {"sub": " "}]
)
def test_claims_outside_the_contract_are_refused(changes: dict[str, Any]) -> None:
    refusal(TokenInvalid, token(**changes))


def test_any_of_the_rotated_keys_verifies() -> None:
    rotated = verifier(KEY, OLD_KEY)
    assert rotated.verify(token(key=OLD_KEY)).user_id == "ann"
    assert rotated.verify(token(key=KEY)).user_id == "ann"
    refusal(TokenInvalid, token(key=OLD_KEY))  # a verifier without the old key


def test_bearer_token_reads_the_authorization_value() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer  abc.def ") == "abc.def"
    with pytest.raises(TokenMissing):
        bearer_token(None)
    with pytest.raises(TokenMissing):
        bearer_token("  ")
    for bad in ("Basic dXNlcg==", "Bearer", "abc.def"):
        with pytest.raises(TokenInvalid) as raised:
            bearer_token(bad)
        assert "dXNlcg" not in raised.value.message
