"""Console test helpers: users made by the CLI, logins through the real forms (CSRF and TOTP)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pyotp
from click.testing import CliRunner

from archiver.cli import main

PASSWORD = "correct horse battery staple 42"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')


def csrf(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def create_user(tmp_path: Path, email: str, role: str, *matters: str, password: str | None = PASSWORD) -> str:
    """``archiver user create`` (in-process, the ARCHIVER_* env set by the caller); its stdout."""
    args = ["user", "create", "--email", email, "--role", role, *[a for m in matters for a in ("--matter", m)]]
    if password is not None:
        pw = tmp_path / f"{email}.pw"
        pw.write_text(password + "\n")
        args += ["--password-file", str(pw)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.stdout


class Login:
    """A browser-like client logged in through the forms; keeps the TOTP secret it enrolled."""

    def __init__(self, client: Any, email: str, password: str = PASSWORD) -> None:
        self.client, self.email, self.password = client, email, password
        self.secret = ""

    def password_step(self) -> Any:
        """POST the login form; the response (a redirect to the second factor on success)."""
        page = self.client.get("/console/login")
        return self.client.post("/console/login", data={"email": self.email, "password": self.password,
                                                        "csrf_token": csrf(page.text)})

    def enrol_totp(self) -> list[str]:
        """From a password-stage session: set up TOTP; return the recovery codes shown."""
        page = self.client.get("/console/mfa/setup")
        found = _SECRET.search(page.text)
        assert found, page.text[:500]
        self.secret = found.group(1)
        done = self.client.post("/console/mfa/setup", data={"code": pyotp.TOTP(self.secret).now(),
                                                            "csrf_token": csrf(page.text)})
        assert done.status_code == 200, done.text[:500]
        return re.findall(r"<li><code>([0-9a-f]{8}-[0-9a-f]{8})</code></li>", done.text)

    def code_step(self, code: str) -> Any:
        """POST a second-factor code from a password-stage session."""
        page = self.client.get("/console/login/mfa")
        return self.client.post("/console/login/mfa", data={"code": code, "csrf_token": csrf(page.text)})

    def next_code(self, steps_ahead: int = 1) -> str:
        """A valid code of a later step (the skew allows one), never a replay of the last one."""
        return pyotp.TOTP(self.secret).at(time.time() + 30 * steps_ahead)

    def full(self) -> "Login":
        """Log in completely (enrolling TOTP on first use); return self."""
        assert self.password_step().status_code == 302
        if self.secret:
            assert self.code_step(self.next_code()).status_code == 302
        else:
            self.enrol_totp()
        return self

    def logout(self) -> Any:
        """POST the logout form of the home page."""
        page = self.client.get("/console/")
        return self.client.post("/console/logout", data={"csrf_token": csrf(page.text)})
