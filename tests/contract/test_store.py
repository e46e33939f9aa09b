"""One contract for every WormStore driver: ``local`` on tmp_path, ``s3`` on a real SeaweedFS.

The S3 half needs the server scripts/test starts; without it those tests fail, never skip.
S3-only tests at the bottom go behind the driver's back with boto3 to show that the
*server* enforces the lock, not just our client-side checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import pytest

from archiver.errors import ConfigError, Held, InsecureStoreWarning, Locked, NotFound, StoreError, WormNotEnforced
from archiver.store import CANARY_PREFIX, WormStore, assert_worm, open_store
from tests.serving import wait_until

SEGMENT = "segments/default/000000000001-000000000100-" + "ab" * 16 + ".jsonl.gz"
MEDIA = "media/" + hashlib.sha256(b"photo").hexdigest()
CHECKPOINT = "checkpoints/000000000100.json"
PROTOCOL_METHODS = {"put_locked", "get", "head", "list", "legal_hold", "set_legal_hold", "delete_expired", "ping",
                    "check_lock_enabled", "canary_delete", "extend_retention"}
PROTOCOL_FLAGS = {"process_safe", "allow_unlocked"}


def later(**delta: float) -> datetime:
    """Now (UTC) plus ``delta``."""
    return datetime.now(timezone.utc) + timedelta(**delta)


def wait_past(when: datetime | None) -> None:
    """Wait until ``when`` (a retain-until the store reported) has passed, with 0.3 s for the server's clock."""
    assert when is not None
    margin = when + timedelta(seconds=0.3)
    wait_until(lambda: datetime.now(timezone.utc) > margin, 30, f"the clock to pass {when.isoformat()}", interval=0.02)


def open_local(root: Any) -> WormStore:
    """Open a local store, checking that it names its weakness when run as root."""
    expect = pytest.warns(InsecureStoreWarning, match="root") if os.geteuid() == 0 else contextlib.nullcontext()
    with expect:
        return open_store(root.as_uri())


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> WormStore:
    """Each driver in turn, empty."""
    if request.param == "local":
        return open_local(tmp_path / "worm")
    server: Any = request.getfixturevalue("s3_credentials")
    bucket: str = request.getfixturevalue("s3_bucket")
    # A fresh key prefix per test: objects stay locked for a day, so no test can clean up.
    return open_store(server.store_url(bucket, f"t-{uuid.uuid4().hex[:12]}"))


# -- the contract ----------------------------------------------------------------------


def test_implements_every_protocol_method(store: WormStore) -> None:
    declared = {name for name, value in vars(WormStore).items() if callable(value) and not name.startswith("_")}
    assert declared == PROTOCOL_METHODS
    assert isinstance(store, WormStore)
    assert all(callable(getattr(store, name)) for name in PROTOCOL_METHODS)
    assert set(WormStore.__annotations__) - {"url"} == PROTOCOL_FLAGS
    assert all(isinstance(getattr(store, name), bool) for name in PROTOCOL_FLAGS)
    assert store.url.startswith(("file://", "s3://"))


def test_ping(store: WormStore) -> None:
    store.ping()


@pytest.mark.parametrize("data", [b"\x00segment\xff" * 1000, b"", os.urandom(5 * 1024 * 1024)],
                         ids=["small", "empty", "5MiB"])
def test_put_get_head_round_trip(store: WormStore, data: bytes) -> None:
    until = later(days=1)
    store.put_locked(SEGMENT, data, until)
    assert store.get(SEGMENT) == data
    info = store.head(SEGMENT)
    assert (info.key, info.size, info.legal_hold) == (SEGMENT, len(data), False)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    # Never shorter than asked; S3 keeps whole seconds, so up to one second longer.
    assert info.retain_until is not None and until <= info.retain_until <= until + timedelta(seconds=1)
    assert info.retain_until.utcoffset() == timedelta(0)


def test_put_with_legal_hold(store: WormStore) -> None:
    store.put_locked(MEDIA, b"photo", later(days=1), legal_hold=True)
    assert store.head(MEDIA).legal_hold is True


