"""The WORM store: where sealed segments, media and checkpoints live, locked.

``WormStore`` is shaped by what the sealer, media fetcher, verifier and holds need.
Drivers are chosen by URL scheme in :func:`open_store` and imported lazily, so the
embedded install never imports boto3:

- ``file:///path``: software WORM on a local folder (store/local.py)
- ``s3://bucket[/prefix]?endpoint_url=...&region=...``: S3 Object Lock COMPLIANCE (store/s3.py)

Object keys are computed by the pure functions in ``archiver.chain`` (one place).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, Protocol, runtime_checkable

from archiver.errors import ConfigError


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

    def put_locked(self, key: str, data: bytes, retain_until: datetime, *, legal_hold: bool = False) -> None:
        """Write ``data`` once under ``key``, locked until ``retain_until`` (UTC, aware).

        Idempotent for identical bytes (a retry after a crash is a no-op).
        Raises Locked if ``key`` exists with different bytes, StoreError on failure.
        """

    def get(self, key: str) -> bytes:
        """Return the object's bytes. Raises NotFound, StoreError."""

    def head(self, key: str) -> ObjectInfo:
        """Return the object's size, retention and hold. Raises NotFound, StoreError."""

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key under ``prefix`` in lexical order. Raises StoreError."""

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Turn the object's legal hold on or off. Raises NotFound, StoreError."""

    def delete_expired(self, key: str) -> None:
        """Delete an object whose retention has passed and that has no legal hold.

        Raises Locked while retained or held, NotFound, StoreError.
        """

    def ping(self) -> None:
        """Cheap reachability check. Raises StoreError."""


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


def assert_worm(store: WormStore) -> None:
    """Decision 9: prove the store refuses to delete a locked object before trusting it.

    Writes a canary under ``selftest/`` with a short retention and tries to delete it.
    Raises WormNotEnforced if the delete succeeds (or the lock is not reported),
    StoreError if the store cannot be reached.
    """
    raise NotImplementedError  # implemented with the drivers
