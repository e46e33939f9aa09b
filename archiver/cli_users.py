"""``archiver user create|list|disable|reset-mfa``: console accounts (issue 13).

Attached to :data:`archiver.cli.main` when that module is imported. Each change is audited
(``user_created``, ``user_disabled``, ``mfa_reset``), naming the user, never a secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from archiver.cli import _actor, _services, handled, main, needs_archive
from archiver.roles import CONSOLE_ROLES
from archiver.terminal import plural, say, say_json


@main.group()
def user() -> None:
    """Console users: people who log in to the web console with a password and TOTP."""


@user.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(CONSOLE_ROLES))
@click.option("--matter", "matters", multiple=True, help="A legal user's matter (id or name); repeatable.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Set the password from this file; without it a one-time enrolment link is printed.")
@handled
@needs_archive
def user_create(email: str, role: str, matters: tuple[str, ...], password_file: Path | None) -> None:
    """Create a console user; print the enrolment link (valid 72 h) when no password file is given."""
    from archiver.console import users
    from archiver.journal import append_audit

    password = password_file.read_text(encoding="utf-8").rstrip("\r\n") if password_file else None
    services = _services()
    with services.sessions.begin() as session:
        token = users.create_user(session, email, role, list(matters), password)
        append_audit(session, "user_created", _actor(), user=email.strip().lower(), role=role,
                     matters=list(matters), enrolment=token is not None)
    say(f"created {role} user {email.strip().lower()}; TOTP is set up at the first login", err=True)
    if token is not None:
        say("one-time enrolment link (valid 72 h), give it to the user only:", err=True)
        click.echo(f"{services.settings.console_url}/console/enrol/{token}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handled
@needs_archive
def user_list(as_json: bool) -> None:
    """Every console user: email, role, matters, MFA set up, disabled."""
    from archiver.console import users
    from archiver.terminal import table

    with _services().sessions() as session:
        rows = users.list_users(session)
    if as_json:
        say_json(rows)
        return
    say(plural(len(rows), "user"))
    if rows:
        table(("email", "role", "matters", "mfa", "state"),
              [(r["email"], r["role"], ",".join(r["matters"]) or "-", "yes" if r["mfa"] else "no",
                "disabled" if r["disabled"] else "active" if r["enrolled"] else "enrolling") for r in rows])


def _change(email: str, change: Any, event: str, done: str) -> None:
    """Apply ``change(session, email)`` and audit ``event`` in one transaction; say ``done``."""
    from archiver.journal import append_audit

    services = _services()
    with services.sessions.begin() as session:
        change(session, email)
        append_audit(session, event, _actor(), user=email.strip().lower())
    say(f"{done} {email.strip().lower()}")


@user.command("disable")
@click.option("--email", required=True)
@handled
@needs_archive
def user_disable(email: str) -> None:
    """Disable a user: no more logins, and its open sessions end."""
    from archiver.console import users

    _change(email, users.disable_user, "user_disabled", "disabled")


@user.command("reset-mfa")
@click.option("--email", required=True)
@handled
@needs_archive
def user_reset_mfa(email: str) -> None:
    """Drop a user's authenticator and recovery codes; the next login sets up TOTP again."""
    from archiver.console import users

    _change(email, users.reset_mfa, "mfa_reset", "reset the authenticator of")