def test_identical_put_again_is_a_no_op(store: WormStore) -> None:
    store.put_locked(CHECKPOINT, b"{}", later(days=1))
    before = store.head(CHECKPOINT)
    store.put_locked(CHECKPOINT, b"{}", later(days=2), legal_hold=True)
    assert store.head(CHECKPOINT) == before
    assert list(store.list("checkpoints/")) == [CHECKPOINT]


def test_put_of_different_bytes_is_locked(store: WormStore) -> None:
    store.put_locked(CHECKPOINT, b"original", later(days=1))
    with pytest.raises(Locked):
        store.put_locked(CHECKPOINT, b"tampered", later(days=1))
    assert store.get(CHECKPOINT) == b"original"
    assert store.head(CHECKPOINT).sha256 == hashlib.sha256(b"original").hexdigest()


def test_delete_before_retain_until_is_locked(store: WormStore) -> None:
    store.put_locked(SEGMENT, b"evidence", later(days=1))
    with pytest.raises(Locked):
        store.delete_expired(SEGMENT)
    assert store.get(SEGMENT) == b"evidence"


def test_delete_after_retain_until(store: WormStore) -> None:
    store.put_locked(SEGMENT, b"evidence", later(seconds=2))
    with pytest.raises(Locked):
        store.delete_expired(SEGMENT)
    wait_past(store.head(SEGMENT).retain_until)
    store.delete_expired(SEGMENT)
    with pytest.raises(NotFound):
        store.get(SEGMENT)
    with pytest.raises(NotFound):
        store.head(SEGMENT)
    assert list(store.list("")) == []


def test_legal_hold_blocks_delete_even_after_retain_until(store: WormStore) -> None:
    store.put_locked(MEDIA, b"photo", later(seconds=2), legal_hold=True)
    wait_past(store.head(MEDIA).retain_until)
    with pytest.raises(Held):
        store.delete_expired(MEDIA)
    store.set_legal_hold(MEDIA, False)
    assert store.head(MEDIA).legal_hold is False
    store.delete_expired(MEDIA)
    with pytest.raises(NotFound):
        store.head(MEDIA)


def test_legal_hold_set_later_refuses_every_delete_until_released(store: WormStore) -> None:
    store.put_locked(SEGMENT, b"evidence", later(seconds=2))
    assert store.legal_hold(SEGMENT) is False
    store.set_legal_hold(SEGMENT, True)
    assert store.legal_hold(SEGMENT) is True and store.head(SEGMENT).legal_hold is True
    wait_past(store.head(SEGMENT).retain_until)
    with pytest.raises(Held, match="legal hold") as caught:
        store.delete_expired(SEGMENT)
    assert caught.value.code == "legal-hold" and caught.value.http_status == 409
    # The self-test's delete skips the driver's checks on S3: the server refuses it.
    with pytest.raises(Locked):
        store.canary_delete(SEGMENT)
    assert (store.get(SEGMENT), store.legal_hold(SEGMENT)) == (b"evidence", True)
    store.set_legal_hold(SEGMENT, False)
    assert store.legal_hold(SEGMENT) is False
    store.delete_expired(SEGMENT)
    gone: list[Callable[[], object]] = [lambda: store.get(SEGMENT), lambda: store.head(SEGMENT),
                                        lambda: store.legal_hold(SEGMENT), lambda: store.set_legal_hold(SEGMENT, True)]
    for call in gone:
        with pytest.raises(NotFound):
            call()
    assert list(store.list("")) == []


def test_legal_hold_on_and_off_are_idempotent(store: WormStore) -> None:
    store.put_locked(MEDIA, b"photo", later(days=1))
    for _ in range(2):
        store.set_legal_hold(MEDIA, True)
        assert store.legal_hold(MEDIA) is True and store.head(MEDIA).legal_hold is True
    with pytest.raises(Held):
        store.delete_expired(MEDIA)
    for _ in range(2):
        store.set_legal_hold(MEDIA, False)
        assert store.legal_hold(MEDIA) is False and store.head(MEDIA).legal_hold is False
    # Released, but still retained: refused for the retention, not the hold.
    with pytest.raises(Locked, match="retained until") as caught:
        store.delete_expired(MEDIA)
    assert not isinstance(caught.value, Held)
    assert store.get(MEDIA) == b"photo"


