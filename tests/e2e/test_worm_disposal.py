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
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from archiver import chain, jobs, media, records
from archiver.catalog import Journal, Segment, WormDeletion
from archiver.cli import main as cli
from archiver.config import Settings
from archiver.export_verify import canonical_line
from archiver.services import Services
from tests import backends
from tests.contract.test_catalog import _pg_schema_url
from tests.conftest import make_env
from tests.e2e.test_disposition import KEPT, SHORT, Archive
from tests.e2e.test_export import SCRIPT
from tests.e2e.test_holds import message
from tests.e2e.test_media import image_body
from tests.e2e.test_pipeline import report, seal
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


def test_a_segment_goes_once_its_lock_passes_and_still_verifies_shows_and_exports(
        arch: Worm, fake_graph: FakeGraph, tmp_path: Path) -> None:  # noqa: F811
    (short,) = arch.ingest(message("wamid.S1", "goes away", SHORT))
    (kept,) = arch.ingest(message("wamid.K1", "stays", KEPT))
    photo = b"\xff\xd8 a meter reading " * 40
    b64 = fake_graph.add("1487220933510642", photo)
    (pictured,) = arch.ingest(image_body("wamid.IMG1", "1487220933510642", b64))
    assert media.fetch_due(arch.services) == 1
    arch.ingest()  # seals the media record
    with arch.services.sessions() as session:
        from archiver.catalog import Media

        (media_row,) = session.scalars(select(Media))
    assert media_row.object_key is not None
    seg = arch.segment(short)
    with arch.services.sessions() as session:  # the image message's segment and its media record's
        photo_segs = list(session.scalars(select(Segment).where(Segment.retention_class == "short-test",
                                                                Segment.key != seg.key)))
    assert arch.segment(pictured).key in {p.key for p in photo_segs}
    photo_keys = {p.key for p in photo_segs}
    assert seg.key != arch.segment(kept).key
    arch.wait_expired(short, pictured)
    photo_until = max(p.retain_until for p in photo_segs)
    wait_until(max(photo_until, arch.services.store.head(media_row.object_key).retain_until or photo_until))
    # A dry run names the objects a run would delete, and deletes nothing.
    dry = arch.cli("dispose", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    previewed = {o["object"]: o for o in json.loads(dry.stdout)["worm"]["objects"]}
    assert set(previewed) == {seg.key, media_row.object_key} | photo_keys, previewed
    assert previewed[media_row.object_key]["kind"] == "media" and previewed[seg.key]["kind"] == "segment"
    assert arch.deletion(seg.key) is None and arch.exists(seg.key) and arch.exists(media_row.object_key)
    text = arch.cli("dispose", "--dry-run")
    assert text.exit_code == 0 and f"would delete segment {seg.key}" in text.stdout, text.output

    # The segment's real lock is extended past its records' retention, just before the run: the
    # margin is for the run alone (the commands before it took most of a 12 s one on PostgreSQL).
    lock = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=20)
    arch.services.store.extend_retention(seg.key, lock)
    # The keys go; the segment is still locked: it stays, pending, retried by the next run.
    out = arch.dispose()
    assert out["disposition_seq"] and not arch.key_alive(short) and arch.key_alive(kept)
    pending = {p["object"]: p["error"] for p in out["worm"]["pending"]}
    assert pending == {seg.key: "retained"}, out["worm"]
    deleted = {d["object"] for d in out["worm"]["deleted"]}
    assert deleted == photo_keys | {media_row.object_key}  # the image's segments and its attachment
    assert arch.exists(seg.key) and not any(arch.exists(k) for k in photo_keys) and not arch.exists(media_row.object_key)
    assert arch.exists(seg.checkpoint_key) and all(arch.exists(p.checkpoint_key) for p in photo_segs)  # kept
    if arch.bucket:  # SeaweedFS itself refuses to delete the locked version
        (version,) = arch.s3_versions(seg.key)
        with pytest.raises(Exception) as refused:
            backends.s3_client().delete_object(Bucket=arch.bucket, Key=f"archive/{seg.key}", VersionId=version)
        assert "AccessDenied" in str(refused.value) or "locked" in str(refused.value).lower(), refused.value
        assert arch.s3_versions(seg.key) == [version]
        assert all(arch.s3_versions(k) == [] for k in photo_keys) and arch.s3_versions(media_row.object_key) == []
    r = report(arch.services)
    assert r.ok, r.first_error
    assert r.disposed_segments == len(photo_segs)  # the image's; the locked one is still read from the store

    # Once the lock has passed, the next run deletes it (every version: nothing left).
    wait_until(lock)
    again = arch.dispose()
    assert again["disposition_seq"] is None and [d["object"] for d in again["worm"]["deleted"]] == [seg.key]
    assert again["worm"]["pending"] == [] and not arch.exists(seg.key) and arch.exists(seg.checkpoint_key)
    if arch.bucket:
        assert arch.s3_versions(seg.key) == []
    row = arch.deletion(seg.key)
    assert row is not None and row.state == "deleted" and row.attempts == 2 and len(row.leaf_hashes) == seg.records
    assert arch.dispose()["worm"] == {"noted": 0, "deleted": [], "pending": []}  # nothing twice

    got = arch.cli("verify", "--json")
    assert got.exit_code == 0, got.output
    verified = json.loads(got.stdout)
    assert verified["ok"] and verified["disposed_segments"] == 1 + len(photo_segs)
    assert verified["disposed_records"] == seg.records + sum(p.records for p in photo_segs)

    # show: disposed, by which disposition record, with its proof fields (the path really leads
    # from the kept leaf to the segment's root, which the signed checkpoint names).
    shown = arch.cli("show", str(short))
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.stdout)
    assert view["disposition"]["status"] == "disposed" and view["disposition"]["disposition_seq"] == out["disposition_seq"]
    assert view["disposition"]["segment_deleted"]["object"] == seg.key and view["content"] is None
    proof = view["proof"]
    assert proof["hash"] == arch.record(short).hash and proof["commitment"] and proof["segment"] == seg.key
    chain.verify_inclusion(bytes.fromhex(proof["leaf_hash"]), proof["leaf_index"], proof["tree_size"],
                           proof["inclusion_path"], proof["merkle_root"])
    cp = chain.Checkpoint.from_bytes(arch.services.store.get(seg.checkpoint_key), seg.checkpoint_key)
    assert cp.merkle_root == proof["merkle_root"]
    assert json.loads(arch.cli("show", str(kept)).stdout)["content"] is not None

    # export lists them as disposed, with their proof and no content; the bundle verifies.
    bundle = tmp_path / "bundle"
    got = arch.cli("export", "--contact", SHORT, "--out", str(bundle))
    assert got.exit_code == 0, got.output
    lines = [json.loads(x) for x in (bundle / "records.jsonl").read_text().splitlines()]
    mine = next(x for x in lines if x["seq"] == short)
    assert mine["disposed"]["disposition_seq"] == out["disposition_seq"] and mine["sealed"] is None
    assert mine["plaintext"] is None and mine["leaf_hash"] == proof["leaf_hash"]
    checked = arch.cli("verify-export", str(bundle), "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["disposed"] == len(lines)
    alone = subprocess.run([sys.executable, str(SCRIPT), str(bundle), "--json"], capture_output=True, text=True,
                           check=False)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert json.loads(alone.stdout)["disposed"] == len(lines) and json.loads(alone.stdout)["ok"]
    # A disposed line whose kept leaf hash was changed is caught by both verifiers.
    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    flipped = [{**x, "leaf_hash": "00" * 32} if x["seq"] == short else x for x in lines]
    (forged / "records.jsonl").write_bytes(b"".join(canonical_line(x) for x in flipped))
    bad = arch.cli("verify-export", str(forged), "--json")
    assert bad.exit_code == 1 and "Merkle root" in bad.stdout, bad.output
    alone = subprocess.run([sys.executable, str(SCRIPT), str(forged)], capture_output=True, text=True, check=False)
    assert alone.returncode == 1 and "Merkle root" in alone.stdout, alone.stdout + alone.stderr

    # A segment missing with no deletion row is still a break; so are tampered leaf hashes.
    with arch.services.sessions.begin() as session:
        session.execute(update(WormDeletion).where(WormDeletion.object_key == seg.key)
                        .values(leaf_hashes=list(reversed(row.leaf_hashes))))
    broken = report(arch.services)
    assert not broken.ok and seg.key in str(broken.first_error) and "Merkle root" in str(broken.first_error)
    with arch.services.sessions.begin() as session:
        session.delete(session.get(WormDeletion, seg.key))
    broken = report(arch.services)
    assert not broken.ok and f"{seg.key}: segment named by a checkpoint is missing" in str(broken.first_error)
    assert arch.cli("verify").exit_code == 1


@pytest.fixture(params=[STORES[0], STORES[1]], ids=_ids)
def s3arch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worm]:
    yield from _worm(request, tmp_path, monkeypatch)


