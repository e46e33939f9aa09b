"""``s3://bucket[/prefix]?endpoint_url=...&region=...`` driver: S3 Object Lock COMPLIANCE.

The bucket must be created with Object Lock (hence versioning) enabled. Every object is
put once with ``ObjectLockMode=COMPLIANCE`` and its retain-until date, so the *server*
refuses early deletes and overwrites of that version; this driver adds only the checks
that keep callers honest:

- ``put_locked`` heads the key first and sends ``If-None-Match: *``: in a versioned bucket a
  second PUT would otherwise silently add a version on top of sealed evidence;
- ``x-amz-checksum-sha256`` is sent with every PUT, so the server rejects corrupted uploads
  (SeaweedFS 4.48 verifies it and returns it from HEAD); the hex digest also goes in
  ``x-amz-meta-sha256`` for gateways that accept a checksum without reporting it;
- ``set_legal_hold`` and ``delete_expired`` act on every version of the key, found by
  listing its versions: a hold reaches the sealed version even under a stacked version or
  a delete marker, and a delete removes the versions themselves (and any delete marker),
  never just adding a marker. SeaweedFS 4.48 enforces the hold itself: deleting a held
  version answers AccessDenied, after retention too, until the hold is OFF.

Credentials come from the standard boto3 chain (``AWS_ACCESS_KEY_ID``... or a profile),
never from the URL. botocore errors become StoreError/NotFound/Locked here, at the boundary.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from archiver.canonical import sha256_hex
from archiver.errors import ConfigError, Held, Locked, NotFound, StoreError, WormNotEnforced
from archiver.store import ObjectInfo, check_key, check_prefix, check_retain_until

logger = logging.getLogger(__name__)

_OPTIONS = frozenset({"endpoint_url", "region"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion"})
# Fail within seconds when the endpoint is down, instead of botocore's 60 s x 5 attempts.
_CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=20,
    retries={"mode": "standard", "total_max_attempts": 3},
)
_PERMISSIONS_HINT = ("the S3 identity needs Read, Write, List (with ListBucketVersions) plus PutObjectRetention, "
                     "PutObjectLegalHold, GetObjectLegalHold and GetBucketObjectLockConfiguration")


class S3Store:
    """WORM store on an S3 bucket with Object Lock; see the module docstring."""

    process_safe = False  # a boto3 client's connections belong to the process that made them

    def __init__(self, url: str, client: Any, bucket: str, prefix: str = "", *, allow_unlocked: bool = False) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        self.allow_unlocked = allow_unlocked
        self._client = client
        self._lock_enabled: bool | None = None

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    @classmethod
    def from_url(cls, url: str, allow_unlocked: bool = False) -> S3Store:
        """Build the store; no request is sent until it is used (``assert_worm`` checks the bucket).

        Path-style addressing is used when ``endpoint_url`` is given (MinIO, SeaweedFS).
        Raises ConfigError for a malformed URL or an unknown option.
        """
        bucket, prefix, options = _parse_url(url)
        endpoint = options.get("endpoint_url")
        config = _CLIENT_CONFIG.merge(Config(s3={"addressing_style": "path"})) if endpoint else _CLIENT_CONFIG
        region = options.get("region") or ("us-east-1" if endpoint else None)
        client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)
        return cls(url, client, bucket, prefix, allow_unlocked=allow_unlocked)

    def put_locked(self, key: str, data: bytes, retain_until: datetime, *, legal_hold: bool = False) -> None:
        """Write ``data`` once under ``key``; see WormStore.put_locked. Raises Locked, StoreError."""
        check_key(key)
        until = _whole_second(check_retain_until(retain_until))
        digest = hashlib.sha256(data).digest()
        existing = self._head_or_none(key)
        if existing is not None:
            self._same_or_locked(key, existing, digest)
        elif not self._put_new(key, data, digest, self._lock_args(until, legal_hold)):
            # Another writer won the race between our HEAD and PUT.
            self._same_or_locked(key, self._head(key), digest)

    def get(self, key: str) -> bytes:
        """Return the object's bytes (checksum verified by botocore). Raises NotFound, StoreError."""
        with _translated(f"get {check_key(key)}"):
            body = self._client.get_object(Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED")["Body"]
            return bytes(body.read())

    def head(self, key: str) -> ObjectInfo:
        """Return size, retention, hold and sha256. Raises NotFound, StoreError."""
        meta = self._head(check_key(key))
        until = meta.get("ObjectLockRetainUntilDate")
        return ObjectInfo(
            key=key,
            size=int(meta["ContentLength"]),
            retain_until=until.astimezone(timezone.utc) if until else None,
            legal_hold=meta.get("ObjectLockLegalHoldStatus") == "ON",
            sha256=_sha256_of(meta),
        )

    def list(self, prefix: str) -> Iterator[str]:
        """Return every key starting with ``prefix``, in lexical (UTF-8 byte) order. Raises StoreError."""
        return self._iter_keys(check_prefix(prefix))

    def legal_hold(self, key: str) -> bool:
        """Whether any version of ``key`` is under legal hold (GetObjectLegalHold). Raises NotFound, StoreError."""
        versions, _markers = self._versions(check_key(key))
        return any(self._version_held(key, version) for version in versions)

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Turn the legal hold on or off on every version of ``key``. Raises NotFound, StoreError.

        Every version, not just the current one: the sealed version stays held even when a
        version was stacked on top of it or a plain DELETE hid it behind a delete marker.
        Idempotent (the server accepts ON over ON and OFF over OFF).
        """
        # Listing first also keeps PUTs off missing keys: SeaweedFS answers a legal-hold PUT
        # on a missing key with a 500, not a 404.
        versions, _markers = self._versions(check_key(key))
        status = "ON" if on else "OFF"
        for version in versions:
            with _translated(f"set legal hold {status} on {key}", denied_hint=_PERMISSIONS_HINT):
                self._client.put_object_legal_hold(
                    Bucket=self.bucket, Key=self._full(key), LegalHold={"Status": status}, **_version_arg(version),
                )

    def extend_retention(self, key: str, retain_until: datetime) -> None:
        """PutObjectRetention (COMPLIANCE) with ``retain_until`` on every version locked for less.

        COMPLIANCE retention can be lengthened, never shortened, by anyone: the server itself
        refuses an earlier date, and a version already locked as long is left alone.
        Raises NotFound, StoreError.
        """
        until = _whole_second(check_retain_until(retain_until))
        versions, _markers = self._versions(check_key(key))
        if self.allow_unlocked and not self._bucket_locked():
            return  # nothing to extend on a bucket without Object Lock (development only)
        for version in versions:
            current = self._head_version(key, version).get("ObjectLockRetainUntilDate")
            if current is not None and current >= until:
                continue
            with _translated(f"extend retention of {key}", denied_hint=_PERMISSIONS_HINT):
                self._client.put_object_retention(
                    Bucket=self.bucket, Key=self._full(key), VersionId=version,
                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
                )

    def delete_expired(self, key: str) -> None:
        """Delete every version of ``key`` (and its delete markers) once none is retained or held.

        The key is then really gone, not hidden behind a delete marker. Checks every version
        first and deletes nothing if one is held (Held) or retained (Locked); the server checks
        again, and a delete it refuses is Held or Locked too. Raises NotFound, StoreError.
        """
        versions, markers = self._versions(check_key(key))
        now = datetime.now(timezone.utc)
        metas = [self._head_version(key, version) for version in versions]
        if any(meta.get("ObjectLockLegalHoldStatus") == "ON" for meta in metas):
            raise Held(f"{key} is under legal hold")
        for meta in metas:
            until = meta.get("ObjectLockRetainUntilDate")
            if until is not None and until > now:
                raise Locked(f"{key} is retained until {until.astimezone(timezone.utc).isoformat()}")
        for version in versions:
            try:
                self._delete_version(key, version)
            except Locked as exc:  # the server's own refusal (a hold set since the check)
                if self._head_version(key, version).get("ObjectLockLegalHoldStatus") == "ON":
                    raise Held(f"{key} is under legal hold (refused by the server)") from exc
                raise
        for marker in markers:
            self._delete_version(key, marker)

    def ping(self) -> None:
        """HEAD the bucket. Raises StoreError."""
        with _translated(f"reach bucket {self.bucket}", missing=StoreError):
            self._client.head_bucket(Bucket=self.bucket)

    # -- decision 9 hooks, used by archiver.store.assert_worm --------------------------

    def check_lock_enabled(self) -> None:
        """Raises WormNotEnforced unless the bucket reports Object Lock enabled; StoreError."""
        if not self._bucket_locked():
            raise WormNotEnforced(f"bucket {self.bucket} at {self.url} does not have Object Lock enabled")

    def canary_delete(self, key: str) -> None:
        """Delete ``key``'s version with no client-side check. Raises Locked if the server refuses."""
        self._delete_version(key, self._head(check_key(key)).get("VersionId"))

    # -- internals --------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _head(self, key: str) -> Mapping[str, Any]:
        """HEAD the current version. Raises NotFound, StoreError."""
        with _translated(f"head {key}"):
            return dict(self._client.head_object(Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED"))

    def _head_version(self, key: str, version: str) -> Mapping[str, Any]:
        """HEAD one version (its retention and legal hold). Raises NotFound, StoreError."""
        with _translated(f"head {key} version {version}"):
            return dict(self._client.head_object(Bucket=self.bucket, Key=self._full(key), **_version_arg(version)))

    def _version_held(self, key: str, version: str) -> bool:
        """One version's legal-hold status. Raises NotFound, StoreError."""
        with _translated(f"read legal hold of {key} version {version}", denied_hint=_PERMISSIONS_HINT):
            try:
                answer = self._client.get_object_legal_hold(Bucket=self.bucket, Key=self._full(key), VersionId=version)
            except ClientError as exc:
                if _error_code(exc) == "NoSuchObjectLegalHold":  # a 404 meaning "never set", i.e. OFF
                    return False
                raise
        return bool(answer.get("LegalHold", {}).get("Status") == "ON")

    def _versions(self, key: str) -> tuple[Sequence[str], Sequence[str]]:
        """The version ids of ``key``'s versions and of its delete markers, newest first.

        Raises NotFound when the key has no version (only markers, or nothing), StoreError.
        """
        full = self._full(key)
        versions: list[str] = []
        markers: list[str] = []
        pages = self._client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full)
        with _translated(f"list versions of {key}", missing=StoreError, denied_hint=_PERMISSIONS_HINT):
            for page in pages:
                entries = page.get("Versions", []) + page.get("DeleteMarkers", [])
                versions += [str(v["VersionId"]) for v in page.get("Versions", []) if v["Key"] == full]
                markers += [str(m["VersionId"]) for m in page.get("DeleteMarkers", []) if m["Key"] == full]
                if any(entry["Key"] != full for entry in entries):
                    break  # listing is lexical: longer keys sharing the prefix come after all of ours
        if not versions:
            raise NotFound(f"no object {key}")
        return versions, markers

    def _head_or_none(self, key: str) -> Mapping[str, Any] | None:
        try:
            return self._head(key)
        except NotFound:
            return None

    def _same_or_locked(self, key: str, meta: Mapping[str, Any], digest: bytes) -> None:
        """Return if the stored object has sha256 ``digest``. Raises Locked otherwise, StoreError."""
        stored = _sha256_of(meta)
        if stored is None:  # written by something else: compare the bytes themselves
            stored = sha256_hex(self.get(key))
        if stored != digest.hex():
            raise Locked(f"{key} already exists with different bytes")

    def _put_new(self, key: str, data: bytes, digest: bytes, lock: Mapping[str, Any]) -> bool:
        """PUT only if no current version exists. Returns False if one appeared meanwhile. Raises StoreError."""
        with _translated(f"put {key}", denied_hint=_PERMISSIONS_HINT):
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=self._full(key), Body=data, IfNoneMatch="*",
                    ContentType="application/octet-stream", ChecksumSHA256=base64.b64encode(digest).decode(),
                    Metadata={"sha256": digest.hex()}, **lock,
                )
            except ClientError as exc:
                if _error_code(exc) == "PreconditionFailed":
                    return False
                raise
        return True

    def _lock_args(self, until: datetime, legal_hold: bool) -> dict[str, Any]:
        """The Object Lock parameters of a PUT; none on an unlocked bucket allowed for development."""
        if self.allow_unlocked and not self._bucket_locked():
            return {}  # the server would refuse lock headers; assert_worm has already warned
        args: dict[str, Any] = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}
        if legal_hold:
            args["ObjectLockLegalHoldStatus"] = "ON"
        return args

    def _bucket_locked(self) -> bool:
        """Whether the bucket has Object Lock enabled (asked once). Raises StoreError."""
        if self._lock_enabled is None:
            with _translated(f"read Object Lock configuration of {self.bucket}", missing=StoreError):
                self._lock_enabled = self._read_lock_enabled()
        return self._lock_enabled

    def _read_lock_enabled(self) -> bool:
        try:
            conf = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) == "ObjectLockConfigurationNotFoundError":
                return False
            raise
        return bool(conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def _delete_version(self, key: str, version: str | None) -> None:
        """Delete one version (never a bare delete marker). Raises Locked if refused, StoreError."""
        with _translated(f"delete {key}", denied=Locked):
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key), **_version_arg(version))
        logger.info("store.deleted bucket=%s key=%s version=%s", self.bucket, key, version)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        """Yield keys under ``prefix`` page by page. Raises StoreError."""
        skip = len(self.prefix) + 1 if self.prefix else 0
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._full(prefix))
        with _translated(f"list {prefix!r}", missing=StoreError):
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][skip:]


