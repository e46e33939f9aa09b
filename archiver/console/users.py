"""Console users: accounts, enrolment, the two login steps and lockout with back-off.

A user is made by ``archiver user create``: with a password file the password is set at
once; without, a one-time enrolment link (72 h) lets the person choose it. Either way the
first login sets up TOTP before anything else is reachable. After :data:`LOCK_AFTER`
failures in a row (password or second factor), the account is locked for 30 s, doubling with
each further failure up to an hour; a success resets the count.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver.catalog import Matter, User
from archiver.console import mfa, passwords
from archiver.errors import LoginFailed, UserError
from archiver.keys import Kek
from archiver.roles import CONSOLE_ROLES

LOCK_AFTER = 5
LOCK_BASE = timedelta(seconds=30)
LOCK_MAX = timedelta(hours=1)
ENROL_FOR = timedelta(hours=72)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as, from a token or a console session, for the one role check.

    ``matters`` scopes a legal console user; None means unscoped (tokens carry no matters).
    """

    name: str
    role: str
    matters: tuple[str, ...] | None = None
    user_id: int | None = None

    @property
    def actor(self) -> str:
        """``name (role)``: the audit trail's actor."""
        return f"{self.name} ({self.role})"


def principal(user: User) -> Principal:
    """The Principal of a console user (legal users scoped to their matters)."""
    matters = tuple(user.matters or ()) if user.role == "legal" else None
    return Principal(f"user:{user.email}", user.role, matters, user.id)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, email: str, role: str, matters: list[str], password: str | None) -> str | None:
    """Create a user; return the enrolment token when no password is given (else None).

    Raises UserError for a bad or taken email, a role that is not a console role, matters on
    a role other than legal (or unknown ones), a password breaking the NIST rules.
    """
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise UserError(f"{email!r} is not an email address")
    if role not in CONSOLE_ROLES:
        raise UserError(f"a console user's role is one of {', '.join(CONSOLE_ROLES)}")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise UserError(f"a user {email} exists already")
    user = User(email=email, role=role, matters=_matter_ids(session, role, matters), recovery_codes=[],
                failed_logins=0, mfa_enabled=False)
    token = None
    if password is None:
        token = secrets.token_urlsafe(32)
        user.enrol_token_hash, user.enrol_expires_at = _digest(token), _now() + ENROL_FOR
    else:
        passwords.check_password(password, email)
        user.password_hash = passwords.hash_password(password)
    session.add(user)
    session.flush()
    return token


def _matter_ids(session: Session, role: str, matters: list[str]) -> list[str]:
    """Matter ids for ``matters`` (ids or names). Raises UserError."""
    if matters and role != "legal":
        raise UserError("only a legal user is assigned matters")
    if role == "legal" and not matters:
        raise UserError("a legal user needs at least one --matter")
    ids = []
    for m in matters:
        found = session.scalar(select(Matter.id).where((Matter.id == m) | (Matter.name == m)))
        if found is None:
            raise UserError(f"no matter {m!r}", hint="create it first (POST /api/v1/matters)")
        ids.append(found)
    return ids


def get_user(session: Session, email: str) -> User:
    """The user with ``email``. Raises UserError when there is none."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise UserError(f"no user {email}")
    return user


def list_users(session: Session) -> list[dict[str, Any]]:
    """Every user, oldest first (never a hash nor a secret)."""
    return [{"email": u.email, "role": u.role, "matters": list(u.matters or []), "mfa": u.mfa_enabled,
             "enrolled": u.password_hash is not None, "disabled": u.disabled_at is not None,
             "created": u.created_at.isoformat() if u.created_at else None}
            for u in session.scalars(select(User).order_by(User.id))]


def disable_user(session: Session, email: str) -> User:
    """Disable a user (its sessions end at their next request). Raises UserError."""
    user = get_user(session, email)
    user.disabled_at = user.disabled_at or _now()
    return user


def reset_mfa(session: Session, email: str) -> User:
    """Drop a user's TOTP secret and recovery codes: the next login sets them up anew. Raises UserError."""
    user = get_user(session, email)
    user.totp_secret, user.totp_last_step, user.mfa_enabled, user.recovery_codes = None, None, False, []
    return user


