"""Errors of the archive: one tree, each with a stable code and a hint.

This module is a leaf: it imports nothing from ``archiver``.

    ArchiverError
    ├── ConfigError              bad or missing configuration
    ├── CatalogOutdated          the catalog's schema is older than this version (archiver migrate)
    ├── CatalogUnknown           the catalog's schema is newer or not ours
    ├── RejectedDelivery         a request the intake refuses (bad signature, too large, bad field)
    │   └── ValidationError      a capture API body with a bad field
    ├── AuthError                missing/invalid token or wrong role
    │   ├── Forbidden            the role (or a legal user's matters) may not
    │   └── LoginFailed          console login refused (password, TOTP, replay, lockout)
    ├── UserError                a console user that cannot be made or changed (bad password...)
    ├── IntegrityError           verification found a break (names the seq or object)
    ├── StoreError               the WORM store failed
    │   ├── NotFound             no such object
    │   ├── Locked               the object is under retention or legal hold
    │   │   └── Held             ... under a legal hold (released only by the hold's release)
    │   └── WormNotEnforced      the store accepts locks without enforcing them
    ├── SearchUnavailable        the search backend cannot answer
    ├── QuerySyntaxError         a search query that does not parse (with position)
    ├── HoldActive               a litigation hold vetoes the operation
    └── PolicyError              a policy file is invalid

Drivers translate SDK exceptions into these at the boundary (``raise ... from exc``).
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Base of every error the archive raises on purpose."""

    code = "archiver-error"
    hint = ""
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def as_dict(self) -> dict[str, str]:
        """Render for JSON APIs and ``--json`` CLI output."""
        out = {"error": self.code, "message": str(self)}
        if self.hint:
            out["hint"] = self.hint
        return out


class ConfigError(ArchiverError):
    code = "config-invalid"
    hint = "check the ARCHIVER_* environment variables (see README)"


class CatalogOutdated(ArchiverError):
    """The catalog's schema revision is older than this version's: ``archiver migrate`` brings it up."""

    code = "catalog-outdated"
    hint = ("back up the catalog, then run: archiver migrate "
            "('archiver serve' migrates at start unless ARCHIVER_MIGRATE_ON_START=0)")


class CatalogUnknown(ArchiverError):
    """The catalog's schema revision is one this version does not know (newer, or not an archive's)."""

    code = "catalog-unknown"
    hint = "run the archiver version that wrote this catalog (or a newer one), or check ARCHIVER_CATALOG_URL"


class RejectedDelivery(ArchiverError):
    code = "rejected-delivery"
    http_status = 400


class ValidationError(RejectedDelivery):
    """A capture API body with a missing or malformed field."""

    code = "invalid-field"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def as_dict(self) -> dict[str, str]:
        out = super().as_dict()
        out["field"] = self.field
        return out


class AuthError(ArchiverError):
    code = "unauthorized"
    http_status = 401
    hint = "send 'Authorization: Bearer <token>' (create one with 'archiver token create')"


class Forbidden(AuthError):
    code = "forbidden"
    http_status = 403
    hint = "this token's role may not use this endpoint"


class LoginFailed(AuthError):
    """A console login step refused; the message never says which of email or password was wrong."""

    code = "login-failed"
    hint = "check the email, password and authenticator code; repeated failures lock the account for a while"


class UserError(ArchiverError):
    """``archiver user ...`` or enrolment refused: unknown user, bad role, weak password."""

    code = "user-invalid"
    http_status = 400
    exit_status = 1
    hint = "see `archiver user list`; passwords need 12 characters and must not be a common one"


class IntegrityError(ArchiverError):
    """Verification found a break; ``where`` names the seq or object."""

    code = "integrity-broken"

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class StoreError(ArchiverError):
    code = "store-error"
    http_status = 503


class NotFound(StoreError):
    code = "not-found"
    http_status = 404


class Locked(StoreError):
    code = "locked"
    http_status = 409
    hint = "the object is under WORM retention or a legal hold"


class Held(Locked):
    """A delete refused because the object's legal hold is on (whatever its retention)."""

    code = "legal-hold"
    hint = "the object is under a legal hold: it can be deleted only after every hold on it is released"


class WormNotEnforced(StoreError):
    code = "worm-not-enforced"
    hint = ("the bucket must have Object Lock enabled and enforce COMPLIANCE retention; "
            "ARCHIVER_ALLOW_UNLOCKED_STORE=1 allows it for development only")


class JournalUnavailable(ArchiverError):
    """The catalog could not take a delivery: nothing was accepted, the sender should retry."""

    code = "journal-unavailable"
    http_status = 503
    hint = "the catalog database refused the write (down, full or locked); Meta retries webhooks that get no 200"


class SearchUnavailable(ArchiverError):
    code = "search-unavailable"
    http_status = 503
    hint = "the search backend is down; capture and sealing go on, the index catches up later"


class QuerySyntaxError(ArchiverError):
    code = "query-syntax"
    http_status = 400

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position

    def as_dict(self) -> dict[str, str]:
        out = super().as_dict()
        out["position"] = str(self.position)
        return out


class HoldActive(ArchiverError):
    code = "hold-active"
    http_status = 409


class PolicyError(ArchiverError):
    """A policy file is invalid: the message is ``file:line: key: problem``, each part when known."""

    code = "policy-invalid"
    hint = "fix the file and run 'archiver policy check' (see policies/README.md)"

    def __init__(self, problem: str, *, file: str = "", line: int = 0, key: str = "") -> None:
        where = f"{file}:{line}" if file and line else file
        super().__init__(": ".join(part for part in (where, key, problem) if part))
        self.file, self.line, self.key, self.problem = file, line, key, problem

    def as_dict(self) -> dict[str, str]:
        out = super().as_dict()
        out.update(file=self.file, line=str(self.line), key=self.key)
        return out


class ScheduleError(PolicyError):
    """``policies/schedule.yaml`` is invalid (``file:line: key: problem``)."""

    hint = "fix the file and run 'archiver jobs list' (see policies/README.md)"


class JobBusy(ArchiverError):
    """The job is running in another process (one instance at a time, across processes)."""

    code = "job-busy"
    http_status = 409
    hint = "wait for that run to end: 'archiver stats' shows the job's last run"


class UnknownJob(ArchiverError):
    """No job of that name is registered."""

    code = "unknown-job"
    http_status = 404
    hint = "'archiver jobs list' names every job"


class NoArchive(ConfigError):
    """A command that reads the archive was pointed at a folder that holds none."""

    code = "no-archive"


class TokenNameError(ArchiverError):
    """``token create`` with a name already used, or ``token revoke`` of a name with no live token."""

    code = "token-name"
    http_status = 409
    exit_status = 1


class SampleFailed(ArchiverError):
    """``archiver sample-webhook``: the service refused the sample, or it was not searchable in time."""

    code = "sample-failed"


class RetentionRefused(ArchiverError):
    """A retention change the archive does not make: shortening, a past date, an unknown class."""

    code = "retention-refused"
    hint = "retention of sealed records can be extended, never shortened (see README: Retention)"
    http_status = 409


class InsecureStoreWarning(UserWarning):
    """A development-only, weaker store mode is in use (e.g. local WORM cannot stop root)."""