def _parse_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split ``s3://bucket/prefix?opts`` into bucket, prefix and options. Raises ConfigError."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    unknown = sorted(set(options) - _OPTIONS)
    if parts.scheme != "s3" or not parts.netloc or unknown or parts.username or parts.password:
        raise ConfigError(f"bad S3 store URL {url!r}",
                          hint="use s3://bucket[/prefix]?endpoint_url=...&region=...; credentials come from AWS_* env")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except StoreError as exc:
            raise ConfigError(f"bad prefix {prefix!r} in S3 store URL {url!r}") from exc
    return parts.netloc, prefix, options


def _whole_second(when: datetime) -> datetime:
    """Round up to the second: servers keep whole seconds, and rounding down would shorten retention."""
    return datetime.fromtimestamp(math.ceil(when.timestamp()), timezone.utc)


def _sha256_of(meta: Mapping[str, Any]) -> str | None:
    """The object's sha256 (hex) from its checksum header or our metadata, if reported."""
    checksum = meta.get("ChecksumSHA256")
    if checksum and "-" not in checksum:  # "-N" marks a multipart checksum-of-checksums
        return base64.b64decode(checksum).hex()
    stored = meta.get("Metadata", {}).get("sha256")
    return str(stored) if stored else None


def _version_arg(version: str | None) -> dict[str, str]:
    return {"VersionId": version} if version else {}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _translated(
    what: str,
    *,
    missing: type[StoreError] = NotFound,
    denied: type[StoreError] = StoreError,
    denied_hint: str | None = None,
) -> Iterator[None]:
    """Translate botocore errors raised while doing ``what``.

    404/NoSuchKey -> ``missing`` (NotFound), AccessDenied -> ``denied`` (Locked on deletes),
    anything else, including connection errors and timeouts -> StoreError.
    """
    try:
        yield
    except ClientError as exc:
        code = _error_code(exc)
        if code in _MISSING:
            raise missing(f"{what}: not found ({code})") from exc
        if code == "AccessDenied":
            raise denied(f"{what}: access denied", hint=None if denied is Locked else denied_hint) from exc
        hint = "create the bucket with Object Lock enabled" if code == "NoSuchBucket" else None
        raise StoreError(f"{what}: {code or 'error'} from S3", hint=hint) from exc
    except NoCredentialsError as exc:
        raise StoreError(f"{what}: no S3 credentials", hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from exc
    except BotoCoreError as exc:
        raise StoreError(f"{what}: {type(exc).__name__}: {exc}", hint="check endpoint_url and that S3 is up") from exc
