"""Matters and litigation holds on the real servers: SeaweedFS Object Lock (the legal holds
are read back from the server with boto3), SQLite and PostgreSQL catalogs, both search backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from archiver import holds, indexer, jobs, media, records
from archiver.app import create_app
from archiver.catalog import HeldRecord, JobState, Media, Record, Segment, cursor_value, stored_through
from archiver.cli import main as cli
from archiver.config import Settings
from archiver.journal import append_audit
from archiver.services import Services
from tests import backends
from tests.contract.test_catalog import _pg_schema_url
from tests.conftest import make_env
from tests.e2e.test_pipeline import post, report, seal
from tests.fakegraph import FakeGraph, fake_graph  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.s3]

ALICE, BOB = "4479460001234", "33612345678"
JAN, FEB, MAR = "1767268800", "1770000000", "1772600000"  # 2026-01-01, 2026-02-02, 2026-03-04 (UTC)


def message(wamid: str, text: str, contact: str = ALICE, ts: str = FEB, phone_id: str = "1099",
            extra: dict[str, Any] | None = None) -> bytes:
    msg = {"from": contact, "id": wamid, "timestamp": ts, "type": "text", "text": {"body": text}, **(extra or {})}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": phone_id},
             "contacts": [{"profile": {"name": "X"}, "wa_id": contact}], "messages": [msg]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": "messages", "value": value}]}]}).encode()


class InProcess:
    """One archiver in this process: its services and a test client of its app."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.services = Services.open(Settings.from_env(env))
        self.client = create_app(services=self.services).test_client()

    def ingest(self, *bodies: bytes) -> list[int]:
        """Post and seal (one segment per call); return the seqs of the new message records."""
        with self.services.sessions() as session:
            before = session.scalar(select(Record.seq).order_by(Record.seq.desc()).limit(1)) or 0
        for body in bodies:
            assert post(self.client, body).status_code == 200
        seal(self.services)
        with self.services.sessions() as session:
            return list(session.scalars(select(Record.seq).where(Record.seq > before, Record.kind == "message")
                                        .order_by(Record.seq)))

    def record(self, seq: int) -> Record:
        with self.services.sessions() as session:
            found = session.get(Record, seq)
            assert found is not None
            return found


class Instance(InProcess):
    """One archiver on a fresh Object Lock bucket, a catalog and a search backend."""

    def __init__(self, env: dict[str, str], bucket: str) -> None:
        super().__init__(env)
        self.bucket = bucket
        self.s3 = backends.s3_client()

    def segment_of(self, seq: int) -> Segment:
        with self.services.sessions() as session:
            seg = session.get(Segment, self.record(seq).segment_id)
            assert seg is not None
            return seg

    def server_holds(self, key: str) -> set[str]:
        """The legal-hold status SeaweedFS reports for each version of ``key`` (``archive/`` prefix)."""
        full = f"archive/{key}"
        versions = [v["VersionId"] for v in self.s3.list_object_versions(Bucket=self.bucket, Prefix=full)
                    .get("Versions", []) if v["Key"] == full]
        assert versions, key
        out = set()
        for version in versions:
            try:
                out.add(self.s3.get_object_legal_hold(Bucket=self.bucket, Key=full, VersionId=version)
                        ["LegalHold"]["Status"])
            except self.s3.exceptions.ClientError as exc:  # never set: SeaweedFS answers NoSuchObjectLegalHold
                assert "NoSuchObjectLegalHold" in str(exc)
                out.add("OFF")
        return out

    def held(self, seq: int) -> bool:
        """Whether the segment and checkpoint of ``seq`` have the legal hold ON, on the server."""
        seg = self.segment_of(seq)
        states = self.server_holds(seg.key) | self.server_holds(seg.checkpoint_key)
        assert len(states) == 1, states  # the segment and its checkpoint go together
        return states == {"ON"}

    def matter(self) -> str:
        return holds.create_matter(self.services, "test:legal", "Acme v. Us")

    def hold(self, matter: str, reason: str = "preserve", **criteria: Any) -> str:
        return holds.create_hold(self.services, "test:legal", matter, "hold", holds.parse_criteria(**criteria), reason)

    def counts(self, hold_id: str) -> dict[str, int]:
        return holds.show(self.services, hold_id)["counts"]

    def held_seqs(self, hold_id: str) -> set[int]:
        with self.services.sessions() as session:
            return set(session.scalars(select(HeldRecord.seq).where(HeldRecord.hold_id == hold_id)))


