"""Authentication for the sync server: bearer tokens from configuration, and JWTs.

Plugins can authenticate first through ``syncline_authenticate``; the built-in schemes run when
no plugin answers. The principal (who owns the data) comes from the credentials only.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import attrs

from syncline.core.model.errors import AuthenticationError


class AuthConfig(Protocol):
    """The settings authentication reads (a ``syncline.server.app.ServerConfig``)."""

    @property
    def tokens(self) -> dict[str, str]: ...

    @property
    def jwt_key(self) -> str | None: ...

    @property
    def jwt_algorithms(self) -> list[str]: ...

    @property
    def jwt_audience(self) -> str | None: ...

    @property
    def jwt_issuer(self) -> str | None: ...

    @property
    def jwt_leeway(self) -> float: ...

    @property
    def allow_anonymous(self) -> bool: ...

log = logging.getLogger("syncline.server.auth")

#: the longest principal id the server accepts (it is part of stored keys)
MAX_PRINCIPAL_CHARS = 256

#: JWT algorithms the server accepts; "none" is never among them.
ALLOWED_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
                      "EdDSA")


@attrs.frozen
class Principal:
    id: str


def bearer_token(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if not value:
        return None
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def authenticate(headers: dict[str, str], config: AuthConfig, plugin_answer: Any) -> Principal:
    """The request's principal, or :class:`AuthenticationError` saying why not."""
    try:
        return checked(_authenticate(headers, config, plugin_answer))
    except AuthenticationError as exc:
        log.info("credentials refused: %s", exc)
        raise


def checked(principal: Principal) -> Principal:
    """``principal`` if its id can be stored everywhere; AuthenticationError otherwise."""
    pid = principal.id
    problem = None
    if not isinstance(pid, str) or not pid:
        problem = "is empty or not a string"
    elif len(pid) > MAX_PRINCIPAL_CHARS:
        problem = f"is longer than {MAX_PRINCIPAL_CHARS} characters"
    elif any(ord(c) < 32 or ord(c) == 127 for c in pid):
        problem = "contains control characters"
    else:
        try:
            pid.encode("utf-8")
        except UnicodeEncodeError:
            problem = "contains a lone surrogate (not valid Unicode)"
    if problem is not None:
        raise AuthenticationError(f"the credentials name a principal that {problem}; a "
                                  "principal (a JWT's 'sub') must be 1 to "
                                  f"{MAX_PRINCIPAL_CHARS} printable characters")
    return principal


def _authenticate(headers: dict[str, str], config: AuthConfig,
                  plugin_answer: Any) -> Principal:
    if plugin_answer is not None:
        return plugin_answer if isinstance(plugin_answer, Principal) else Principal(
            str(getattr(plugin_answer, "id", plugin_answer)))
    token = bearer_token(headers)
    if token is None:
        if config.allow_anonymous:
            return Principal("anonymous")
        raise AuthenticationError("missing credentials: send 'Authorization: Bearer <token>'")
    if token in config.tokens:
        return Principal(config.tokens[token])
    if config.jwt_key is not None and token.count(".") == 2:
        return Principal(_verify_jwt(token, config))
    raise AuthenticationError("unknown or invalid token")


def _verify_jwt(token: str, config: AuthConfig) -> str:
    import jwt

    algorithms = [a for a in config.jwt_algorithms if a in ALLOWED_ALGORITHMS]
    assert config.jwt_key is not None
    leeway = config.jwt_leeway
    if type(leeway) not in (int, float) or not 0 <= leeway <= 3600:
        raise AuthenticationError("the server's jwt_leeway must be 0 to 3600 seconds")
    try:
        claims = jwt.decode(
            token, config.jwt_key, algorithms=algorithms, audience=config.jwt_audience,
            issuer=config.jwt_issuer, options={"require": ["exp", "sub"]}, leeway=leeway)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
        # anything a crafted token makes the decoder raise is the token's fault
        raise AuthenticationError(f"invalid token: {exc}") from exc
    # PyJWT takes "exp": "1700000000" as a number; RFC 7519 says NumericDate, a JSON number
    for claim in ("exp", "nbf", "iat"):
        value: Any = claims.get(claim)
        if claim in claims and (type(value) not in (int, float) or not math.isfinite(value)):
            raise AuthenticationError(f"invalid token: its {claim!r} must be a number of "
                                      f"seconds (a JSON number), not {type(value).__name__}")
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub.strip():
        raise AuthenticationError("invalid token: its 'sub' must be a non-blank string")
    return sub