def test_a_legal_hold_on_keeps_the_object_and_the_store_down_is_retried_and_reported(s3arch: Worm) -> None:
    arch = s3arch
    (short,) = arch.ingest(message("wamid.S1", "held by the server", SHORT))
    seg = arch.segment(short)
    arch.services.store.set_legal_hold(seg.key, True)
    arch.wait_expired(short)
    wait_until(seg.retain_until)

    # The archiver's store check sees the legal hold first; the object stays, pending.
    out = arch.dispose()
    assert not arch.key_alive(short)
    assert out["worm"]["pending"] == [{"object": seg.key, "kind": "segment", "error": "legal-hold"}]
    # Retention has passed: SeaweedFS itself refuses the delete while the legal hold is ON.
    (version,) = arch.s3_versions(seg.key)
    with pytest.raises(Exception) as refused:
        backends.s3_client().delete_object(Bucket=arch.bucket, Key=f"archive/{seg.key}", VersionId=version)
    assert "AccessDenied" in str(refused.value) or "hold" in str(refused.value).lower(), refused.value
    assert arch.s3_versions(seg.key) == [version]
    arch.services.store.set_legal_hold(seg.key, False)

    # The store is down (a closed port): the delete is retried, reported, never half-recorded.
    # A command builds its own services from its environment: the closed port goes there.
    down_env = {**arch.env, "ARCHIVER_STORE_URL": arch.env["ARCHIVER_STORE_URL"].replace(
        backends.s3_settings().endpoint_url, "http://127.0.0.1:9")}
    got = CliRunner().invoke(cli, ["dispose", "--json"], env=down_env)
    assert got.exit_code == 0, got.output
    (p,) = json.loads(got.stdout)["worm"]["pending"]
    assert p == {"object": seg.key, "kind": "segment", "error": "store: StoreError"}, p
    row = arch.deletion(seg.key)
    assert row is not None and row.state == "pending" and row.deleted_at is None and row.attempts == 2
    assert row.last_error == "store: StoreError" and arch.exists(seg.key) and report(arch.services).ok
    # The scheduled job reports it in its job_run record, sealed like any other.
    down = Services.open(Settings.from_env(down_env), create=False)
    try:
        done = jobs.Runner(down, jobs.load_schedule(down.settings)).run_scheduled("disposition", "manual", actor="test")
    finally:
        down.close()
    assert done is not None and done.outcome.outcome == "ok", done
    assert done.outcome.summary is not None and done.outcome.summary["worm"]["pending"] == [p]
    seal(arch.services)
    with arch.services.sessions() as session:
        run_seq = session.scalar(select(Journal.delivery_seq).where(Journal.id == done.journal_id))
        assert run_seq is not None
        sealed = records.read_record(arch.services, session, run_seq)["content"]
    assert sealed["outcome"] == "ok" and sealed["summary"]["worm"]["pending"] == [p], sealed
    row = arch.deletion(seg.key)
    assert row is not None and row.state == "pending" and row.attempts == 3 and arch.exists(seg.key)

    back = arch.dispose()  # the store is back: the next run deletes it
    assert [d["object"] for d in back["worm"]["deleted"]] == [seg.key] and arch.s3_versions(seg.key) == []
    row = arch.deletion(seg.key)
    assert row is not None and row.state == "deleted" and row.attempts == 4 and row.last_error is None
    assert report(arch.services).ok


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
