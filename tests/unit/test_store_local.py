"""The local driver's own promises, beyond the shared contract: files, lock records, warnings."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from archiver.errors import ConfigError, InsecureStoreWarning, Locked, NotFound, StoreError, WormNotEnforced
from archiver.store import CANARY_PREFIX, ObjectInfo, assert_worm, open_store
from archiver.store.local import LocalStore, _Lock
from tests.serving import wait_until

KEY = "segments/default/000000000001-000000000100-ab.jsonl.gz"


def later(**delta: float) -> datetime:
    """Now (UTC) plus ``delta``."""
    return datetime.now(timezone.utc) + timedelta(**delta)


def wait_past(when: datetime) -> None:
    """Wait until the clock has passed ``when`` (a retain-until): the store compares with the clock."""
    wait_until(lambda: datetime.now(timezone.utc) > when, 10, f"the clock to pass {when.isoformat()}", interval=0.02)


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend to run as root whatever the real uid, so the warning is deterministic."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.fixture
def store(tmp_path: Path, as_root: None) -> LocalStore:
    """A fresh local store (its root warning is checked in its own test)."""
    with pytest.warns(InsecureStoreWarning):
        return LocalStore.from_url((tmp_path / "worm").as_uri())


def test_object_is_written_read_only_with_no_temp_files_left(store: LocalStore) -> None:
    store.put_locked(KEY, b"evidence", later(days=1))
    path = store.root / "objects" / KEY
    assert path.read_bytes() == b"evidence"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert stat.S_IMODE((store.root / "locks" / f"{KEY}.json").stat().st_mode) == 0o400
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_lock_record_holds_retention_hold_and_digest(store: LocalStore) -> None:
    until = later(days=3)
    store.put_locked(KEY, b"evidence", until, legal_hold=True)
    doc = json.loads((store.root / "locks" / f"{KEY}.json").read_text())
    assert datetime.fromisoformat(doc["retain_until"]) == until
    assert doc["legal_hold"] is True
    assert doc["sha256"] == store.head(KEY).sha256


def test_lock_record_is_never_shortened(store: LocalStore) -> None:
    until = later(days=3)
    store.put_locked(KEY, b"evidence", until)
    with pytest.raises(Locked, match="never shortened"):
        store._write_lock(KEY, _Lock(until - timedelta(seconds=1), False, "00"))
    assert store.head(KEY).retain_until == until
    store._write_lock(KEY, _Lock(until + timedelta(days=1), False, store.head(KEY).sha256 or ""))
    assert store.head(KEY).retain_until == until + timedelta(days=1)


def test_put_after_a_crash_keeps_the_longer_retention(store: LocalStore) -> None:
    # A crash between writing the lock record and the object leaves only the record.
    longer = later(days=30)
    store._write_lock(KEY, _Lock(longer, True, "00"))
    store.put_locked(KEY, b"evidence", later(days=1))
    info = store.head(KEY)
    assert (info.retain_until, info.legal_hold, store.get(KEY)) == (longer, True, b"evidence")


def test_missing_lock_record_fails_closed(store: LocalStore) -> None:
    until = later(seconds=0.2)
    store.put_locked(KEY, b"evidence", until)
    (store.root / "locks" / f"{KEY}.json").unlink()
    wait_past(until)
    with pytest.raises(StoreError, match="missing"):
        store.delete_expired(KEY)
    with pytest.raises(StoreError, match="missing"):
        store.head(KEY)
    assert store.get(KEY) == b"evidence"


def test_corrupt_lock_record_fails_closed(store: LocalStore) -> None:
    store.put_locked(KEY, b"evidence", later(days=1))
    lock = store.root / "locks" / f"{KEY}.json"
    lock.chmod(0o644)
    lock.write_text("{not json")
    with pytest.raises(StoreError, match="corrupt"):
        store.delete_expired(KEY)


def test_key_that_collides_with_an_object_folder_is_a_store_error(store: LocalStore) -> None:
    store.put_locked("media/ab", b"photo", later(days=1))
    with pytest.raises(StoreError) as caught:
        store.put_locked("media/ab/c", b"x", later(days=1))
    assert type(caught.value) is StoreError
    with pytest.raises(NotFound):
        store.get("media/ab/c")
    assert list(store.list("media/ab/")) == []


def test_concurrent_puts_of_one_key_leave_exactly_one_object(store: LocalStore) -> None:
    outcomes: list[str] = []

    def put(data: bytes) -> None:
        try:
            store.put_locked(KEY, data, later(days=1))
            outcomes.append("ok")
        except Locked:
            outcomes.append("locked")

    threads = [threading.Thread(target=put, args=(b"same" if i % 2 else b"other",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = store.get(KEY)
    assert outcomes.count("ok") == 4 and outcomes.count("locked") == 4
    assert store.head(KEY).sha256 == _Lock.from_bytes((store.root / "locks" / f"{KEY}.json").read_bytes(), KEY).sha256
    assert winner in (b"same", b"other")


def test_root_warning_once_per_store(tmp_path: Path, as_root: None) -> None:
    with pytest.warns(InsecureStoreWarning, match="software WORM.*root") as record:
        store = open_store((tmp_path / "worm").as_uri())
        store.put_locked(KEY, b"x", later(days=1))
        store.get(KEY)
        assert_worm(store)
    assert len(record) == 1


def test_no_root_warning_for_other_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureStoreWarning)
        open_store((tmp_path / "worm").as_uri())


@pytest.mark.parametrize("suffix", ["", "/"])
def test_url_forms(tmp_path: Path, as_root: None, suffix: str) -> None:
    folder = tmp_path / "with space"
    with pytest.warns(InsecureStoreWarning):
        assert LocalStore.from_url(folder.as_uri() + suffix).root == folder
        assert LocalStore.from_url(f"file://localhost{folder}").root == folder


@pytest.mark.parametrize("url", ["file://otherhost/var/worm", "file:relative/worm", "file:///var/worm?x=1"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        LocalStore.from_url(url)


def test_ping_notices_a_missing_folder(store: LocalStore) -> None:
    store.ping()
    (store.root / "locks").rename(store.root / "gone")
    with pytest.raises(StoreError, match="missing"):
        store.ping()


class _DeletesEarly(LocalStore):
    """A broken driver: accepts locks but deletes whenever asked."""

    def delete_expired(self, key: str) -> None:
        (self.root / "objects" / key).unlink()


def test_assert_worm_catches_a_store_that_deletes_early(tmp_path: Path, as_root: None) -> None:
    with pytest.warns(InsecureStoreWarning):
        broken = _DeletesEarly.from_url((tmp_path / "worm").as_uri())
    with pytest.raises(WormNotEnforced, match="was deleted"):
        assert_worm(broken)


class _ForgetsRetention(LocalStore):
    """A broken driver: stores objects but reports no retention."""

    def head(self, key: str) -> ObjectInfo:
        return dataclasses.replace(super().head(key), retain_until=None)


def test_assert_worm_catches_a_store_that_does_not_report_retention(tmp_path: Path, as_root: None) -> None:
    with pytest.warns(InsecureStoreWarning):
        broken = _ForgetsRetention.from_url((tmp_path / "worm").as_uri())
    with pytest.raises(WormNotEnforced, match="without its retention"):
        assert_worm(broken)


def test_assert_worm_sweeps_expired_canaries_only(store: LocalStore) -> None:
    stale = f"{CANARY_PREFIX}20000101T000000Z-000000000000"
    held = f"{CANARY_PREFIX}20000101T000000Z-111111111111"
    until = later(seconds=0.2)
    store.put_locked(stale, b"old canary", until)
    store.put_locked(held, b"old canary", later(days=1))  # retention extended: must survive
    wait_past(until)
    assert_worm(store)
    canaries = list(store.list(CANARY_PREFIX))
    assert stale not in canaries and held in canaries and len(canaries) == 2
