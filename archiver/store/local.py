"""``file:///path`` driver: software WORM on a local folder (the embedded default).

Layout under the root::

    objects/<key>          the bytes, written once, mode 0400
    locks/<key>.json       {"retain_until": ISO-8601 UTC, "legal_hold": bool, "sha256": hex}
    .mutex                 flock'd while a write or delete is in progress

How a put stays safe across crashes and concurrent writers:

- one ``flock`` on ``.mutex`` serialises mutations, across threads and processes;
- the lock sidecar is written *before* the object, so a crash can leave a lock without an
  object (harmless: the retry keeps the longer retention) but never an object without a lock;
- the object is a temp file in the same directory, fsync'd, made read-only, then ``os.link``'d
  to its key and the directory fsync'd. ``link`` fails if the key exists, so unlike ``rename``
  nothing can ever replace a sealed object, even a process that ignores the mutex.

This is *software* WORM: the archive refuses overwrite and early delete, and the files are
read-only, but the files' owner (and root) can still change them. Production compliance
needs ``s3://`` with Object Lock; opening this store as root emits InsecureStoreWarning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from archiver.canonical import sha256_hex
from archiver import home
from archiver.errors import ConfigError, Held, InsecureStoreWarning, Locked, NotFound, StoreError
from archiver.store import ObjectInfo, check_key, check_prefix, check_retain_until

_READ_ONLY = 0o400  # read-only, and private to the archive's user
_DIR_MODE = 0o700


@dataclass(frozen=True)
class _Lock:
    """The retention record of one object, as kept in its sidecar."""

    retain_until: datetime
    legal_hold: bool
    sha256: str

    def to_bytes(self) -> bytes:
        """Serialise as sorted JSON with an ISO-8601 UTC time."""
        doc = {"retain_until": self.retain_until.isoformat(), "legal_hold": self.legal_hold, "sha256": self.sha256}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, key: str) -> _Lock:
        """Parse a sidecar. Raises StoreError if it is corrupt (deletion then fails closed)."""
        try:
            doc = json.loads(raw)
            until = datetime.fromisoformat(doc["retain_until"]).astimezone(timezone.utc)
            return cls(until, bool(doc["legal_hold"]), str(doc["sha256"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"lock record of {key} is corrupt") from exc


class LocalStore:
    """Software-WORM store on a local folder; see the module docstring."""

    # Plain files under a picklable (root, url) pair, no connections: other processes may
    # use it themselves (verification's workers read segments rather than have them piped
    # over; the sealer's writer process publishes).
    process_safe = True
    allow_unlocked = False  # this driver's own checks are the lock: it cannot fail the self-test

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    @classmethod
    def from_url(cls, url: str) -> LocalStore:
        """Open (creating if needed) the store at ``file:///path``.

        Warns InsecureStoreWarning when running as root. Raises ConfigError for a URL
        that is not a local absolute path, StoreError if the folder cannot be created.
        """
        store = cls(_root_from_url(url), url)
        try:
            for sub in ("objects", "locks"):
                home.private_dir(store.root / sub)
        except OSError as exc:
            raise StoreError(f"cannot create local store at {store.root}: {exc.strerror}") from exc
        _warn_if_root(store)
        return store

    def put_locked(self, key: str, data: bytes, retain_until: datetime, *, legal_hold: bool = False) -> None:
        """Write ``data`` once under ``key``; see WormStore.put_locked. Raises Locked, StoreError."""
        check_key(key)
        wanted = _Lock(check_retain_until(retain_until), legal_hold, sha256_hex(data))
        path = self._object(key)
        with self._mutex(), _os_errors(key, missing=StoreError):
            if path.exists():
                self._same_or_locked(key, data)
            else:
                self._write_lock(key, self._merge_orphan(key, wanted))
                _make_dirs(self.root / "objects", path.parent)
                _write_once(path, data)

    def get(self, key: str) -> bytes:
        """Return the object's bytes. Raises NotFound, StoreError."""
        with _os_errors(check_key(key)):
            return self._object(key).read_bytes()

    def head(self, key: str) -> ObjectInfo:
        """Return size, retention, hold and sha256. Raises NotFound, StoreError (also if its lock record is missing)."""
        with _os_errors(check_key(key)):
            size = self._object(key).stat().st_size
            lock = self._read_lock(key)
        return ObjectInfo(key, size, lock.retain_until, lock.legal_hold, lock.sha256)

    def list(self, prefix: str) -> Iterator[str]:
        """Return every key starting with ``prefix``, in lexical order. Raises StoreError."""
        objects = self.root / "objects"
        # Walk only the deepest folder the prefix names; the rest of it filters names.
        start = objects / check_prefix(prefix).rpartition("/")[0]
        with _os_errors(prefix):
            keys = [key for key in _walk_keys(objects, start) if key.startswith(prefix)]
        return iter(sorted(keys))

    def legal_hold(self, key: str) -> bool:
        """The legal-hold flag of the object's lock record. Raises NotFound, StoreError."""
        return self.head(key).legal_hold

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Turn the object's legal hold on or off. Raises NotFound, StoreError."""
        with self._mutex(), _os_errors(check_key(key)):
            self._object(key).stat()  # NotFound before touching the lock record
            lock = self._read_lock(key)
            self._write_lock(key, _Lock(lock.retain_until, on, lock.sha256))

    def check_lock_enabled(self) -> None:
        """Nothing to ask: this driver's refusal to overwrite or delete early is the lock."""

    def canary_delete(self, key: str) -> None:
        """The self-test's delete goes through ``delete_expired``, whose check is the enforcement."""
        self.delete_expired(key)

    def delete_expired(self, key: str) -> None:
        """Delete an object past its retention and not held. Raises Locked, NotFound, StoreError."""
        with self._mutex(), _os_errors(check_key(key)):
            path = self._object(key)
            path.stat()
            _check_deletable(key, self._read_lock(key))
            # Object first, then its lock: a crash in between leaves only a stray lock record.
            path.unlink()
            _fsync_dir(path.parent)
            self._lock_path(key).unlink()
            _fsync_dir(self._lock_path(key).parent)

    def ping(self) -> None:
        """Check the store folder is there. Raises StoreError."""
        if not (self.root / "objects").is_dir() or not (self.root / "locks").is_dir():
            raise StoreError(f"local store folder {self.root} is missing",
                             hint="check ARCHIVER_STORE_URL and that the volume is mounted")

    # -- internals --------------------------------------------------------------------

    def _object(self, key: str) -> Path:
        return self.root / "objects" / key

    def _lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.json"

    @contextmanager
    def _mutex(self) -> Iterator[None]:
        """Hold the store-wide write lock (threads and processes). Raises StoreError."""
        try:
            fd = os.open(self.root / ".mutex", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot lock local store {self.root}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _same_or_locked(self, key: str, data: bytes) -> None:
        """Return if ``key`` already holds ``data``. Raises Locked if it holds other bytes."""
        if self._object(key).read_bytes() != data:
            raise Locked(f"{key} already exists with different bytes")

    def _read_lock(self, key: str) -> _Lock:
        """Read the object's lock record. Raises StoreError if it is missing or corrupt."""
        try:
            raw = self._lock_path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"lock record of {key} is missing; refusing to trust it") from exc
        return _Lock.from_bytes(raw, key)

    def _merge_orphan(self, key: str, wanted: _Lock) -> _Lock:
        """Combine ``wanted`` with a lock left by a crashed put: the longer retention and any hold win."""
        try:
            old = self._read_lock(key)
        except StoreError:
            return wanted
        until = max(old.retain_until, wanted.retain_until)
        return _Lock(until, old.legal_hold or wanted.legal_hold, wanted.sha256)

    def _write_lock(self, key: str, lock: _Lock) -> None:
        """Atomically replace the lock record. Raises Locked if that would shorten retention."""
        path = self._lock_path(key)
        if path.exists() and self._read_lock(key).retain_until > lock.retain_until:
            raise Locked(f"retention of {key} may be extended but never shortened")
        _make_dirs(self.root / "locks", path.parent)
        tmp = _write_temp(path, lock.to_bytes())
        os.replace(tmp, path)  # replace, not link: a lock record is updated in place
        _fsync_dir(path.parent)


