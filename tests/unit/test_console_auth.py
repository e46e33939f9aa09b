"""Console passwords (NIST 800-63B rules, argon2id) and TOTP (skew, replay), recovery codes."""

from __future__ import annotations

import pyotp
import pytest

from archiver.console import mfa, passwords
from archiver.errors import LoginFailed, UserError

NOW = 1_780_000_000.0


@pytest.mark.parametrize("bad", ["short-pass1", "password1234", "PASSWORD1234", "aaaaaaaaaaaaaaa", "x" * 129,
                                 "my-name-is-alice-ok"])
def test_weak_passwords_are_refused(bad: str) -> None:
    with pytest.raises(UserError):
        passwords.check_password(bad, "alice@example.com")


def test_a_long_plain_passphrase_needs_no_composition_rule() -> None:
    passwords.check_password("lowercase words only here", "bob@example.com")
    stored = passwords.hash_password("lowercase words only here")
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, "lowercase words only here")
    assert not passwords.verify_password(stored, "lowercase words only herE")
    assert not passwords.verify_password(None, "anything at all")


def test_totp_takes_one_step_of_skew_and_refuses_replays() -> None:
    secret = mfa.new_secret()
    totp = pyotp.TOTP(secret)
    step = int(NOW // 30)
    assert mfa.accept_totp(secret, totp.at(NOW), None, NOW) == step
    assert mfa.accept_totp(secret, totp.at(NOW - 30), None, NOW) == step - 1
    assert mfa.accept_totp(secret, totp.at(NOW + 30), None, NOW) == step + 1
    with pytest.raises(LoginFailed, match="wrong"):
        mfa.accept_totp(secret, totp.at(NOW - 90), None, NOW)
    with pytest.raises(LoginFailed, match="used already"):
        mfa.accept_totp(secret, totp.at(NOW), step, NOW)
    with pytest.raises(LoginFailed, match="used already"):  # an older code after a newer one
        mfa.accept_totp(secret, totp.at(NOW - 30), step, NOW)


def test_recovery_codes_work_once_and_are_stored_hashed() -> None:
    codes, digests = mfa.new_recovery_codes()
    assert len(codes) == mfa.RECOVERY_CODES and not set(codes) & set(digests)
    left = mfa.use_recovery_code(digests, codes[3].upper())
    assert len(left) == len(digests) - 1
    with pytest.raises(LoginFailed):
        mfa.use_recovery_code(left, codes[3])


def test_the_qr_code_is_inline_svg() -> None:
    svg = mfa.qr_svg(mfa.provisioning_uri(mfa.new_secret(), "a@example.com"))
    assert svg.startswith("<svg") and "<script" not in svg