def test_set_legal_hold_keeps_retention(store: WormStore) -> None:
    store.put_locked(MEDIA, b"photo", later(days=1))
    until = store.head(MEDIA).retain_until
    store.set_legal_hold(MEDIA, True)
    assert (store.head(MEDIA).legal_hold, store.head(MEDIA).retain_until) == (True, until)
    with pytest.raises(Locked):
        store.delete_expired(MEDIA)
    store.set_legal_hold(MEDIA, False)
    assert (store.head(MEDIA).legal_hold, store.head(MEDIA).retain_until) == (False, until)


@pytest.mark.parametrize("until", [later(seconds=-1), datetime.now()], ids=["past", "naive"])
def test_past_or_naive_retain_until_is_refused(store: WormStore, until: datetime) -> None:
    with pytest.raises(StoreError) as caught:
        store.put_locked(SEGMENT, b"x", until)
    assert not isinstance(caught.value, (Locked, NotFound))
    with pytest.raises(NotFound):
        store.head(SEGMENT)


def test_list_is_lexical_and_filtered_by_prefix(store: WormStore) -> None:
    keys = [
        "segments/default/000000000001-000000000100-aa.jsonl.gz",
        "segments/default/000000000101-000000000200-bb.jsonl.gz",
        "segments/default/000000001001-000000002000-cc.jsonl.gz",
        "segments/legal-7y/000000000001-000000000009-dd.jsonl.gz",
        "media/00ff", "media/ff00", "media/0a",
        "checkpoints/000000000100.json", "checkpoints/000000000200.json",
    ]
    for key in random.sample(keys, len(keys)):
        store.put_locked(key, key.encode(), later(days=1))

    def under(prefix: str) -> list[str]:
        return sorted(k for k in keys if k.startswith(prefix))

    for prefix in ("", "segments/", "segments/default/", "segments/default/0000000001", "seg", "media/0", "m"):
        assert list(store.list(prefix)) == under(prefix), prefix
    assert list(store.list("nothing/")) == []
    assert list(store.list("media/00ff/")) == []


def test_missing_key_is_not_found(store: WormStore) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.get(MEDIA), lambda: store.head(MEDIA), lambda: store.legal_hold(MEDIA),
        lambda: store.set_legal_hold(MEDIA, True), lambda: store.delete_expired(MEDIA),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()


BAD_KEYS = ["", "/", "/etc/passwd", "a//b", "media/", "../x", "a/../b", "a/./b", ".hidden", "a/.b",
            "a\\b", "a\x00b", "a b", "x" * 2000]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(store: WormStore, key: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put_locked(key, b"x", later(days=1)), lambda: store.get(key), lambda: store.head(key),
        lambda: store.legal_hold(key), lambda: store.set_legal_hold(key, True), lambda: store.delete_expired(key),
    ]
    for call in calls:
        with pytest.raises(StoreError) as caught:
            call()
        assert type(caught.value) is StoreError


@pytest.mark.parametrize("prefix", ["/", "/etc", "../", "a//", "a/../", ".x"])
def test_bad_list_prefixes_are_refused(store: WormStore, prefix: str) -> None:
    with pytest.raises(StoreError):
        store.list(prefix)


def test_assert_worm_passes_and_leaves_a_locked_canary(store: WormStore) -> None:
    assert_worm(store)
    canaries = list(store.list(CANARY_PREFIX))
    assert len(canaries) == 1
    info = store.head(canaries[0])
    assert info.retain_until is not None and info.retain_until > later(hours=23)
    with pytest.raises(Locked):
        store.delete_expired(canaries[0])


# -- S3 only: the server enforces the lock, not just this driver -------------------------