def _root_from_url(url: str) -> Path:
    """The absolute folder of a ``file://`` URL. Raises ConfigError."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query:
        raise ConfigError(f"local store URL must be file:///absolute/path, got {url!r}")
    root = Path(unquote(parts.path))
    if not root.is_absolute():
        raise ConfigError(f"local store URL must name an absolute path, got {url!r}")
    return root


def _warn_if_root(store: LocalStore) -> None:
    """Say loudly, once per opened store, that read-only files do not stop root."""
    warn_if_root(store.url, stacklevel=4)


def warn_if_root(url: str, stacklevel: int = 2) -> None:
    """Warn InsecureStoreWarning when this process runs as root: the local store at ``url``
    cannot stop it (``serve`` says it once; see ``server.warn_insecure_store``)."""
    if os.geteuid() == 0:
        warnings.warn(
            f"{url} is software WORM: the archive refuses overwrite and early delete and "
            "the files are read-only, but this process runs as root, which can still delete "
            "or change them; use s3:// with Object Lock COMPLIANCE for compliance storage",
            InsecureStoreWarning,
            stacklevel=stacklevel,
        )


def _check_deletable(key: str, lock: _Lock) -> None:
    """Raises Held while ``lock`` holds the object, Locked while it retains it."""
    if lock.legal_hold:
        raise Held(f"{key} is under legal hold")
    if lock.retain_until > datetime.now(timezone.utc):
        raise Locked(f"{key} is retained until {lock.retain_until.isoformat()}")


def _write_once(path: Path, data: bytes) -> None:
    """Create ``path`` read-only with ``data``, durably. Raises FileExistsError if it exists."""
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()
    _fsync_dir(path.parent)


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a fsync'd, read-only temp file beside ``path`` and return its path."""
    # A leading dot: keys cannot start with one, so temp files never clash with or list as keys.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _READ_ONLY)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _make_dirs(base: Path, folder: Path) -> None:
    """Create ``folder`` (under ``base``) and fsync each new entry's parent, so it survives a crash."""
    missing = []
    while folder != base and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(mode=_DIR_MODE, exist_ok=True)
        os.chmod(new, _DIR_MODE)  # whatever the umask
        _fsync_dir(new.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename, link or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _walk_keys(objects: Path, start: Path) -> Iterator[str]:
    """Yield the key of every object file under ``start`` (temp files excluded)."""
    for folder, _dirs, files in os.walk(start, onerror=_raise):
        rel = Path(folder).relative_to(objects)
        for name in files:
            if not name.startswith("."):
                yield (rel / name).as_posix()


def _raise(exc: OSError) -> None:
    # A start folder that is missing (or is an object) just means no keys under that prefix.
    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
        raise exc


@contextmanager
def _os_errors(key: str, *, missing: type[StoreError] = NotFound) -> Iterator[None]:
    """Translate OS errors about ``key``: missing -> ``missing`` (NotFound), others -> StoreError."""
    try:
        yield
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise missing(f"no object {key}" if missing is NotFound else f"cannot write {key}: {exc.strerror}") from exc
    except OSError as exc:
        raise StoreError(f"local store failed on {key}: {exc.strerror or exc}") from exc
