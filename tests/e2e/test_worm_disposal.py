"""Deleting WORM objects whose records are all disposed (issue 9, point 3), on the real servers:
SeaweedFS with Object Lock (its own refusals read back with boto3) and the local store, SQLite
and PostgreSQL catalogs.

Records of the ``short-test`` class are kept five seconds (``PT5S``); a test extends a
segment's real lock by a few seconds to see the delete refused, then waits until it has
really passed (a condition, never a fixed sleep).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from archiver.catalog import Segment, WormDeletion
from archiver.cli import main as cli
from tests import backends
from tests.contract.test_catalog import _pg_schema_url
from tests.conftest import make_env
from tests.e2e.test_disposition import SHORT, Archive
from tests.e2e.test_holds import message
from tests.e2e.test_pipeline import report
from tests.fakegraph import FakeGraph, fake_graph  # noqa: F401  (the fixture)
from tests.serving import ROOT

PHOTO_OWNER = "4479460001234"  # the sender of test_media's image message

POLICY = f"""classes:
  - name: short-test
    retain: PT5S
    erasable: true
    match:
      contact: ["{SHORT}", "{PHOTO_OWNER}"]
  - name: default
    retain: 7y
"""


class Worm(Archive):
    """An in-process archiver, with what the WORM deletion tests look at."""

    bucket: str | None = None

    def segment(self, seq: int) -> Segment:
        with self.services.sessions() as session:
            seg = session.get(Segment, self.record(seq).segment_id)
            assert seg is not None
            return seg

    def exists(self, key: str) -> bool:
        try:
            self.services.store.head(key)
        except Exception as exc:  # noqa: BLE001 - NotFound is the only answer expected
            assert type(exc).__name__ == "NotFound", exc
            return False
        return True

    def dispose(self) -> dict[str, Any]:
        got = self.cli("dispose", "--json")
        assert got.exit_code == 0, got.output
        return dict(json.loads(got.stdout))

    def deletion(self, key: str) -> WormDeletion | None:
        with self.services.sessions() as session:
            return session.get(WormDeletion, key)

    def s3_versions(self, key: str) -> list[str]:
        full = f"archive/{key}"
        listed = backends.s3_client().list_object_versions(Bucket=self.bucket, Prefix=full)
        return [v["VersionId"] for v in listed.get("Versions", []) if v["Key"] == full]


def wait_until(when: datetime) -> None:
    while datetime.now(timezone.utc) <= when:
        time.sleep(0.1)


def _worm(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          extra: dict[str, str] | None = None) -> Iterator[Worm]:
    catalog, store = getattr(request, "param", ("sqlite", "s3"))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "retention.yaml").write_text(POLICY)
    env_extra = {"ARCHIVER_POLICIES": str(policies), **(extra or {})}
    bucket = None
    if store == "s3":
        bucket, env_extra["ARCHIVER_STORE_URL"] = backends.locked_store_url(monkeypatch)
    urls = iter(_pg_schema_url()) if catalog == "postgresql" else None
    if urls is not None:
        env_extra["ARCHIVER_CATALOG_URL"] = next(urls)
    env = make_env(tmp_path / "home", **env_extra)
    if store == "s3":
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env[k] = os.environ[k]
    arch = Worm(env)
    arch.bucket = bucket
    try:
        yield arch
    finally:
        arch.services.close()
        if urls is not None:
            next(urls, None)


STORES = [pytest.param(("sqlite", "s3"), marks=pytest.mark.s3),
          pytest.param(("postgresql", "s3"), marks=[pytest.mark.s3, pytest.mark.postgres]),
          ("sqlite", "local")]


def _ids(p: Any) -> str:
    return "-".join(p) if isinstance(p, tuple) else str(p)


@pytest.fixture(params=STORES, ids=_ids)
def arch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         fake_graph: FakeGraph) -> Iterator[Worm]:  # noqa: F811
    yield from _worm(request, tmp_path, monkeypatch, {"ARCHIVER_GRAPH_URL": fake_graph.url})


@pytest.fixture(params=[STORES[0], STORES[1]], ids=_ids)
def s3arch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worm]:
    yield from _worm(request, tmp_path, monkeypatch)


def test_seaweedfs_itself_refuses_a_delete_before_the_lock_passes_and_the_next_run_retries(
        s3arch: Worm, monkeypatch: pytest.MonkeyPatch) -> None:
    arch = s3arch
    (short,) = arch.ingest(message("wamid.S1", "locked a little longer", SHORT))
    seg = arch.segment(short)
    lock = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=12)
    arch.services.store.extend_retention(seg.key, lock)  # the real lock, longer than the catalog says
    arch.wait_expired(short)
    wait_until(seg.retain_until)
    store: Any = arch.services.store

    def server_only(key: str) -> None:  # skips the driver's own check: only SeaweedFS may refuse
        versions, _ = store._versions(key)  # noqa: SLF001
        for version in versions:
            store._delete_version(key, version)  # noqa: SLF001

    monkeypatch.setattr(store, "delete_expired", server_only)
    out = arch.dispose()
    assert not arch.key_alive(short)
    assert out["worm"]["pending"] == [{"object": seg.key, "kind": "segment", "error": "retained"}], out["worm"]
    assert len(arch.s3_versions(seg.key)) == 1 and report(arch.services).ok
    row = arch.deletion(seg.key)
    assert row is not None and row.state == "pending" and row.last_error == "retained"

    wait_until(lock)
    again = arch.dispose()
    assert [d["object"] for d in again["worm"]["deleted"]] == [seg.key] and again["worm"]["pending"] == []
    assert arch.s3_versions(seg.key) == [] and arch.exists(seg.checkpoint_key)
    assert report(arch.services).ok


CRASH = """
import os, signal, sys
from archiver.store import s3, local
real = {}
def die_after(cls):
    original = cls.delete_expired
    def delete_then_die(self, key):
        original(self, key)
        os.kill(os.getpid(), signal.SIGKILL)
    cls.delete_expired = delete_then_die