@pytest.fixture
def s3(s3_credentials: Any, s3_bucket: str) -> tuple[WormStore, Any, str, str]:
    """(store, raw boto3 client, bucket, key prefix) for poking at the bucket directly."""
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    return open_store(s3_credentials.store_url(s3_bucket, prefix)), s3_credentials.client(), s3_bucket, prefix


def error_code(call: Callable[[], object]) -> str:
    """Run a raw boto3 call that must fail; return its S3 error code."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


@pytest.mark.s3
def test_s3_sealed_version_cannot_be_deleted_directly(s3: tuple[WormStore, Any, str, str]) -> None:
    store, client, bucket, prefix = s3
    store.put_locked(SEGMENT, b"evidence", later(days=1))
    full = f"{prefix}/{SEGMENT}"
    version = client.head_object(Bucket=bucket, Key=full)["VersionId"]
    assert error_code(lambda: client.delete_object(Bucket=bucket, Key=full, VersionId=version)) == "AccessDenied"
    assert error_code(lambda: client.delete_object(
        Bucket=bucket, Key=full, VersionId=version, BypassGovernanceRetention=True)) == "AccessDenied"
    assert store.get(SEGMENT) == b"evidence"


@pytest.mark.s3
def test_s3_sealed_version_cannot_be_overwritten_or_unlocked(s3: tuple[WormStore, Any, str, str]) -> None:
    store, client, bucket, prefix = s3
    store.put_locked(SEGMENT, b"evidence", later(days=1))
    full = f"{prefix}/{SEGMENT}"
    version = client.head_object(Bucket=bucket, Key=full)["VersionId"]
    for mode, until in (("COMPLIANCE", later(hours=1)), ("GOVERNANCE", later(days=2))):
        retention = {"Mode": mode, "RetainUntilDate": until}
        shorten = partial(client.put_object_retention, Bucket=bucket, Key=full, VersionId=version, Retention=retention)
        assert error_code(shorten) == "AccessDenied"
    # A raw PUT can only stack a new version on top; the sealed version keeps its bytes,
    # and the driver refuses to treat the key as its own.
    client.put_object(Bucket=bucket, Key=full, Body=b"tampered")
    assert client.get_object(Bucket=bucket, Key=full, VersionId=version)["Body"].read() == b"evidence"
    with pytest.raises(Locked):
        store.put_locked(SEGMENT, b"evidence", later(days=1))


@pytest.mark.s3
def test_s3_expiry_deletes_the_version_and_the_server_enforces_holds(s3: tuple[WormStore, Any, str, str]) -> None:
    store, client, bucket, prefix = s3
    store.put_locked(SEGMENT, b"expired", later(seconds=2))
    store.put_locked(MEDIA, b"held", later(seconds=2), legal_hold=True)
    wait_past(store.head(MEDIA).retain_until)
    held = f"{prefix}/{MEDIA}"
    version = client.head_object(Bucket=bucket, Key=held)["VersionId"]
    assert error_code(lambda: client.delete_object(Bucket=bucket, Key=held, VersionId=version)) == "AccessDenied"
    store.delete_expired(SEGMENT)
    left = client.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/{SEGMENT}")
    assert left.get("Versions", []) == [] and left.get("DeleteMarkers", []) == []


@pytest.mark.s3
def test_s3_assert_worm_refuses_a_bucket_without_object_lock(s3_credentials: Any) -> None:
    store = open_store(s3_credentials.store_url(s3_credentials.make_bucket(locked=False)))
    with pytest.raises(WormNotEnforced, match="Object Lock"):
        assert_worm(store)


@pytest.mark.s3
def test_s3_allow_unlocked_warns_loudly_and_still_works(s3_credentials: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = s3_credentials.store_url(s3_credentials.make_bucket(locked=False))
    store = open_store(url, allow_unlocked=True)
    loud = pytest.warns(InsecureStoreWarning, match="Object Lock")
    with caplog.at_level(logging.ERROR, logger="archiver.store"), loud:
        assert_worm(store)
    assert "store.worm_not_enforced" in caplog.text
    store.put_locked(SEGMENT, b"dev", later(days=1))
    assert store.get(SEGMENT) == b"dev"


@pytest.mark.s3
def test_s3_unreachable_endpoint_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call raises StoreError itself (no botocore error leaks); how fast is measured by scripts/bench."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unused")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unused")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    store = open_store("s3://archive?endpoint_url=http://127.0.0.1:1&region=us-east-1")
    calls: list[Callable[[], object]] = [
        store.ping, lambda: store.put_locked(SEGMENT, b"x", later(days=1)),
        lambda: list(store.list("")), lambda: assert_worm(store),
    ]
    for call in calls:
        with pytest.raises(StoreError) as caught:
            call()
        assert type(caught.value) is StoreError


@pytest.mark.s3
@pytest.mark.parametrize("url", [
    "s3://", "s3://bucket?endpoint=http://x", "s3://key:secret@bucket", "s3://bucket/../up",
])
def test_s3_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


# -- S3 only: SeaweedFS itself enforces PutObjectLegalHold --------------------------------


def raw_hold(client: Any, bucket: str, key: str, version: str) -> str:
    """The legal-hold status the server reports for one version (GetObjectLegalHold)."""
    return str(client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version)["LegalHold"]["Status"])


def raw_versions(client: Any, bucket: str, key: str) -> tuple[list[str], list[str]]:
    """(version ids, delete-marker ids) of exactly ``key``, straight from the server."""
    listing = client.list_object_versions(Bucket=bucket, Prefix=key)
    return ([v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key],
            [m["VersionId"] for m in listing.get("DeleteMarkers", []) if m["Key"] == key])


@pytest.mark.s3
def test_s3_server_refuses_deleting_a_held_version_until_the_hold_is_off(s3: tuple[WormStore, Any, str, str]) -> None:
    """Deletes here go straight to SeaweedFS with boto3, bypassing the archiver's checks."""
    store, client, bucket, prefix = s3
    store.put_locked(SEGMENT, b"evidence", later(seconds=2))
    full = f"{prefix}/{SEGMENT}"
    version = client.head_object(Bucket=bucket, Key=full)["VersionId"]
    assert error_code(partial(client.get_object_legal_hold, Bucket=bucket, Key=full, VersionId=version)) \
        == "NoSuchObjectLegalHold"  # never set: SeaweedFS answers 404, the store reads it as off
    assert store.legal_hold(SEGMENT) is False
    store.set_legal_hold(SEGMENT, True)  # PutObjectLegalHold after the PUT, as a hold does
    assert raw_hold(client, bucket, full, version) == "ON"
    wait_past(store.head(SEGMENT).retain_until)
    delete = partial(client.delete_object, Bucket=bucket, Key=full, VersionId=version)
    assert error_code(delete) == "AccessDenied"
    assert error_code(partial(delete, BypassGovernanceRetention=True)) == "AccessDenied"
    assert client.get_object(Bucket=bucket, Key=full, VersionId=version)["Body"].read() == b"evidence"
    store.set_legal_hold(SEGMENT, False)
    assert raw_hold(client, bucket, full, version) == "OFF"
    delete()
    assert raw_versions(client, bucket, full) == ([], [])


