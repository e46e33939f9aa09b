"""Passwords: argon2id hashes and the NIST SP 800-63B rules (section 5.1.1.2).

At least 12 characters, at most 128, any characters, no composition rules; refused when it
is a commonly used or breached password (a small built-in list, matched case-insensitively),
one character repeated, or contains the account's email name.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from archiver.errors import UserError

MIN_LENGTH = 12
MAX_LENGTH = 128
# Passwords of 12+ characters at the top of public breach corpora (the shorter ones are
# refused by the length rule already).
COMMON = frozenset("""
123456789012 1234567890123 12345678901234 123123123123 111111111111 000000000000 123456123456
password1234 password12345 password123456 passwordpassword password1! password123! p@ssw0rd1234
qwertyuiopas qwerty123456 qwertyuiop123 1qaz2wsx3edc 1q2w3e4r5t6y qazwsxedcrfv asdfghjkl123
iloveyou1234 iloveyou12345 abc123456789 abcdefghijkl abcd1234abcd letmein12345 welcome12345
welcome123456 changeme1234 administrator admin1234567 football1234 baseball1234 sunshine1234
princess1234 dragon123456 monkey123456 trustno1trustno1 whatsapp1234 whatsapp12345 compliance123
summer2024!! winter2024!! spring2025!! autumn2025!! correcthorsebatterystaple
""".split())

_hasher = PasswordHasher()  # argon2-cffi's defaults are argon2id (RFC 9106 low-memory profile)


def check_password(password: str, email: str = "") -> None:
    """Raise UserError naming the NIST rule ``password`` breaks."""
    if len(password) < MIN_LENGTH:
        raise UserError(f"the password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise UserError(f"the password may have at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in COMMON or len(set(password)) == 1:
        raise UserError("this password is common or breached; choose another")
    name = email.partition("@")[0].lower()
    if len(name) >= 4 and name in lowered:
        raise UserError("the password must not contain the account's email name")


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of ``password``."""
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (False for no password set or a bad hash)."""
    if not stored:
        _hasher.hash(password)  # spend the same time: no timing tells an unknown account
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
