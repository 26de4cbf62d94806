"""Bearer tokens: HS256 JWTs carrying who the caller is (`sub`, `org`, `role`).

Checked: the signature (against every configured key, so keys can rotate), the algorithm (HS256
only, so `alg: none` and algorithm confusion fail), `iss`, `aud` and `exp`, all required.
Error messages name what was wrong and never contain the token.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        raise TokenInvalid("the authorization metadata must be 'Bearer <token>'")
    return token.strip()


class TokenVerifier:
    def __init__(
        self, keys: Sequence[str], *, issuer: str, audience: str, leeway: float = 30.0
    ) -> None:
        if not keys:
            raise ValueError("at least one verification key is needed")
        self._keys = list(keys)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def verify(self, token: str) -> Principal:
        last: jwt.InvalidTokenError | None = None
        for key in self._keys:
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
                raise TokenInvalid(
                    f"the bearer token has no {exc.claim} claim", metadata={"claim": exc.claim}
                ) from None
            except jwt.InvalidTokenError as exc:
                raise _invalid(exc) from None
            return principal_from_claims(claims)
        assert last is not None
        raise _invalid(last)


def _invalid(exc: jwt.InvalidTokenError) -> TokenInvalid:
    why = next((words for kind, words in _WHY if isinstance(exc, kind)), "it does not verify")
    return TokenInvalid(f"the bearer token is invalid: {why}")