@pytest.mark.s3
def test_s3_plain_delete_of_a_held_object_only_hides_it(s3: tuple[WormStore, Any, str, str]) -> None:
    """A DELETE without a version id is allowed (it only adds a delete marker, as on AWS);
    the held version stays, and the store still reaches it to release and dispose of it."""
    store, client, bucket, prefix = s3
    store.put_locked(MEDIA, b"photo", later(seconds=2), legal_hold=True)
    full = f"{prefix}/{MEDIA}"
    until = store.head(MEDIA).retain_until
    version = client.head_object(Bucket=bucket, Key=full)["VersionId"]
    assert client.delete_object(Bucket=bucket, Key=full)["DeleteMarker"] is True
    with pytest.raises(NotFound):
        store.head(MEDIA)
    assert raw_hold(client, bucket, full, version) == "ON" and store.legal_hold(MEDIA) is True
    assert client.get_object(Bucket=bucket, Key=full, VersionId=version)["Body"].read() == b"photo"
    wait_past(until)
    with pytest.raises(Held):
        store.delete_expired(MEDIA)
    store.set_legal_hold(MEDIA, False)
    assert raw_hold(client, bucket, full, version) == "OFF" and store.legal_hold(MEDIA) is False
    store.delete_expired(MEDIA)
    assert raw_versions(client, bucket, full) == ([], [])


