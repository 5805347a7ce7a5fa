"""Authentication for the sync server: bearer tokens from configuration, and JWTs.

Plugins can authenticate first through ``syncline_authenticate``; the built-in schemes run when
no plugin answers. The principal (who owns the data) comes from the credentials only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from syncline.core.errors import AuthenticationError

if TYPE_CHECKING:
    from syncline.server.app import ServerConfig

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


def authenticate(headers: dict[str, str], config: ServerConfig, plugin_answer: Any) -> Principal:
    """The request's principal, or :class:`AuthenticationError` saying why not."""
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


def _verify_jwt(token: str, config: ServerConfig) -> str:
    import jwt

    algorithms = [a for a in config.jwt_algorithms if a in ALLOWED_ALGORITHMS]
    assert config.jwt_key is not None
    try:
        claims = jwt.decode(
            token, config.jwt_key, algorithms=algorithms, audience=config.jwt_audience,
            issuer=config.jwt_issuer, options={"require": ["exp", "sub"]}, leeway=30)
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"invalid token: {exc}") from exc
    return str(claims["sub"])