def _instance(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              extra: dict[str, str]) -> Iterator[Instance]:
    catalog, search = getattr(request, "param", ("sqlite", "fts5"))
    bucket, store_url = backends.locked_store_url(monkeypatch)
    env_extra = {"ARCHIVER_STORE_URL": store_url, **extra}
    if search == "opensearch":
        env_extra["ARCHIVER_SEARCH_URL"] = f"{backends.opensearch_url()}/holds-{uuid.uuid4().hex[:10]}?replicas=0"
    urls = iter(_pg_schema_url()) if catalog == "postgresql" else None
    if urls is not None:
        env_extra["ARCHIVER_CATALOG_URL"] = next(urls)
    inst = Instance(make_env(tmp_path / "home", **env_extra), bucket)
    try:
        yield inst
    finally:
        drop = getattr(inst.services.search, "drop", None)
        if drop is not None:
            drop()
        inst.services.close()
        if urls is not None:
            next(urls, None)  # drops the schema


CATALOGS = [("sqlite", "fts5"), pytest.param(("postgresql", "fts5"), marks=pytest.mark.postgres)]


@pytest.fixture(params=CATALOGS, ids=lambda p: p[0] if isinstance(p, tuple) else str(p))
def inst(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    yield from _instance(request, tmp_path, monkeypatch, {})


def test_custodian_hold_holds_records_sealed_before_and_after_it(inst: Instance) -> None:
    (alice1,) = inst.ingest(message("wamid.A1", "the quote", ALICE))
    (bob1,) = inst.ingest(message("wamid.B1", "hello", BOB, phone_id="2088"))
    matter = inst.matter()
    hold = inst.hold(matter, custodians=["+44 7946 0001234"])  # a phone number as people write it: digits compared

    assert inst.held_seqs(hold) == {alice1, inst.record(alice1).delivery_seq}  # the message and its delivery
    assert inst.held(alice1) and not inst.held(bob1)
    assert inst.counts(hold) == {"records": 2, "contacts": 1, "segments": 1, "checkpoints": 1, "media_objects": 0}

    # Sealed while the hold is active: held by the next hold sync (the job step), not before.
    (alice2,) = inst.ingest(message("wamid.A2", "signed", ALICE, ts=MAR))
    assert not inst.held(alice2)
    holds.sync(inst.services)
    assert inst.held(alice2) and not inst.held(bob1)
    assert inst.counts(hold)["records"] == 4 and inst.counts(hold)["segments"] == 2

    # A business phone-number id is a custodian too: every record of that number.
    by_number = inst.hold(matter, custodians=["2088"])
    assert inst.held_seqs(by_number) == {bob1, inst.record(bob1).delivery_seq} and inst.held(bob1)
    assert report(inst.services).ok


def test_a_record_held_by_two_holds_keeps_its_legal_hold_until_both_are_released(inst: Instance) -> None:
    (alice,) = inst.ingest(message("wamid.A1", "refund the deposit", ALICE))
    indexer.index_pending(inst.services)
    matter = inst.matter()
    first = inst.hold(matter, custodians=[ALICE])
    second = inst.hold(matter, query="refund")
    assert alice in inst.held_seqs(first) & inst.held_seqs(second) and inst.held(alice)

    holds.release_hold(inst.services, "test:legal", first, "matter settled")
    assert inst.held(alice)  # the second hold still needs it: SeaweedFS still reports ON
    shown = holds.show(inst.services, first)
    assert shown["status"] == "released" and shown["counts"]["records"] == 0
    released = shown["history"][-1]
    assert released["event"] == "released" and released["details"]["legal_holds_off"] == 0
    assert released["details"]["counts"]["records"] == 2 and released["details"]["kept_for_other_holds"] == 2

    holds.release_hold(inst.services, "test:legal", second, "matter closed")
    assert not inst.held(alice)
    assert inst.services.store.legal_hold(inst.segment_of(alice).key) is False
    with pytest.raises(holds.HoldReleased):
        holds.release_hold(inst.services, "test:legal", second, "again")
    assert report(inst.services).ok


@pytest.mark.parametrize("inst", [("sqlite", "fts5"), pytest.param(("sqlite", "opensearch"),
                                                                   marks=pytest.mark.opensearch)],
                         indirect=True, ids=["fts5", "opensearch"])
def test_date_range_and_query_holds(inst: Instance) -> None:
    jan, feb = inst.ingest(message("wamid.D1", "refund asked", ALICE, ts=JAN), message("wamid.D2", "hello", BOB, ts=FEB))
    indexer.index_pending(inst.services)
    matter = inst.matter()
    dated = inst.hold(matter, after="2026-01-15", before="2026-03-01")
    asked = inst.hold(matter, query="refund")
    assert inst.held_seqs(dated) >= {feb} and jan not in inst.held_seqs(dated)
    assert inst.held_seqs(asked) == {jan, inst.record(jan).delivery_seq}

    (mar, late_feb) = inst.ingest(message("wamid.D3", "refund again", BOB, ts=MAR),
                                  message("wamid.D4", "history", ALICE, ts=str(int(FEB) + 86400)))
    holds.sync(inst.services)
    assert late_feb in inst.held_seqs(dated) and mar not in inst.held_seqs(dated)
    # A query hold follows the search index: the new refund is held once it is indexed.
    assert mar not in inst.held_seqs(asked)
    indexer.index_pending(inst.services)
    holds.sync(inst.services)
    assert mar in inst.held_seqs(asked) and inst.record(mar).delivery_seq in inst.held_seqs(asked)
    assert inst.held(mar) and inst.held(jan)
    assert holds.show(inst.services, asked)["criteria"] == {"custodians": [], "after": None, "before": None,
                                                            "query": "refund"}


def test_every_decision_is_sealed_before_it_acts_and_the_tables_rebuild_from_the_chain(inst: Instance) -> None:
    (alice,) = inst.ingest(message("wamid.A1", "the quote", ALICE))
    matter = inst.matter()
    hold = inst.hold(matter, reason="litigation expected", custodians=[ALICE])
    holds.release_hold(inst.services, "test:legal", hold, "settled")
    with inst.services.sessions() as session:
        decisions = {r.type: r.seq for r in session.scalars(select(Record).where(
            Record.kind == "audit", Record.type.in_(holds.EVENTS)).order_by(Record.seq))}
        assert list(decisions) == ["matter_created", "hold_created", "hold_applied", "hold_released"]
        bodies = {t: records.read_record(inst.services, session, s)["content"] for t, s in decisions.items()}
    assert bodies["matter_created"] | {"at": None} == {"event": "matter_created", "actor": "test:legal", "at": None,
                                                         "matter": matter, "name": "Acme v. Us"}
    assert bodies["hold_created"]["reason"] == "litigation expected"
    assert bodies["hold_created"]["criteria"]["custodians"] == [ALICE]
    applied = bodies["hold_applied"]
    assert applied["hold"] == hold and applied["counts"] == {"new_records": 2}
    assert sorted(holds.expand(applied["seqs"])) == sorted({alice, inst.record(alice).delivery_seq})
    assert bodies["hold_released"]["reason"] == "settled" and bodies["hold_released"]["counts"]["records"] == 2
    history = holds.show(inst.services, hold)["history"]
    assert [(e["event"], e["seq"]) for e in history] == [
        ("created", decisions["hold_created"]), ("applied", decisions["hold_applied"]),
        ("released", decisions["hold_released"])]
    assert report(inst.services).ok

    # Derived state: dropped and replayed from the sealed decisions alone, the same.
    def listed() -> list[dict[str, Any]]:  # how far a hold was evaluated past its last match is not sealed
        return [{k: v for k, v in h.items() if k != "evaluated_through"} for h in holds.list_holds(inst.services)]

    before = listed()
    holds.rebuild(inst.services)
    assert listed() == before and not inst.held(alice)
    assert holds.show(inst.services, hold)["history"] == history


def test_a_decision_sealed_but_not_applied_is_applied_by_the_next_sync(inst: Instance) -> None:
    """A crash between seal and apply: the sealed decision is in the chain, the tables lag."""
    (alice,) = inst.ingest(message("wamid.A1", "the quote", ALICE))
    matter = inst.matter()
    with inst.services.sessions.begin() as session:
        append_audit(session, "hold_created", "test:legal", hold="hold-crashed00001", matter=matter, name="n",
                     criteria=holds.parse_criteria([ALICE]).as_dict(), reason="r")
    seal(inst.services)  # ...and the process dies here
    with pytest.raises(holds.NoSuchHold):
        holds.show(inst.services, "hold-crashed00001")
    assert not inst.held(alice)
    holds.sync(inst.services)  # the next run (the job step)
    assert inst.held_seqs("hold-crashed00001") == {alice, inst.record(alice).delivery_seq} and inst.held(alice)


def test_cli_prints_ids_as_the_last_word_and_shows_counts(inst: Instance) -> None:
    inst.ingest(message("wamid.A1", "the quote", ALICE))
    runner = CliRunner()

    def run(*args: str) -> str:
        done = runner.invoke(cli, list(args), env=inst.env, catch_exceptions=False)
        assert done.exit_code == 0, done.output
        return done.stdout  # the archive's name goes to stderr

    matter = run("matter", "create", "Acme v. Us").split()[-1]
    hold = run("hold", "create", "--matter", matter, "--name", "Alice", "--custodian", ALICE,
               "--after", "2026-01-01", "--reason", "litigation expected").split()[-1]
    shown = json.loads(run("hold", "show", hold, "--json"))
    assert shown["id"] == hold and shown["matter"]["id"] == matter and shown["counts"]["records"] == 2
    assert shown["criteria"]["after"] == "2026-01-01T00:00:00+00:00"
    assert [h["id"] for h in json.loads(run("hold", "list", "--json"))["holds"]] == [hold]
    assert "held now: 2 records, 1 contact, " in run("hold", "show", hold)
    assert run("hold", "release", hold, "--reason", "done").split()[-1] == hold
    assert json.loads(run("hold", "show", hold, "--json"))["status"] == "released"
    bad = runner.invoke(cli, ["hold", "create", "--matter", matter, "--name", "x", "--reason", "r"], env=inst.env)
    assert bad.exit_code == 2 and "error[invalid-field]: criteria" in bad.stderr
    unknown = runner.invoke(cli, ["hold", "create", "--matter", "matter-nope", "--name", "x", "--reason", "r",
                                  "--custodian", ALICE], env=inst.env)
    assert unknown.exit_code == 2 and "error[no-such-matter]" in unknown.stderr


def test_api_lets_legal_and_admin_decide_and_refuses_other_roles(inst: Instance) -> None:
    (alice,) = inst.ingest(message("wamid.A1", "the quote", ALICE))
    client = inst.client
    legal = _token(inst, "legal")
    for role in ("compliance", "auditor", "ingest"):
        refused = client.post("/api/v1/matters", json={"name": "x"}, headers=_token(inst, role))
        assert refused.status_code == 403, role
    made = client.post("/api/v1/matters", json={"name": "Acme v. Us"}, headers=legal)
    assert made.status_code == 201
    matter = made.get_json()["id"]
    assert client.post("/api/v1/holds", json={"matter": matter, "name": "n", "reason": "r"},
                       headers=legal).get_json()["field"] == "criteria"
    created = client.post("/api/v1/holds", json={"matter": matter, "name": "n", "reason": "r", "custodians": [ALICE]},
                          headers=_token(inst, "admin"))
    assert created.status_code == 201
    hold = created.get_json()
    assert hold["status"] == "active" and hold["counts"]["records"] == 2 and inst.held(alice)
    assert client.get(f"/api/v1/holds/{hold['id']}", headers=legal).get_json()["counts"]["segments"] == 1
    assert [h["id"] for h in client.get("/api/v1/holds", headers=legal).get_json()["holds"]] == [hold["id"]]
    assert client.get("/api/v1/holds/hold-nope", headers=legal).status_code == 404
    released = client.post(f"/api/v1/holds/{hold['id']}/release", json={"reason": "done"}, headers=legal)
    assert released.status_code == 200 and released.get_json()["status"] == "released" and not inst.held(alice)
    assert client.post(f"/api/v1/holds/{hold['id']}/release", json={"reason": "x"}, headers=legal).status_code == 409


def _token(inst: Instance, role: str) -> dict[str, str]:
    from archiver.auth import create_token

    with inst.services.sessions.begin() as session:
        secret = create_token(session, role, f"t-{role}-{uuid.uuid4().hex[:6]}")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def with_graph(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               fake_graph: FakeGraph) -> Iterator[tuple[Instance, FakeGraph]]:  # noqa: F811
    for inst in _instance(request, tmp_path, monkeypatch, {"ARCHIVER_GRAPH_URL": fake_graph.url}):
        yield inst, fake_graph


def test_a_held_message_holds_its_media_object_fetched_later(with_graph: tuple[Instance, FakeGraph]) -> None:
    inst, graph = with_graph
    photo = b"\xff\xd8\xff\xe0 meter reading" * 40
    digest = graph.add("9911", photo)
    image = {"type": "image", "image": {"mime_type": "image/jpeg", "sha256": digest, "id": "9911"}}
    (msg,) = inst.ingest(message("wamid.M1", "photo", ALICE, extra=image))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    assert inst.counts(hold)["media_objects"] == 0
    assert media.fetch_due(inst.services) == 1
    seal(inst.services)
    holds.sync(inst.services)
    with inst.services.sessions() as session:
        (media_rec,) = session.scalars(select(Record).where(Record.kind == "media"))
    assert media_rec.links == {"message": msg}
    assert media_rec.seq in inst.held_seqs(hold) and inst.counts(hold)["media_objects"] == 1
    with inst.services.sessions() as session:
        (row,) = session.scalars(select(Media))
    assert row.object_key is not None and inst.server_holds(row.object_key) == {"ON"}
    holds.release_hold(inst.services, "test:legal", hold, "done")
    assert inst.server_holds(row.object_key) == {"OFF"}


# Run in a child process: apply a hold decision, blocking after ``sys.argv[1]`` legal holds were
# set, so the test kills it there with SIGKILL. ``create MATTER CONTACT`` creates a hold (applied
# at once); ``sync`` runs the holds job's step (evaluate the records sealed since, then apply).
_DIES_MID_APPLY = """
import sys
from archiver import holds
from archiver.config import Settings
from archiver.services import Services

services = Services.open(Settings.from_env())
real, done, after = services.store.set_legal_hold, [], int(sys.argv[1])

def blocking(key, on):
    if len(done) == after:
        print("blocked", flush=True)
        sys.stdin.read()  # until killed
    done.append(key)
    real(key, on)

services.store.set_legal_hold = blocking
if sys.argv[2] == "sync":
    holds.sync(services)
else:
    holds.create_hold(services, "test:legal", sys.argv[3], "n", holds.parse_criteria([sys.argv[4]]), "r")
"""


def _killed_mid_apply(inst: Instance, *args: str) -> None:
    """Run ``_DIES_MID_APPLY`` with ``args`` and SIGKILL it once it blocks."""
    with subprocess.Popen([sys.executable, "-c", _DIES_MID_APPLY, *args], env={**os.environ, **inst.env},
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "blocked\n"
        finally:
            child.kill()  # SIGKILL
            child.wait()


def test_kill_9_while_setting_legal_holds_is_finished_by_the_next_sync(inst: Instance) -> None:
    (first,) = inst.ingest(message("wamid.A1", "one", ALICE))
    (second,) = inst.ingest(message("wamid.A2", "two", ALICE))
    _killed_mid_apply(inst, "2", "create", inst.matter(), ALICE)  # after the first segment and its checkpoint
    (hold,) = [h["id"] for h in holds.list_holds(inst.services)]
    assert inst.counts(hold)["records"] == 0 and inst.held(first) and not inst.held(second)  # half done, unrecorded

    holds.sync(inst.services)  # the next run (the job step, or the next command)
    assert inst.held(first) and inst.held(second) and inst.counts(hold)["records"] == 4
    with inst.services.sessions() as session:
        applied = session.scalars(select(Record.seq).where(Record.kind == "audit", Record.type == "hold_applied")).all()
    assert len(applied) == 1  # evaluated once, applied once: no second decision for the same records
    assert report(inst.services).ok


def _decisions(inst: Instance, hold_id: str) -> list[tuple[str, int]]:
    """What was recorded of a hold: its history (event, decision seq), in order."""
    return [(e["event"], e["seq"]) for e in holds.show(inst.services, hold_id)["history"]]


def _sealed(inst: Instance, kind: str, type_: str) -> list[dict[str, Any]]:
    """The content of every sealed record of ``kind`` and ``type_``, in seq order."""
    with inst.services.sessions() as session:
        seqs = session.scalars(select(Record.seq).where(Record.kind == kind, Record.type == type_).order_by(Record.seq))
        return [records.read_record(inst.services, session, seq)["content"] | {"seq": seq} for seq in seqs]


def _objects_of(inst: Instance, seqs: list[int]) -> list[str]:
    """The segment and checkpoint of each seq (one segment each), in seq order."""
    keys = [k for seq in seqs for k in (inst.segment_of(seq).key, inst.segment_of(seq).checkpoint_key)]
    assert len(set(keys)) == 2 * len(seqs)
    return keys


def test_kill_9_in_a_hold_sync_setting_many_legal_holds_is_finished_by_the_rerun_nothing_twice(inst: Instance) -> None:
    (first,) = inst.ingest(message("wamid.A0", "before the hold", ALICE))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    later = [inst.ingest(message(f"wamid.A{i}", f"after the hold {i}", ALICE))[0] for i in range(1, 7)]
    (bob,) = inst.ingest(message("wamid.B1", "not held", BOB))
    objects = _objects_of(inst, later)
    recorded, runs = _decisions(inst, hold), _sealed(inst, "job_run", "holds")
    assert [e for e, _ in recorded] == ["created", "applied"]

    # The job step evaluates the six new segments, seals its decision, and dies after five of
    # their twelve legal holds are ON (the third segment's, not yet its checkpoint's).
    _killed_mid_apply(inst, "5", "sync")
    assert [inst.server_holds(k) for k in objects] == [{"ON"}] * 5 + [{"OFF"}] * 7
    decisions = _sealed(inst, "audit", "hold_applied")
    assert len(decisions) == 2 and decisions[1]["hold"] == hold  # sealed before it acts...
    assert _decisions(inst, hold) == recorded and inst.counts(hold)["records"] == 2  # ...and none of it recorded
    assert _sealed(inst, "job_run", "holds") == runs  # the dead run sealed no summary

    holds.sync(inst.services)  # the next run finishes it
    assert all(inst.server_holds(k) == {"ON"} for k in objects) and inst.held(first) and not inst.held(bob)
    assert inst.counts(hold) == {"records": 14, "contacts": 1, "segments": 7, "checkpoints": 7, "media_objects": 0}
    assert len(_sealed(inst, "audit", "hold_applied")) == 2  # evaluated once: no second decision
    assert _decisions(inst, hold) == [*recorded, ("applied", decisions[1]["seq"])]  # applied once
    runs_now = _sealed(inst, "job_run", "holds")
    summary = runs_now[-1]
    assert len(runs_now) == len(runs) + 1
    assert summary["summary"]["applied"] == {"hold_applied": [[decisions[1]["seq"]] * 2]}, summary
    assert holds.sync(inst.services) == {"decisions": 0, "evaluated": 0}  # nothing left, nothing twice
    assert _sealed(inst, "job_run", "holds") == runs_now and _decisions(inst, hold) == [*recorded, ("applied", decisions[1]["seq"])]
    assert report(inst.services).ok


def test_the_store_going_down_mid_release_is_retried_reported_and_never_half_recorded(inst: Instance) -> None:
    seqs = [inst.ingest(message(f"wamid.A{i}", f"the quote {i}", ALICE))[0] for i in range(4)]
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    objects = _objects_of(inst, seqs)
    assert all(inst.server_holds(k) == {"ON"} for k in objects)
    runner = jobs.Runner(inst.services, jobs.load_schedule(inst.services.settings))
    store: Any = inst.services.store
    turned_off: list[str] = []
    stopped: list[bool] = []

    def down_after_three(key: str, on: bool) -> None:  # SeaweedFS stops after three legal holds are OFF
        if len(turned_off) == 3 and not stopped:
            backends.stop("seaweedfs")
            stopped.append(True)
        type(store).set_legal_hold(store, key, on)
        turned_off.append(key)

    store.set_legal_hold = down_after_three
    try:
        with pytest.raises(holds.DecisionPending) as caught:
            holds.release_hold(inst.services, "test:legal", hold, "settled")
        del store.set_legal_hold  # the driver's own from here on
        assert stopped and len(turned_off) == 3
        assert str(caught.value).startswith(f"{hold}: hold_released is journaled") and "store-error" in str(caught.value)
        # The decision is sealed (its segment is in the store); the catalog still says what the
        # store did not finish: active, every record and object still counted.
        with inst.services.sessions() as session:
            (release_seq,) = session.scalars(select(Record.seq).where(Record.kind == "audit",
                                                                      Record.type == "hold_released"))
            assert cursor_value(session, holds.CURSOR) < release_seq <= stored_through(session)
        shown = holds.show(inst.services, hold)
        assert shown["status"] == "active" and shown["counts"]["records"] == 8
        assert [e["event"] for e in shown["history"]] == ["created", "applied"]
        # The holds job retries it, fails while the store is down, and says so.
        failed = runner.run_housekeeping("holds")
        assert failed.outcome == "failed" and failed.code == "store-error", failed
        with inst.services.sessions() as session:
            state = session.get(JobState, "holds")
            assert state is not None and state.last_outcome == "failed" and state.last_error == "store-error"
        assert holds.show(inst.services, hold)["status"] == "active"
    finally:
        if stopped:
            backends.start("seaweedfs")
    off = [k for k in objects if inst.server_holds(k) == {"OFF"}]  # the store half done
    assert sorted(off) == sorted(turned_off) and all(inst.server_holds(k) == {"ON"} for k in objects if k not in off)

    (released,) = _sealed(inst, "audit", "hold_released")  # read from the store, back
    assert released["seq"] == release_seq and released["hold"] == hold and released["counts"]["segments"] == 4

    done = runner.run_housekeeping("holds")  # the job's next run
    assert done.outcome == "ok" and done.summary == {"decisions": 1, "evaluated": 0}, done
    assert all(inst.server_holds(k) == {"OFF"} for k in objects)
    shown = holds.show(inst.services, hold)
    assert shown["status"] == "released" and shown["release_seq"] == released["seq"] and shown["counts"]["records"] == 0
    assert [(e["event"], e["seq"]) for e in shown["history"]][-1] == ("released", released["seq"])
    assert [e["event"] for e in shown["history"]] == ["created", "applied", "released"]  # recorded once
    details = shown["history"][-1]["details"]
    assert details["legal_holds_off"] == len(objects) and details["kept_for_other_holds"] == 0
    assert details["counts"] == released["counts"]  # what was sealed is what was done
    assert released["counts"]["segments"] + released["counts"]["checkpoints"] == len(objects)
    *_, run = _sealed(inst, "job_run", "holds")
    assert run["summary"]["applied"] == {"hold_released": [[released["seq"]] * 2]}, run
    assert len(_sealed(inst, "audit", "hold_released")) == 1
    assert report(inst.services).ok


@pytest.mark.parametrize("inst", [("sqlite", "fts5")], indirect=True, ids=["sqlite"])
def test_the_store_down_during_a_release_is_reported_and_finished_when_it_returns(inst: Instance) -> None:
    (alice,) = inst.ingest(message("wamid.A1", "the quote", ALICE))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    backends.stop("seaweedfs")
    try:
        with pytest.raises(holds.DecisionPending) as caught:
            holds.release_hold(inst.services, "test:legal", hold, "settled")
        assert str(caught.value).startswith(f"{hold}: hold_released is journaled")
        shown = holds.show(inst.services, hold)  # never half-recorded: still active, still counted
        assert shown["status"] == "active" and shown["counts"]["records"] == 2
    finally:
        backends.start("seaweedfs")
    assert inst.held(alice)
    holds.sync(inst.services)  # the job's next run
    shown = holds.show(inst.services, hold)
    assert shown["status"] == "released" and shown["release_reason"] == "settled" and not inst.held(alice)
    assert report(inst.services).ok
