"""The second factor: TOTP (RFC 6238, 30 s steps, six digits) and one-time recovery codes.

A code is accepted for the current step or one step either side (clock skew), and only for
a step later than the last one accepted: a code seen once, or an older one, is a replay.
Recovery codes are random, shown once, and kept as SHA-256 digests; each works once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
import segno

from archiver.errors import LoginFailed

STEP = 30
SKEW = 1
RECOVERY_CODES = 10
ISSUER = "WhatsApp archive"


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, email: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, interval=STEP).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The QR code of ``uri`` as an inline ``<svg>`` element (rendered here, no script)."""
    return str(segno.make(uri, error="m").svg_inline(scale=5, dark="#111", light="#fff"))


def accept_totp(secret: str, code: str, last_step: int | None, now: float | None = None) -> int:
    """The time step ``code`` belongs to, if it is new. Raises LoginFailed (wrong or replayed)."""
    code = code.strip().replace(" ", "")
    current = int((time.time() if now is None else now) // STEP)
    totp = pyotp.TOTP(secret, interval=STEP)
    for step in range(current - SKEW, current + SKEW + 1):
        if hmac.compare_digest(totp.at(step * STEP), code):
            if last_step is not None and step <= last_step:
                raise LoginFailed("this authenticator code was used already; wait for the next one")
            return step
    raise LoginFailed("wrong authenticator code")


def new_recovery_codes() -> tuple[list[str], list[str]]:
    """(codes to show once, their digests to store)."""
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    return codes, [_digest(c) for c in codes]


def use_recovery_code(digests: list[str], code: str) -> list[str]:
    """The digests left once ``code`` is spent. Raises LoginFailed when it is not one of them."""
    digest = _digest(code.strip().lower())
    if digest not in digests:
        raise LoginFailed("wrong or used recovery code")
    return [d for d in digests if d != digest]


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
