"""Disposition (issue 9, point 3) on the real servers: SeaweedFS Object Lock, SQLite and
PostgreSQL catalogs, FTS5 and OpenSearch.

A test policy (``ARCHIVER_POLICIES``) keeps one contact's records for five seconds, another's
for five seconds under ``review: true``, everyone else's for seven years; the tests wait
until the short retention has really passed (a condition, never a fixed sleep).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from archiver import holds, indexer, jobs
from archiver.catalog import DataKey, Disposition, Journal, Record
from archiver.cli import main as cli
from tests import backends
from tests.contract.test_catalog import _pg_schema_url
from tests.conftest import make_env
from tests.e2e.test_holds import InProcess, message
from tests.e2e.test_pipeline import report, seal
from tests.serving import ROOT

pytestmark = [pytest.mark.s3]

SHORT, REVIEWED, KEPT, HELD = "33699000001", "33699000002", "33699000003", "33699000004"

POLICY = f"""classes:
  - name: short-test
    retain: PT5S
    erasable: true
    match:
      contact: ["{SHORT}", "{HELD}"]
  - name: reviewed
    retain: PT5S
    review: true
    match:
      contact: ["{REVIEWED}"]
  - name: default
    retain: 7y
"""


class Archive(InProcess):
    """An in-process archiver, with what the disposition tests look at."""

    def key_alive(self, seq: int) -> bool:
        with self.services.sessions() as session:
            key = session.get(DataKey, self.record(seq).key_id)
            assert key is not None
            return key.wrapped is not None

    def under(self, seq: int) -> list[int]:
        """Every seq under the data key of ``seq``."""
        with self.services.sessions() as session:
            return list(session.scalars(select(Record.seq).where(Record.key_id == self.record(seq).key_id)
                                        .order_by(Record.seq)))

    def wait_expired(self, *seqs: int) -> None:
        """Until every record under the keys of ``seqs`` and their deliveries has passed its
        retain_until (the clock moves on)."""
        with self.services.sessions() as session:
            rows = [self.record(s) for s in seqs]
            kids = [r.key_id for r in rows] + [self.record(r.delivery_seq).key_id for r in rows if r.delivery_seq]
            last = session.scalar(select(func.max(Record.retain_until)).where(Record.key_id.in_(kids)))
        assert last is not None
        while datetime.now(timezone.utc) < last:
            time.sleep(0.1)

    def found(self, text: str) -> set[int]:
        return {h.seq for h in self.services.search.search(text, size=100).hits}

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=self.env)


def _archive(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Archive]:
    catalog, search = getattr(request, "param", ("sqlite", "fts5"))
    _, store_url = backends.locked_store_url(monkeypatch)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "retention.yaml").write_text(POLICY)
    extra = {"ARCHIVER_STORE_URL": store_url, "ARCHIVER_POLICIES": str(policies)}
    if search == "opensearch":
        extra["ARCHIVER_SEARCH_URL"] = f"{backends.opensearch_url()}/disp-{uuid.uuid4().hex[:10]}?replicas=0"
    urls = iter(_pg_schema_url()) if catalog == "postgresql" else None
    if urls is not None:
        extra["ARCHIVER_CATALOG_URL"] = next(urls)
    env = make_env(tmp_path / "home", **extra)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env[k] = os.environ[k]
    arch = Archive(env)
    try:
        yield arch
    finally:
        drop = getattr(arch.services.search, "drop", None)
        if drop is not None:
            drop()
        arch.services.close()
        if urls is not None:
            next(urls, None)


BACKENDS = [("sqlite", "fts5"), pytest.param(("postgresql", "fts5"), marks=pytest.mark.postgres),
            pytest.param(("sqlite", "opensearch"), marks=pytest.mark.opensearch)]


@pytest.fixture(params=BACKENDS, ids=lambda p: "-".join(p) if isinstance(p, tuple) else str(p))
def arch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Archive]:
    yield from _archive(request, tmp_path, monkeypatch)


def test_expired_keys_are_shredded_held_and_default_ones_kept_review_waits_for_approval(arch: Archive) -> None:
    (short,) = arch.ingest(message("wamid.S1", "expiring quote", SHORT))
    (kept,) = arch.ingest(message("wamid.K1", "expiring kept", KEPT))
    (held,) = arch.ingest(message("wamid.H1", "expiring held", HELD))
    (reviewed,) = arch.ingest(message("wamid.R1", "expiring reviewed", REVIEWED))
    indexer.index_pending(arch.services)
    matter = holds.create_matter(arch.services, "test:legal", "Acme v. Us")
    holds.create_hold(arch.services, "test:legal", matter, "h", holds.parse_criteria([HELD]), "preserve")
    arch.wait_expired(short, held, reviewed)
    assert arch.found("expiring") == {short, kept, held, reviewed}

    # A dry run prints the plan and changes nothing.
    with arch.services.sessions() as session:
        journal_before = session.scalar(select(func.max(Journal.id)))
    dry = arch.cli("dispose", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True
    # The message's key (the period of its own time) and its delivery's (the period of receipt).
    delivery = arch.record(short).delivery_seq
    assert delivery is not None
    scopes = sorted({arch.record(short).key_id, arch.record(delivery).key_id})
    covered = sorted(set(arch.under(short)) | set(arch.under(delivery)))
    assert [k["key"] for k in plan["keys"]] == scopes
    assert plan["classes"]["short-test"]["records"] == len(covered) == 2
    assert (plan["classes"]["short-test"]["first_seq"], plan["classes"]["short-test"]["last_seq"]) == (delivery, short)
    assert [r["class"] for r in plan["to_review"]] == ["reviewed"]
    with arch.services.sessions() as session:
        assert session.scalar(select(func.max(Journal.id))) == journal_before
        assert session.scalar(select(func.count()).select_from(Disposition)) == 0
    assert arch.key_alive(short) and arch.found("expiring") == {short, kept, held, reviewed}

    # The run: one sealed disposition record, then the key is destroyed and the index forgets.
    got = arch.cli("dispose", "--json")
    assert got.exit_code == 0, got.output
    out = json.loads(got.stdout)
    assert out["disposition_seq"] and out["records"] == len(covered) and len(out["batches_proposed"]) == 1
    assert not arch.key_alive(short) and not arch.key_alive(delivery)
    assert arch.key_alive(kept) and arch.key_alive(held) and arch.key_alive(reviewed)
    assert arch.found("expiring") == {kept, held, reviewed}
    decision = arch.record(out["disposition_seq"])
    assert (decision.kind, decision.type) == ("decision", "disposition")

    shown = arch.cli("show", str(short))
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.stdout)
    assert view["disposition"]["status"] == "disposed"
    assert view["disposition"]["disposition_seq"] == out["disposition_seq"]
    assert view["content"] is None and view["proof"]["hash"] == arch.record(short).hash
    assert view["proof"]["inclusion_path"] is not None
    sealed = json.loads(arch.cli("show", str(out["disposition_seq"])).stdout)["content"]
    assert sealed["event"] == "disposition" and [k["key"] for k in sealed["keys"]] == scopes
    assert sorted(s for k in sealed["keys"] for first, last in k["seqs"] for s in range(first, last + 1)) == covered
    assert sealed["classes"]["short-test"]["policy_seqs"] == [arch.record(short).policy_seq]
    assert report(arch.services).ok

    # Review: nothing goes until a compliance officer approves.
    again = json.loads(arch.cli("dispose", "--json").stdout)
    assert again["disposition_seq"] is None and again["pending_batches"] == out["batches_proposed"]
    assert arch.key_alive(reviewed)
    listed = json.loads(arch.cli("disposition", "list", "--json").stdout)["batches"]
    assert [(b["id"], b["state"], b["class"]) for b in listed] == [(out["batches_proposed"][0], "pending", "reviewed")]
    approved = arch.cli("disposition", "approve", listed[0]["id"])
    assert approved.exit_code == 0 and "approved" in approved.stdout, approved.output

    # The scheduled job disposes the approved batch; its run is a sealed job_run record.
    runner = jobs.Runner(arch.services, jobs.load_schedule(arch.services.settings))
    done = runner.run_scheduled("disposition", "manual", actor="test")
    assert done is not None and done.outcome.outcome == "ok", done
    assert done.outcome.summary is not None and done.outcome.summary["records"] == 2
    assert not arch.key_alive(reviewed) and arch.key_alive(held) and arch.key_alive(kept)
    seal(arch.services)
    with arch.services.sessions() as session:
        run_seq = session.scalar(select(Journal.delivery_seq).where(Journal.id == done.journal_id))
    assert run_seq is not None and arch.record(run_seq).kind == "job_run"
    second = json.loads(arch.cli("show", str(done.outcome.summary["disposition_seq"])).stdout)["content"]
    assert second["approved_batches"][0]["approved_by"].startswith("cli:")
    assert arch.found("expiring") == {kept, held}
    assert json.loads(arch.cli("disposition", "list", "--json").stdout)["batches"][0]["state"] == "disposed"
    assert report(arch.services).ok

    # A record sealed later in a destroyed key's scope gets a new key, and stays readable.
    (later,) = arch.ingest(message("wamid.S2", "after the shredding", SHORT))
    assert arch.record(later).key_id == arch.record(short).key_id + "~2" and arch.key_alive(later)
    assert json.loads(arch.cli("show", str(later)).stdout)["content"] is not None
    assert report(arch.services).ok


def test_a_rejected_batch_is_kept_and_not_proposed_again(arch: Archive) -> None:
    (reviewed,) = arch.ingest(message("wamid.R1", "keep me", REVIEWED))
    arch.wait_expired(reviewed)
    out = json.loads(arch.cli("dispose", "--json").stdout)
    (batch,) = out["batches_proposed"]
    assert arch.cli("disposition", "reject", batch).exit_code != 0  # a rejection needs a reason
    got = arch.cli("disposition", "reject", batch, "--reason", "audit pending")
    assert got.exit_code == 0 and "rejected" in got.stdout, got.output
    again = json.loads(arch.cli("dispose", "--json").stdout)
    assert again["batches_proposed"] == [] and again["keys"] == [] and arch.key_alive(reviewed)
    assert arch.cli("disposition", "approve", batch).exit_code == 2  # decided already


CRASH = """
import os, signal, sys
from archiver import disposition
from archiver.cli import main
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
disposition._destroy = die
sys.argv = ["archiver", "dispose", "--json"]
main()
"""


@pytest.mark.parametrize("arch", [BACKENDS[0], BACKENDS[1]], indirect=True,
                         ids=lambda p: "-".join(p) if isinstance(p, tuple) else str(p))
def test_kill_9_between_seal_and_apply_is_finished_by_the_next_run(arch: Archive) -> None:
    (short,) = arch.ingest(message("wamid.S1", "crash me", SHORT))
    arch.wait_expired(short)
    env = {**os.environ, **arch.env}
    killed = subprocess.run([sys.executable, "-c", CRASH], env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert arch.key_alive(short)
    with arch.services.sessions() as session:
        (row,) = session.scalars(select(Disposition))
        assert row.applied_at is None
        assert session.scalar(select(Journal.sealed).where(Journal.id == row.journal_id))  # sealed before it died
    out = json.loads(arch.cli("dispose", "--json").stdout)
    assert out["finished_earlier_runs"] == 1 and out["keys"] == [] and out["disposition_seq"] is None
    assert not arch.key_alive(short)
    with arch.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Record).where(Record.type == "disposition")) == 1
    assert json.loads(arch.cli("show", str(short)).stdout)["disposition"]["status"] == "disposed"
    assert report(arch.services).ok


def test_review_batches_over_the_api_for_compliance_only(arch: Archive) -> None:
    from archiver.auth import create_token

    (reviewed,) = arch.ingest(message("wamid.R1", "keep me too", REVIEWED))
    arch.wait_expired(reviewed)
    (batch,) = json.loads(arch.cli("dispose", "--json").stdout)["batches_proposed"]
    with arch.services.sessions.begin() as session:
        tokens = {role: create_token(session, role, f"t-{role}") for role in ("compliance", "legal")}

    def call(method: str, path: str, role: str, body: Any = None) -> Any:
        return arch.client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {tokens[role]}"})

    assert call("GET", "/api/v1/dispositions", "legal").status_code == 403
    listed = call("GET", "/api/v1/dispositions", "compliance")
    assert listed.status_code == 200 and [b["id"] for b in listed.get_json()["batches"]] == [batch]
    assert call("POST", f"/api/v1/dispositions/{batch}/reject", "compliance", {}).status_code == 400
    assert call("POST", "/api/v1/dispositions/disp-000000000000/approve", "compliance").status_code == 404
    approved = call("POST", f"/api/v1/dispositions/{batch}/approve", "compliance")
    assert approved.status_code == 200 and approved.get_json()["state"] == "approved"
    assert approved.get_json()["decided_by"]
    assert call("POST", f"/api/v1/dispositions/{batch}/approve", "compliance").status_code == 409
    out = json.loads(arch.cli("dispose", "--json").stdout)
    assert [b["batch"] for b in out["approved_batches"]] == [batch] and not arch.key_alive(reviewed)


def test_the_index_forgets_every_disposed_record_across_delete_batches(arch: Archive,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from archiver import disposition

    seqs = arch.ingest(*(message(f"wamid.B{i}", f"batched farewell {i}", SHORT) for i in range(5)))
    (kept,) = arch.ingest(message("wamid.BK", "batched farewell kept", KEPT))
    indexer.index_pending(arch.services)
    arch.wait_expired(*seqs)
    assert arch.found("farewell") == {*seqs, kept}
    monkeypatch.setattr(disposition, "INDEX_DELETE_BATCH", 2)
    calls: list[list[int]] = []
    real = arch.services.search.delete
    monkeypatch.setattr(arch.services.search, "delete", lambda part: (calls.append(list(part)), real(part))[1])
    out = disposition.run(arch.services, "test:dispose")
    disposed = {s for k in out["keys"] for first, last in k["seqs"] for s in range(first, last + 1)}
    assert set(seqs) <= disposed and kept not in disposed
    assert sorted(s for part in calls for s in part) == sorted(disposed)  # each disposed seq, once
    assert len(calls) > 1 and all(len(part) <= 2 for part in calls)
    assert arch.found("farewell") == {kept}