die_after(s3.S3Store)
die_after(local.LocalStore)
from archiver.cli import main
sys.argv = ["archiver", "dispose", "--json"]
main()
"""


@pytest.fixture(params=[STORES[0], STORES[2]], ids=_ids)
def crash_arch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worm]:
    yield from _worm(request, tmp_path, monkeypatch)


def test_kill_9_after_the_delete_is_finished_by_the_next_run_nothing_twice(crash_arch: Worm) -> None:
    arch = crash_arch
    (short,) = arch.ingest(message("wamid.S1", "crash in the delete", SHORT))
    seg = arch.segment(short)
    arch.wait_expired(short)
    wait_until(seg.retain_until)
    env = {**os.environ, **arch.env}
    killed = subprocess.run([sys.executable, "-c", CRASH], env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    # It died after the store deleted the segment, before the catalog noted it.
    assert not arch.key_alive(short) and not arch.exists(seg.key)
    row = arch.deletion(seg.key)
    assert row is not None and row.state == "pending" and row.attempts == 0
    assert report(arch.services).ok  # the leaf hashes were kept before the delete

    out = arch.dispose()
    assert out["disposition_seq"] is None and out["keys"] == []  # no key destroyed twice
    assert [d["object"] for d in out["worm"]["deleted"]] == [seg.key]
    row = arch.deletion(seg.key)
    assert row is not None and row.state == "deleted" and row.attempts == 1
    shown = CliRunner().invoke(cli, ["show", str(short)], env=arch.env)
    assert shown.exit_code == 0 and "disposed" in shown.stdout, shown.output
    assert json.loads(shown.stdout)["disposition"]["segment_deleted"]["state"] == "deleted"
    assert report(arch.services).ok