@pytest.mark.s3
def test_s3_legal_hold_reaches_every_version_of_the_key(s3: tuple[WormStore, Any, str, str]) -> None:
    store, client, bucket, prefix = s3
    store.put_locked(SEGMENT, b"evidence", later(seconds=2))
    full = f"{prefix}/{SEGMENT}"
    # Someone with write access stacks a version on top (short-locked, so the test can end clean).
    client.put_object(Bucket=bucket, Key=full, Body=b"tampered", ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=later(seconds=2))
    versions, _ = raw_versions(client, bucket, full)
    assert len(versions) == 2
    store.set_legal_hold(SEGMENT, True)
    assert [raw_hold(client, bucket, full, v) for v in versions] == ["ON", "ON"]
    wait_past(max(client.head_object(Bucket=bucket, Key=full, VersionId=v)["ObjectLockRetainUntilDate"]
                  for v in versions))
    for version in versions:
        assert error_code(partial(client.delete_object, Bucket=bucket, Key=full, VersionId=version)) == "AccessDenied"
    with pytest.raises(Held):
        store.delete_expired(SEGMENT)
    # One version released behind the store's back: still nothing is deleted.
    client.put_object_legal_hold(Bucket=bucket, Key=full, VersionId=versions[0], LegalHold={"Status": "OFF"})
    with pytest.raises(Held):
        store.delete_expired(SEGMENT)
    assert store.legal_hold(SEGMENT) is True
    assert raw_versions(client, bucket, full)[0] == versions
    store.set_legal_hold(SEGMENT, False)
    assert [raw_hold(client, bucket, full, v) for v in versions] == ["OFF", "OFF"]
    assert store.legal_hold(SEGMENT) is False
    store.delete_expired(SEGMENT)
    assert raw_versions(client, bucket, full) == ([], [])


# -- extending retention ---------------------------------------------------------------


def test_extend_retention_lengthens_the_lock_and_never_shortens_it(store: WormStore) -> None:
    store.put_locked(MEDIA, b"evidence", later(seconds=2))
    first = store.head(MEDIA).retain_until
    longer = later(days=3)
    store.extend_retention(MEDIA, longer)
    info = store.head(MEDIA)
    assert info.retain_until is not None and longer <= info.retain_until <= longer + timedelta(seconds=1)
    store.extend_retention(MEDIA, later(days=1))  # earlier than the lock: a no-op, never shorter
    assert store.head(MEDIA).retain_until == info.retain_until
    assert (store.head(MEDIA).legal_hold, store.get(MEDIA)) == (False, b"evidence")
    wait_past(first)
    with pytest.raises(Locked):  # still locked after the first date has passed
        store.delete_expired(MEDIA)


def test_extend_retention_keeps_the_legal_hold(store: WormStore) -> None:
    store.put_locked(MEDIA, b"evidence", later(hours=1), legal_hold=True)
    store.extend_retention(MEDIA, later(days=2))
    assert store.legal_hold(MEDIA) is True


def test_extend_retention_of_a_missing_object_or_to_a_past_date_is_refused(store: WormStore) -> None:
    with pytest.raises(NotFound):
        store.extend_retention("media/" + "0" * 64, later(days=1))
    store.put_locked(MEDIA, b"evidence", later(hours=1))
    with pytest.raises(StoreError):
        store.extend_retention(MEDIA, later(seconds=-5))
