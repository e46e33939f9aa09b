"""Console sessions: a signed cookie naming a server-side session, CSRF, security headers.

The cookie (``archiver_console``: HttpOnly, SameSite=Lax, Secure when the request came over
TLS or ``ARCHIVER_CONSOLE_URL`` is ``https://``) is Flask's signed session, keyed by a secret derived from the KEK; it holds a random
session id and the CSRF token. Only the id's SHA-256 is in the catalog
(``console_sessions``), so logout, an idle timeout (``ARCHIVER_CONSOLE_IDLE_MINUTES``), the
absolute lifetime (``ARCHIVER_CONSOLE_LIFETIME_HOURS``) or a disabled user make a copied
cookie worthless. A session starts at stage ``password`` and only the second factor
promotes it to ``full``: before that it reaches the TOTP pages alone.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask, Response, request, session as cookie
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import Session

from archiver.catalog import ConsoleSession, User

COOKIE = "archiver_console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# No inline script or style anywhere: every asset comes from /console/static.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
csrf = CSRFProtect()


class _CookieInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, ``Secure`` whenever the request itself was secure."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def init_app(app: Flask, services: Any) -> None:
    """Cookie settings, CSRF (checked by :func:`check_csrf`, not on every route) and headers."""
    app.secret_key = services.kek.derive("console-session-cookie").hex()
    app.session_interface = _CookieInterface()
    app.config.update(SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      # behind a TLS-terminating proxy the request looks plain: the public URL tells
                      SESSION_COOKIE_SECURE=services.settings.console_url.startswith("https://"),
                      WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None,
                      # a strict referrer check would need the Referer that no-referrer withholds;
                      # the token, tied to the session, and SameSite=Lax carry the check
                      WTF_CSRF_SSL_STRICT=False)
    csrf.init_app(app)
    app.before_request(_console_csrf)
    app.after_request(_security_headers)


def _console_csrf() -> None:
    # A bearer token is no cookie: no other site can make a browser send it, so no CSRF check.
    if (request.endpoint or "").startswith("console.") and not request.headers.get("Authorization"):
        check_csrf()


def check_csrf() -> None:
    """Refuse (400) a state-changing request without the session's CSRF token."""
    if request.method not in SAFE_METHODS:
        csrf.protect()


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def start(db: Session, user: User, stage: str) -> None:
    """Open a session for ``user`` at ``stage`` and put its id in a fresh cookie (no fixation)."""
    sid, now = secrets.token_urlsafe(32), datetime.now(timezone.utc)
    end(db)
    cookie.clear()
    cookie["sid"] = sid
    db.add(ConsoleSession(id_hash=_digest(sid), user_id=user.id, stage=stage, created_at=now, last_seen_at=now))
    db.flush()


def current(db: Session, settings: Any) -> tuple[ConsoleSession, User] | None:
    """The live session the cookie names and its user, its activity refreshed; None when there
    is none, or it ended, timed out or its user is disabled (then it is ended for good)."""
    sid = cookie.get("sid")
    row = db.get(ConsoleSession, _digest(sid)) if isinstance(sid, str) else None
    if row is None or row.ended_at is not None:
        return None
    now, user = datetime.now(timezone.utc), db.get(User, row.user_id)
    idle = timedelta(minutes=settings.console_idle_minutes)
    lifetime = timedelta(hours=settings.console_lifetime_hours)
    if user is None or user.disabled_at is not None or now - row.last_seen_at > idle \
            or now - row.created_at > lifetime:
        row.ended_at = now
        return None
    row.last_seen_at = now
    return row, user


def end(db: Session) -> int | None:
    """End the cookie's session (logout) and return its user id, or None when it named none."""
    sid = cookie.get("sid")
    row = db.get(ConsoleSession, _digest(sid)) if isinstance(sid, str) else None
    if row is not None and row.ended_at is None:
        row.ended_at = datetime.now(timezone.utc)
        return row.user_id
    return None


def has_cookie() -> bool:
    """Whether the request carries a console session id (a session cookie may be behind it)."""
    return isinstance(cookie.get("sid"), str)
