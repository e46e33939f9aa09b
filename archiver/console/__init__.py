"""The web console (issue 13): users, passwords, TOTP, sessions and server-rendered pages.

``users`` (accounts, enrolment, lockout), ``passwords`` (argon2id, NIST 800-63B rules),
``mfa`` (TOTP with replay refusal, recovery codes, the QR code), ``sessions`` (login state,
timeouts, CSRF, security headers) and ``pages`` (the blueprint of HTML pages).
"""
