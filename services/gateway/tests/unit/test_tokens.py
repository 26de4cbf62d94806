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


def token(key: str = KEY, algorithm: str = "HS256", kid: str | None = None, **changes: Any) -> str:
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
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None},
        key,
        algorithm=algorithm,
        headers=headers,
    )


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
def test_a_bad_token_is_token_invalid_saying_why_only_to_the_log(raw: str, why: str) -> None:
    error = refusal(TokenInvalid, raw)
    assert error.reason == "TOKEN_INVALID"
    assert isinstance(error, TokenInvalid)
    assert why in error.why
    # The caller gets one sentence whatever failed.
    assert error.message == "the bearer token is invalid"


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
    assert isinstance(error, TokenInvalid)
    assert claim in error.why


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


def _forged(header: dict[str, Any], key: str = KEY) -> str:
    """A token whose header we write by hand, HMAC-SHA256-signed with `key` whatever it says."""
    import base64
    import hashlib
    import hmac
    import json

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = jwt.decode(token(key=key), key, algorithms=["HS256"], audience="concord-gateway")
    signing_input = f"{part(header)}.{part(claims)}"
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "HS512", "none", "hs256"])
def test_algorithm_confusion_is_refused_before_any_key_is_tried(alg: str) -> None:
    # Signed correctly with our key; only the header lies about the algorithm.
    error = refusal(TokenInvalid, _forged({"alg": alg, "typ": "JWT"}))
    assert isinstance(error, TokenInvalid)
    assert "HS256" in error.why
    assert verifier().verify(_forged({"alg": "HS256", "typ": "JWT"})).user_id == "ann"


def keyset_verifier(*unnamed: str) -> TokenVerifier:
    return TokenVerifier(
        unnamed,
        keyset={"2026-11": KEY, "2026-10": OLD_KEY},
        issuer="concord",
        audience="concord-gateway",
    )


def keyed(key: str, kid: str) -> str:
    return token(key=key, kid=kid)


def test_a_kid_picks_its_key_and_old_kids_verify_until_removed() -> None:
    v = keyset_verifier()
    assert v.verify(keyed(KEY, "2026-11")).user_id == "ann"
    assert v.verify(keyed(OLD_KEY, "2026-10")).user_id == "ann"
    # The old kid removed: its tokens stop verifying.
    removed = TokenVerifier(
        [], keyset={"2026-11": KEY}, issuer="concord", audience="concord-gateway"
    )
    assert "not known" in refusal_why(keyed(OLD_KEY, "2026-10"), removed)


def refusal_why(raw: str, v: TokenVerifier) -> str:
    error = refusal(TokenInvalid, raw, v)
    assert isinstance(error, TokenInvalid)
    return error.why


def test_a_kid_is_checked_against_its_own_key_only() -> None:
    v = keyset_verifier(KEY)
    # Signed with a key we hold, but not the one its kid names.
    assert "signature" in refusal_why(keyed(OLD_KEY, "2026-11"), v)
    assert "not known" in refusal_why(keyed(KEY, "2027-01"), v)
    assert "malformed" in refusal_why(_forged({"alg": "HS256", "kid": ["2026-11"]}), v)


def test_without_unnamed_keys_every_token_needs_a_kid() -> None:
    assert "kid" in refusal_why(token(key=KEY), keyset_verifier())
    # With the unnamed key too, a kid-less token verifies against it (the dev tokens).
    assert keyset_verifier(KEY).verify(token(key=KEY)).user_id == "ann"