def enrolment_user(session: Session, token: str) -> User:
    """The user a live enrolment token belongs to. Raises UserError (unknown, used or expired)."""
    user = session.scalar(select(User).where(User.enrol_token_hash == _digest(token)))
    if user is None or user.disabled_at is not None or (user.enrol_expires_at or _now()) <= _now():
        raise UserError("this enrolment link is unknown, used or expired", hint="ask an admin for a new one")
    return user


def enrol(session: Session, token: str, password: str) -> User:
    """Set the password of the enrolment token's user and spend the token. Raises UserError."""
    user = enrolment_user(session, token)
    passwords.check_password(password, user.email)
    user.password_hash = passwords.hash_password(password)
    user.enrol_token_hash = user.enrol_expires_at = None
    return user


def check_password_login(session: Session, email: str, password: str) -> User:
    """Step 1 of a login. Raises LoginFailed (one message for any unknown, disabled or wrong)."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    _refuse_locked(user)
    if not passwords.verify_password(user.password_hash if user else None, password) or user is None \
            or user.disabled_at is not None:
        _failed(user)
        raise LoginFailed("wrong email or password")
    return user


def check_second_factor(session: Session, kek: Kek, user: User, code: str) -> str:
    """Step 2: a TOTP code (replays refused) or a recovery code; return ``totp`` or ``recovery``.

    Raises LoginFailed (the failure counts toward the lockout).
    """
    _refuse_locked(user)
    try:
        if "-" in code.strip():
            user.recovery_codes = mfa.use_recovery_code(list(user.recovery_codes or []), code)
            how = "recovery"
        else:
            user.totp_last_step = mfa.accept_totp(totp_secret(kek, user), code, user.totp_last_step)
            how = "totp"
    except LoginFailed:
        _failed(user)
        raise
    user.failed_logins, user.locked_until = 0, None
    return how


def start_totp(kek: Kek, user: User) -> str:
    """A new TOTP secret for ``user`` (wrapped by the KEK), not yet in force; returns it."""
    secret = mfa.new_secret()
    user.totp_secret, user.totp_last_step, user.mfa_enabled = kek.wrap(secret.encode(), _key_id(user)), None, False
    return secret


def confirm_totp(kek: Kek, user: User, code: str) -> list[str]:
    """Turn on TOTP with a first valid code; return the recovery codes (shown once). Raises LoginFailed."""
    user.totp_last_step = mfa.accept_totp(totp_secret(kek, user), code, None)
    codes, digests = mfa.new_recovery_codes()
    user.mfa_enabled, user.recovery_codes = True, digests
    return codes


def totp_secret(kek: Kek, user: User) -> str:
    """The user's TOTP secret in clear. Raises LoginFailed when none was set up."""
    if user.totp_secret is None:
        raise LoginFailed("no authenticator is set up for this account")
    return kek.unwrap(user.totp_secret, _key_id(user)).decode()


def _key_id(user: User) -> str:
    return f"totp:{user.id}"


def _refuse_locked(user: User | None) -> None:
    if user is not None and user.locked_until is not None and user.locked_until > _now():
        raise LoginFailed("too many failed attempts; try again later")


def _failed(user: User | None) -> None:
    """Count a failure; lock for 30 s x 2^(n - LOCK_AFTER), at most LOCK_MAX, once n reaches LOCK_AFTER."""
    if user is None:
        return
    user.failed_logins = (user.failed_logins or 0) + 1
    over = user.failed_logins - LOCK_AFTER
    if over >= 0:
        user.locked_until = _now() + min(LOCK_BASE * (2 ** min(over, 16)), LOCK_MAX)
