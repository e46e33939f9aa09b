"""The WORM store: where sealed segments, media and checkpoints live, locked.

``WormStore`` is shaped by what the sealer, media fetcher, verifier and holds need.
Drivers are chosen by URL scheme in :func:`open_store` and imported lazily, so the
embedded install never imports boto3:

- ``file:///path``: software WORM on a local folder (store/local.py)
- ``s3://bucket[/prefix]?endpoint_url=...&region=...``: S3 Object Lock COMPLIANCE (store/s3.py)

Object keys are computed by the pure functions in ``archiver.chain`` (one place).
"""

from __future__ import annotations

import logging
import re
import secrets
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator, Protocol, runtime_checkable

from archiver.errors import ConfigError, InsecureStoreWarning, Locked, NotFound, StoreError, WormNotEnforced

logger = logging.getLogger(__name__)

#: Where the decision-9 canaries live, and how long each is locked.
CANARY_PREFIX = "selftest/"
CANARY_RETENTION = timedelta(days=1)
_CANARY_TIME = "%Y%m%dT%H%M%SZ"

# One part of a key: no leading dot (so "." / ".." and the local driver's temp files are
# impossible), no backslash or control characters that mean different things to different stores.
_KEY_PART = re.compile(r"[A-Za-z0-9_~+=@-][A-Za-z0-9._~+=@-]*")
_MAX_KEY = 1024  # S3's limit, in bytes; keys are ASCII here
_MAX_PART = 255  # a file name on every local filesystem we support


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says about one object."""

    key: str
    size: int
    retain_until: datetime | None
    legal_hold: bool
    sha256: str | None = None


@runtime_checkable
class WormStore(Protocol):
    """Write-once object store with retention and legal holds."""

    url: str
    #: a forked child process may use this object itself (plain files: yes; a client
    #: holding connections: no)
    process_safe: bool
    #: opened for development with a store that fails the WORM self-test (see assert_worm)
    allow_unlocked: bool

    def put_locked(self, key: str, data: bytes, retain_until: datetime, *, legal_hold: bool = False) -> None:
        """Write ``data`` once under ``key``, locked until ``retain_until`` (UTC, aware).

        Idempotent for identical bytes (a retry after a crash is a no-op, retention unchanged).
        Raises Locked if ``key`` exists with different bytes; StoreError for a bad key
        (see :func:`check_key`), a naive or past ``retain_until``, or on failure.
        """

    def get(self, key: str) -> bytes:
        """Return the object's bytes. Raises NotFound, StoreError."""

    def head(self, key: str) -> ObjectInfo:
        """Return the object's size, retention, hold and sha256. Raises NotFound, StoreError."""

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key starting with ``prefix`` in lexical order. Raises StoreError (also for a bad prefix)."""

    def legal_hold(self, key: str) -> bool:
        """Whether a legal hold keeps the object from deletion: the store's own answer, for
        checking that a hold was applied or released. Raises NotFound, StoreError.

        S3: true if any version of the key is held (GetObjectLegalHold on each), so it also
        sees a held version under a stacked version or a delete marker, which ``head`` (the
        current version only) does not.
        """

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Turn the object's legal hold on or off (read it back with ``legal_hold``).

        Idempotent. Leaves retention unchanged. While on, every delete the store offers
        (``delete_expired``, ``canary_delete``) is refused, after retention too; on S3 the
        server itself refuses (every version of the key is held). Raises NotFound, StoreError.
        """

    def extend_retention(self, key: str, retain_until: datetime) -> None:
        """Lock the object until ``retain_until`` (UTC, aware, future) at least; never shorter.

        Idempotent: a version already locked as long or longer keeps its date. S3: every
        version of the key (PutObjectRetention, COMPLIANCE); local: the lock record. Leaves
        the legal hold unchanged. Raises NotFound, StoreError (also for a naive or past date).
        """

    def delete_expired(self, key: str) -> None:
        """Delete an object whose retention has passed and that has no legal hold; it is then gone
        (S3: every version, no delete marker left).

        Raises Held while the legal hold is on, Locked while retained, NotFound, StoreError.
        """

    def ping(self) -> None:
        """Cheap reachability check. Raises StoreError."""

    def check_lock_enabled(self) -> None:
        """Decision 9, step 1: raises WormNotEnforced unless the backend's own lock feature is on
        (S3: the bucket's Object Lock); StoreError. Nothing to check where the driver's own
        code is the lock (the local store)."""

    def canary_delete(self, key: str) -> None:
        """Decision 9, step 4: try to delete the self-test canary ``key`` through the backend
        itself, skipping any client-side retention check. Raises Locked when refused."""


