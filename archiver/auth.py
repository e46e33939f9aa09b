"""API tokens and roles.

Tokens are random, shown once, and stored only as SHA-256. Every route except the webhook
and ``/healthz`` declares the roles it allows with :func:`require`; a route without it is
refused by ``check_route_table`` at app start (and by a test walking the route table).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver.catalog import Token
from archiver.console import sessions as console_sessions, users as console_users
from archiver.console.users import Principal
from archiver.errors import AuthError, Forbidden, TokenNameError
from archiver.rejections import note
from archiver.roles import HOLDERS, OVERSIGHT, READERS, REVIEWERS, ROLES, STATS_READERS, WRITERS

__all__ = ["HOLDERS", "OVERSIGHT", "READERS", "REVIEWERS", "ROLES", "STATS_READERS", "WRITERS", "authenticate", "bearer", "check_route_table",
           "create_token", "list_tokens", "lookup", "require", "revoke_token"]

PUBLIC_ENDPOINTS = {"intake.webhook_verify", "intake.webhook_receive", "api.healthz", "static",
                    # the console's way in: each checks its own step (archiver.console.login)
                    "console.login", "console.login_post", "console.login_mfa", "console.login_mfa_post",
                    "console.mfa_setup", "console.mfa_setup_post", "console.enrol", "console.enrol_post",
                    "console.logout", "console.static"}

F = TypeVar("F", bound=Callable[..., Any])


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, role: str, name: str) -> str:
    """Create a token for ``role``; return the secret (shown once).

    Names are unique for good (a revoked token's name too): the audit trail names the
    token, so one name must mean one token. Raises ValueError on a bad role,
    TokenNameError on a name already used.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name.strip():
        raise TokenNameError("a token needs a name")
    if session.scalar(select(Token.id).where(Token.name == name).limit(1)) is not None:
        raise TokenNameError(f"a token named {name!r} already exists",
                             hint="pick another name (see `archiver token list`)")
    secret = "wa_" + secrets.token_urlsafe(32)
    session.add(Token(name=name, role=role, token_hash=_digest(secret)))
    session.flush()
    return secret


def revoke_token(session: Session, name: str) -> int:
    """Revoke every live token called ``name``; return how many.

    Raises TokenNameError when no live token has that name (unknown or already revoked).
    """
    rows = session.scalars(select(Token).where(Token.name == name, Token.revoked_at.is_(None))).all()
    if not rows:
        revoked = session.scalar(select(Token.id).where(Token.name == name).limit(1)) is not None
        raise TokenNameError(f"token {name!r} is {'already revoked' if revoked else 'unknown'}",
                             hint="see `archiver token list`")
    for row in rows:
        row.revoked_at = datetime.now(timezone.utc)
    return len(rows)


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """Every token, oldest first: name, role, created, revoked (never the secret nor its hash)."""
    rows = session.scalars(select(Token).order_by(Token.id)).all()
    return [{"name": t.name, "role": t.role, "created": t.created_at.isoformat() if t.created_at else None,
             "revoked": t.revoked_at.isoformat() if t.revoked_at else None} for t in rows]


def lookup(session: Session, secret: str) -> Token | None:
    """The live token for ``secret``, or None."""
    row = session.scalar(select(Token).where(Token.token_hash == _digest(secret)))
    return row if row is not None and row.revoked_at is None else None


def require(*roles: str) -> Callable[[F], F]:
    """Decorator: the request must carry a live bearer token of one of ``roles``.

    Raises AuthError (401) without a valid token, Forbidden (403) for another role;
    ValueError at import for a role not in :data:`ROLES`.
    """
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"require() takes roles from {', '.join(ROLES)}, not {sorted(unknown)}")

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            g.actor = authenticate(roles)
            return view(*args, **kwargs)

        inner.allowed_roles = roles  # type: ignore[attr-defined]
        return inner  # type: ignore[return-value]
    return wrap


def authenticate(roles: tuple[str, ...]) -> str:
    """The one role check of tokens and console sessions; return ``name (role)`` for the audit trail.

    A request with an ``Authorization`` header is a machine's: its bearer token decides. One
    without it may carry a console session cookie (``archiver.console.sessions``), which counts
    only once both login steps are done, and whose state changes need the CSRF token too.
    The Principal lands in ``g.principal`` (a legal console user's matters scope its reads).
    Raises AuthError (401) without either, Forbidden (403) for a role not in ``roles``.
    """
    header = request.headers.get("Authorization", "")
    services = current_app.extensions["archiver"]
    if not header and console_sessions.has_cookie():
        who = _session_principal(services)
        if who is not None:
            console_sessions.check_csrf()
        failure = "no session" if who is None else f"role {who.role}"
    else:
        with services.sessions() as session:
            token = lookup(session, secret) if (secret := bearer(header)) else None
        who = Principal(token.name, token.role) if token is not None else None
        failure = "no token" if not header else ("bad token" if token is None else f"role {token.role}")
    if who is None or who.role not in roles:
        # Failed access is evidence too (decision 10), counted per window (rejections); never the token.
        note(failure, who.name if who else None)
    if who is None:
        raise AuthError("missing, invalid or revoked bearer token, or no console session")
    if who.role not in roles:
        raise Forbidden(f"role {who.role} may not use this endpoint")
    g.principal = who
    return who.actor


def _session_principal(services: Any) -> Principal | None:
    """The Principal of the request's console session once fully logged in, else None."""
    with services.sessions.begin() as session:
        found = console_sessions.current(session, services.settings)
        if found is None or found[0].stage != "full":
            return None
        return console_users.principal(found[1])


def bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case, RFC 9110)."""
    scheme, _, secret = header.strip().partition(" ")
    return (secret.strip() or None) if scheme.lower() == "bearer" else None


def check_route_table(app: Any) -> None:
    """Refuse to start if any non-public route lacks :func:`require`."""
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint not in PUBLIC_ENDPOINTS and not getattr(view, "allowed_roles", None):
            raise RuntimeError(f"route {rule.rule} ({rule.endpoint}) has no role check")
