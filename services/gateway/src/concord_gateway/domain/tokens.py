"""Bearer tokens: HS256 JWTs carrying who the caller is (`sub`, `org`, `role`).

Checked: the algorithm (HS256 only, read from the header before anything else, so `alg: none`
and algorithm confusion - an RS256 token, or one whose "public key" is used as an HMAC secret -
fail), the signature, `iss`, `aud` and `exp` (all required) and `nbf` when present.

Keys rotate two ways. A token whose header names a `kid` is checked against that key of the
keyset only, and an unknown `kid` fails: add the new kid, let the issuer sign with it, remove
the old kid when its last tokens have expired. A token without `kid` is checked against each
unnamed key in turn (the older scheme, and the development key `make up` mints with).
Callers learn only missing / expired / invalid; what exactly was wrong is logged (never the
token itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jwt

from concord_gateway.domain.errors import TokenExpired, TokenInvalid, TokenMissing
from concord_gateway.domain.principal import Principal, principal_from_claims

__all__ = ["ALGORITHM", "TokenVerifier", "bearer_token"]

ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]

# Fixed words per failure: PyJWT's own messages are not promised to stay free of claim values.
_WHY: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.InvalidSignatureError, "its signature does not verify"),
    (jwt.InvalidAudienceError, "it is for another audience"),
    (jwt.InvalidIssuerError, "it is from another issuer"),
    (jwt.ImmatureSignatureError, "it is not valid yet"),
    (jwt.InvalidAlgorithmError, f"it is not signed with {ALGORITHM}"),
    (jwt.DecodeError, "it is malformed"),
)


def bearer_token(authorization: str | None) -> str:
    """The token in an `authorization: Bearer <token>` metadata value."""
    if not authorization or not authorization.strip():
        raise TokenMissing("a bearer token is required (authorization: Bearer <token>)")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("the authorization metadata is not 'Bearer <token>'")
    return token.strip()


class TokenVerifier:
    def __init__(
        self,
        keys: Sequence[str],
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        keyset: Mapping[str, str] | None = None,
    ) -> None:
        if not keys and not keyset:
            raise ValueError("at least one verification key is needed")
        self._keys = list(keys)
        self._keyset = dict(keyset or {})
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def _candidates(self, token: str) -> list[str]:
        """The keys that may have signed `token`, chosen by its header."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:  # not a JWS, or a header PyJWT refuses (a non-string kid)
            raise TokenInvalid("it is malformed") from None
        if header.get("alg") != ALGORITHM:
            # Refused before any key is touched (`none`, RS256 with our secret as "public key").
            raise TokenInvalid(f"it is not signed with {ALGORITHM}")
        if "kid" not in header:
            if not self._keys:
                raise TokenInvalid("it names no key (kid) and every key has one")
            return self._keys
        kid = header["kid"]
        key = self._keyset.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenInvalid("its key (kid) is not known")
        return [key]

    def verify(self, token: str) -> Principal:
        last: jwt.InvalidTokenError | None = None
        for key in self._candidates(token):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={"require": _REQUIRED_CLAIMS},
                )
            except jwt.InvalidSignatureError as exc:
                last = exc  # perhaps signed with another of the keys
                continue
            except jwt.ExpiredSignatureError:
                raise TokenExpired("the bearer token has expired") from None
            except jwt.MissingRequiredClaimError as exc:
                raise TokenInvalid(f"it has no {exc.claim} claim") from None
            except jwt.InvalidTokenError as exc:
                raise _invalid(exc) from None
            return principal_from_claims(claims)
        assert last is not None
        raise _invalid(last)


def _invalid(exc: jwt.InvalidTokenError) -> TokenInvalid:
    return TokenInvalid(
        next((words for kind, words in _WHY if isinstance(exc, kind)), "it does not verify")
    )
