"""The console's login, second factor, TOTP set-up, enrolment and logout pages.

Step 1 (password) opens a session at stage ``password``; step 2 (a TOTP code, or a
recovery code) or, for an account without an authenticator, its set-up promotes it to
``full`` under a new session id. Every outcome is audited: ``console_login`` (with how the
second factor was met), ``console_login_failed`` (which step, why; the email only when it
is an account's), ``mfa_enrolled``, ``recovery_code_used``, ``console_logout``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app, redirect, render_template, request, session as cookie, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from archiver.catalog import ConsoleSession, User
from archiver.console import mfa, sessions, users
from archiver.console.pages import bp
from archiver.errors import LoginFailed, UserError
from archiver.journal import append_audit

Page = str | Response | tuple[str, int]


def _services() -> Any:
    return current_app.extensions["archiver"]


def _next() -> str:
    """Where to go after login: a local console path only (no open redirect)."""
    target = request.values.get("next") or ""
    parts = urlsplit(target)
    return target if target.startswith("/console/") and not parts.netloc and not parts.scheme \
        else url_for("console.home")


@bp.get("/login")
def login() -> str:
    """The login form (email and password)."""
    return render_template("console/login.html", error=None, next=request.args.get("next", ""))


@bp.post("/login")
def login_post() -> Page:
    """Check the password; on to the second factor (or its set-up)."""
    email, password = request.form.get("email", ""), request.form.get("password", "")
    with _services().sessions.begin() as db:
        try:
            user = users.check_password_login(db, email, password)
        except LoginFailed as exc:
            known = db.scalar(select(User.id).where(User.email == email.strip().lower())) is not None
            append_audit(db, "console_login_failed", None, step="password", reason=str(exc),
                         user=email.strip().lower() if known else None)
            failure: LoginFailed | None = exc
        else:
            failure = None
            sessions.start(db, user, "password")
            has_mfa = user.mfa_enabled
    if failure is not None:
        return render_template("console/login.html", error=str(failure), next=_next()), 401
    step = "console.login_mfa" if has_mfa else "console.mfa_setup"
    return redirect(url_for(step, next=_next()))


def _pending(db: Any) -> tuple[ConsoleSession, User] | None:
    """The password-stage session of the cookie, or None."""
    found = sessions.current(db, _services().settings)
    return found if found is not None and found[0].stage == "password" else None


@bp.get("/login/mfa")
def login_mfa() -> Page:
    """The second-factor form."""
    with _services().sessions.begin() as db:
        if _pending(db) is None:
            return redirect(url_for("console.login"))
    return render_template("console/mfa.html", error=None, next=_next())


@bp.post("/login/mfa")
def login_mfa_post() -> Page:
    """Check a TOTP or recovery code; a full session on success."""
    services = _services()
    with services.sessions.begin() as db:
        found = _pending(db)
        if found is None or not found[1].mfa_enabled:
            return redirect(url_for("console.login"))
        user = found[1]
        try:
            how = users.check_second_factor(db, services.kek, user, request.form.get("code", ""))
        except LoginFailed as exc:
            append_audit(db, "console_login_failed", None, step="second-factor", reason=str(exc), user=user.email)
            failure: LoginFailed | None = exc
        else:
            failure = None
            sessions.start(db, user, "full")
            append_audit(db, "console_login", f"user:{user.email} ({user.role})", factor=how)
            if how == "recovery":
                append_audit(db, "recovery_code_used", f"user:{user.email} ({user.role})",
                             left=len(user.recovery_codes))
    if failure is not None:
        return render_template("console/mfa.html", error=str(failure), next=_next()), 401
    return redirect(_next())


@bp.get("/mfa/setup")
def mfa_setup() -> Page:
    """A new authenticator secret as a QR code (and as text), to confirm with a first code."""
    services = _services()
    with services.sessions.begin() as db:
        found = _pending(db)
        if found is None or found[1].mfa_enabled:
            return redirect(url_for("console.login"))
        secret = users.start_totp(services.kek, found[1])
        uri = mfa.provisioning_uri(secret, found[1].email)
    return render_template("console/mfa_setup.html", qr=mfa.qr_svg(uri), secret=secret, error=None,
                           next=_next())


@bp.post("/mfa/setup")
def mfa_setup_post() -> Page:
    """Confirm the authenticator with a code; show the recovery codes once; a full session."""
    services = _services()
    with services.sessions.begin() as db:
        found = _pending(db)
        if found is None or found[1].mfa_enabled:
            return redirect(url_for("console.login"))
        user = found[1]
        try:
            codes = users.confirm_totp(services.kek, user, request.form.get("code", ""))
        except LoginFailed as exc:
            failure: str | None
            append_audit(db, "console_login_failed", None, step="mfa-setup", reason=str(exc), user=user.email)
            secret = users.totp_secret(services.kek, user)
            qr, failure = mfa.qr_svg(mfa.provisioning_uri(secret, user.email)), str(exc)
        else:
            failure, qr, secret = None, "", ""
            sessions.start(db, user, "full")
            actor = f"user:{user.email} ({user.role})"
            append_audit(db, "mfa_enrolled", actor, method="totp", recovery_codes=len(codes))
            append_audit(db, "console_login", actor, factor="totp")
    if failure is not None:
        return render_template("console/mfa_setup.html", qr=qr, secret=secret, error=failure, next=_next()), 401
    return render_template("console/recovery_codes.html", codes=codes, next=_next())


@bp.get("/enrol/<token>")
def enrol(token: str) -> Page:
    """Choose a password with a one-time enrolment link."""
    with _services().sessions() as db:
        try:
            user = users.enrolment_user(db, token)
        except UserError as exc:
            return render_template("console/error.html", error=exc), 404
        return render_template("console/enrol.html", email=user.email, token=token, error=None)


@bp.post("/enrol/<token>")
def enrol_post(token: str) -> Page:
    """Set the password (NIST rules), spend the link, and go on to the authenticator set-up."""
    password, again = request.form.get("password", ""), request.form.get("confirm", "")
    with _services().sessions.begin() as db:
        try:
            user = users.enrolment_user(db, token)
            if password != again:
                raise UserError("the two passwords differ")
            users.enrol(db, token, password)
        except UserError as exc:
            failure: UserError | None = exc
        else:
            failure = None
            sessions.start(db, user, "password")
            append_audit(db, "user_enrolled", f"user:{user.email} ({user.role})")
    if failure is not None:
        return render_template("console/enrol.html", email="", token=token, error=str(failure)), 400
    return redirect(url_for("console.mfa_setup"))


@bp.post("/logout")
def logout() -> Response:
    """End the session (its cookie is worthless from now on) and forget the cookie."""
    with _services().sessions.begin() as db:
        user_id = sessions.end(db)
        user = db.get(User, user_id) if user_id is not None else None
        if user is not None:
            append_audit(db, "console_logout", f"user:{user.email} ({user.role})")
    cookie.clear()
    return redirect(url_for("console.login"))