def open_store(url: str, *, allow_unlocked: bool = False) -> WormStore:
    """Open the store named by ``url``. Raises ConfigError for an unknown scheme or missing extra."""
    scheme = url.split(":", 1)[0]
    if scheme == "file":
        from archiver.store.local import LocalStore

        return LocalStore.from_url(url)
    if scheme == "s3":
        try:
            from archiver.store.s3 import S3Store
        except ImportError as exc:  # boto3 is the optional extra
            raise ConfigError("s3:// stores need boto3: pip install 'whatsapp-archiver[s3]'") from exc
        return S3Store.from_url(url, allow_unlocked=allow_unlocked)
    raise ConfigError(f"unknown store URL scheme {scheme!r}; use file:// or s3://")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe object key.

    A key is ``/``-separated parts of ``[A-Za-z0-9._~+=@-]``, none empty and none starting
    with a dot, e.g. ``segments/default/000000000001-000000000100-<hex>.jsonl.gz``.
    Raises StoreError for anything else (``..``, absolute paths, empty parts).
    """
    parts = key.split("/") if isinstance(key, str) and 0 < len(key) <= _MAX_KEY else [""]
    if not all(map(_is_key_part, parts)):
        raise StoreError(f"bad object key {key!r}", hint="keys look like media/<sha256>: no '..' or empty parts")
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it may start a key (``""``, ``segments/``, ``segments/def``). Raises StoreError."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _is_key_part(part: str) -> bool:
    return len(part) <= _MAX_PART and _KEY_PART.fullmatch(part) is not None


def check_retain_until(retain_until: datetime, now: datetime | None = None) -> datetime:
    """Return ``retain_until`` in UTC if it is timezone-aware and in the future.

    Raises StoreError otherwise: a naive time is ambiguous, and S3 refuses a past date.
    """
    if not isinstance(retain_until, datetime) or retain_until.utcoffset() is None:
        raise StoreError(f"retain_until must be a timezone-aware datetime, got {retain_until!r}")
    until = retain_until.astimezone(timezone.utc)
    if until <= (now or datetime.now(timezone.utc)):
        raise StoreError(f"retain_until {until.isoformat()} is not in the future")
    return until


def assert_worm(store: WormStore) -> None:
    """Decision 9: prove the store refuses to delete a locked object before trusting it.

    1. the backend must report its lock feature on (``check_lock_enabled``: S3 Object Lock);
    2. a canary ``selftest/<time>-<random>`` is put under COMPLIANCE retention of one day;
    3. the store must report that retention back;
    4. deleting the canary must be refused through the backend itself (``canary_delete``;
       S3: delete the version, skipping the client-side check; the local store: its
       ``delete_expired``, whose check *is* the enforcement).

    Raises WormNotEnforced if any step shows the lock is not enforced, StoreError if the
    store cannot be reached. A store opened with ``allow_unlocked=True`` turns
    WormNotEnforced into a logged error plus an InsecureStoreWarning (development only).
    """
    try:
        _run_canary(store)
    except WormNotEnforced as exc:
        if not store.allow_unlocked:
            raise
        logger.error("store.worm_not_enforced url=%s allow_unlocked=1 reason=%s", store.url, exc)
        warnings.warn(f"{exc}; continuing only because allow_unlocked is set (development only)",
                      InsecureStoreWarning, stacklevel=2)


def _run_canary(store: WormStore) -> None:
    """Steps 1-4 of :func:`assert_worm`, then sweep old canaries. Raises WormNotEnforced, StoreError."""
    store.check_lock_enabled()
    now = datetime.now(timezone.utc)
    key = canary_key(now)
    store.put_locked(key, b"worm canary " + key.encode(), now + CANARY_RETENTION)
    _check_canary_retained(store, key, now + CANARY_RETENTION)
    _check_delete_refused(store, key)
    logger.info("store.worm_enforced url=%s canary=%s", store.url, key)
    _sweep_canaries(store, now)


def canary_key(now: datetime) -> str:
    """The key of a new canary written at ``now``: sortable time plus randomness."""
    return f"{CANARY_PREFIX}{now.astimezone(timezone.utc).strftime(_CANARY_TIME)}-{secrets.token_hex(6)}"


def _check_canary_retained(store: WormStore, key: str, wanted: datetime) -> None:
    """Raises WormNotEnforced unless the store reports the canary's retention (to the second)."""
    info = store.head(key)
    if info.retain_until is None or info.retain_until < wanted - timedelta(seconds=1):
        raise WormNotEnforced(f"{store.url}: canary {key} was stored without its retention "
                              f"(expected until {wanted.isoformat()}, found {info.retain_until})")


def _check_delete_refused(store: WormStore, key: str) -> None:
    """Raises WormNotEnforced if the canary, still under retention, can be deleted."""
    try:
        store.canary_delete(key)
    except Locked:
        return
    raise WormNotEnforced(f"{store.url}: canary {key} under COMPLIANCE retention was deleted")


def _sweep_canaries(store: WormStore, now: datetime) -> None:
    """Delete canaries whose retention has passed, so self-tests do not pile up. Raises StoreError."""
    cutoff = (now - CANARY_RETENTION - timedelta(minutes=1)).strftime(_CANARY_TIME)
    old = [key for key in store.list(CANARY_PREFIX) if key[len(CANARY_PREFIX):] < cutoff]
    for key in old:
        try:
            store.delete_expired(key)
        except (Locked, NotFound):
            continue  # retention was extended by hand, or another instance swept it first
