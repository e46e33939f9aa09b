"""GDPR erasure (issue 9, point 4) on the real servers: SeaweedFS Object Lock, SQLite and
PostgreSQL catalogs, FTS5 and OpenSearch.

``archiver erase`` / ``POST /api/v1/erasures`` resolve the contact to the person, seal an
``erasure`` decision record, then crypto-shred her keys in ``erasable: true`` classes that no
active hold covers; every other key is kept with its reason, in a signed certificate.
"""

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
from sqlalchemy import func, select

from archiver import erasure, holds, indexer
from archiver.catalog import DataKey, DisposedKey, Disposition, Journal, Record, Segment
from tests import backends
from tests.contract.test_catalog import _pg_schema_url
from tests.conftest import make_env
from tests.e2e.test_disposition import Archive
from tests.e2e.test_holds import message
from tests.e2e.test_identity import BSUID, PHONE, history, live
from tests.serving import ROOT

pytestmark = [pytest.mark.s3]

ALICE, BOB, HELD = "33611000001", "33611000002", "33611000003"
FEB, MAR = "1770000000", "1772600000"  # 2026-02-02, 2026-03-04
TRADING_DESK = "2000"  # a business phone-number id whose conversations are a legal obligation

POLICY = f"""classes:
  - name: trading
    retain: 6y
    rule: finra-4511
    erasable: false
    match:
      business_number: ["{TRADING_DESK}"]
  - name: customer
    retain: 7y
    erasable: true
    match:
      contact: ["{ALICE}", "{BOB}", "{HELD}", "{PHONE}", "{BSUID}"]
  - name: default
    retain: 7y
"""


@pytest.fixture(params=[("sqlite", "fts5"), pytest.param(("postgresql", "fts5"), marks=pytest.mark.postgres),
                        pytest.param(("sqlite", "opensearch"), marks=pytest.mark.opensearch)],
                ids=lambda p: "-".join(p) if isinstance(p, tuple) else str(p))
def arch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Archive]:
    catalog, search = request.param
    _, store_url = backends.locked_store_url(monkeypatch)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "retention.yaml").write_text(POLICY)
    extra = {"ARCHIVER_STORE_URL": store_url, "ARCHIVER_POLICIES": str(policies)}
    if search == "opensearch":
        extra["ARCHIVER_SEARCH_URL"] = f"{backends.opensearch_url()}/erase-{uuid.uuid4().hex[:10]}?replicas=0"
    urls = iter(_pg_schema_url()) if catalog == "postgresql" else None
    if urls is not None:
        extra["ARCHIVER_CATALOG_URL"] = next(urls)
    env = make_env(tmp_path / "home", **extra)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env[k] = os.environ[k]
    inst = Archive(env)
    try:
        yield inst
    finally:
        drop = getattr(inst.services.search, "drop", None)
        if drop is not None:
            drop()
        inst.services.close()
        if urls is not None:
            next(urls, None)


def _of(arch: Archive, *contacts: str) -> dict[int, str]:
    """seq -> key id of every record whose contact is one of ``contacts``."""
    with arch.services.sessions() as session:
        return {s: k for s, k in session.execute(select(Record.seq, Record.key_id).where(Record.contact.in_(contacts)))}


def _state(arch: Archive) -> tuple[Any, ...]:
    """What an erasure may change: the journal, the keys' wrapped bytes, the disposed keys."""
    with arch.services.sessions() as session:
        return (session.scalar(select(func.max(Journal.id))),
                sorted((k.id, k.wrapped is None, k.destroyed_at) for k in session.scalars(select(DataKey))),
                sorted((d.key_id, d.disposition_id, d.disposed_at) for d in session.scalars(select(DisposedKey))))


def _content(arch: Archive, seq: int) -> Any:
    got = arch.cli("show", str(seq))
    assert got.exit_code == 0, got.output
    return json.loads(got.stdout)


def test_erasing_one_contact_leaves_the_other_readable(arch: Archive, tmp_path: Path) -> None:
    # Alice and Bob write in the same months: their records share periods, never a key.
    alice = arch.ingest(message("wamid.A1", "alice feb", ALICE, ts=FEB), message("wamid.B1", "bob feb", BOB, ts=FEB))
    alice += arch.ingest(message("wamid.A2", "alice mar", ALICE, ts=MAR), message("wamid.B2", "bob mar", BOB, ts=MAR))
    indexer.index_pending(arch.services)
    hers, his = _of(arch, ALICE), _of(arch, BOB)
    assert len(hers) == len(his) == 4 and not set(hers.values()) & set(his.values())
    assert arch.found("alice") == {s for s in hers if arch.record(s).kind == "message"}

    # A dry run prints the plan and changes nothing.
    before = _state(arch)
    dry = arch.cli("erase", "--contact", "+33 6 11 00 00 01", "--reason", "Art. 17 request #1", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and "certificate" not in plan
    assert sorted(k["key"] for k in plan["shred"]) == sorted(set(hers.values())) and plan["kept"] == []
    assert plan["records_shredded"] == 4
    assert _state(arch) == before
    text = arch.cli("erase", "--contact", ALICE, "--reason", "r", "--dry-run")
    assert text.exit_code == 0 and "would shred 3 keys, 4 records" in text.output, text.output
    assert _state(arch) == before and arch.found("alice") == {s for s in hers if arch.record(s).kind == "message"}

    cert_file = tmp_path / "erasure.json"
    got = arch.cli("erase", "--contact", "+33 6 11 00 00 01", "--reason", "Art. 17 request #1", "--json",
                   "--out", str(cert_file))
    assert got.exit_code == 0, got.output
    out = json.loads(got.stdout)
    assert out["applied"] is True and out["erasure_seq"]
    # The decision was sealed as an erasure record before the keys went.
    decision = arch.record(out["erasure_seq"])
    assert (decision.kind, decision.type) == ("decision", "erasure")
    sealed = _content(arch, out["erasure_seq"])["content"]
    assert sealed["event"] == "erasure" and sealed["reason"] == "Art. 17 request #1"
    assert sorted(k["key"] for k in sealed["keys"]) == sorted(set(hers.values()))
    with arch.services.sessions() as session:
        segment = session.get(Segment, decision.segment_id)
        assert segment is not None
        shredded_at = set(session.scalars(select(DataKey.destroyed_at).where(DataKey.id.in_(set(hers.values())))))
    assert shredded_at and all(at is not None and at >= segment.sealed_at for at in shredded_at)

    # Her keys are gone, her records out of the index; every record of Bob's still reads.
    assert not any(arch.key_alive(s) for s in hers)
    assert arch.found("alice") == set() and arch.found("bob") == {s for s in his if arch.record(s).kind == "message"}
    for seq in his:
        view = _content(arch, seq)
        assert view["content"] is not None and "disposition" not in view
    for seq in hers:
        view = _content(arch, seq)
        assert view["content"] is None and view["content_view"]["format"] == "shredded"
        assert view["disposition"]["status"] == "erased" and view["disposition"]["erasure_seq"] == out["erasure_seq"]
        assert view["proof"]["hash"] and view["proof"]["inclusion_path"] is not None

    # The certificate: signed, lists the keys, seqs and classes shredded; the file is the same document.
    doc = json.loads(cert_file.read_text())
    assert doc == out["certificate"] and erasure.verify_certificate(doc) == []
    cert = doc["certificate"]
    assert cert["erasure_seq"] == out["erasure_seq"] and cert["kept"] == []
    assert sorted(k["key"] for k in cert["shredded"]) == sorted(set(hers.values()))
    assert {k["class"] for k in cert["shredded"]} == {"customer"}
    assert sorted(s for k in cert["shredded"] for a, b in k["seqs"] for s in range(a, b + 1)) == sorted(hers)
    doc["certificate"]["kept"] = [{"key": "x"}]
    assert erasure.verify_certificate(doc) != []  # an altered certificate does not verify

    # The chain still verifies: the shredded records' ciphertext is intact.
    verified = arch.cli("verify")
    assert verified.exit_code == 0, verified.output

    # Erasing twice destroys nothing twice: the keys are kept as shredded already, by this erasure.
    state = _state(arch)[1:]
    again = arch.cli("erase", "--contact", ALICE, "--reason", "again", "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["shred"] == [] and second["certificate"]["certificate"]["shredded"] == []
    assert {k["reason"] for k in second["kept"]} == {"destroyed"}
    assert all(f"erasure record {out['erasure_seq']}" in k["why"] for k in second["kept"])
    assert _state(arch)[1:] == state
    assert arch.cli("verify").exit_code == 0


def test_a_person_known_by_phone_and_bsuid_is_erased_under_both(arch: Archive) -> None:
    arch.ingest(history("wamid.H1", "wamid.H2"))  # her phone number only
    arch.ingest(live("wamid.L1", "the quote"))  # pairs her wa_id and BSUID
    arch.ingest(live("wamid.L2", "signed", paired=False))  # BSUID only
    (bob,) = arch.ingest(message("wamid.B1", "bob here", BOB, ts=MAR))
    hers = _of(arch, PHONE, BSUID)
    assert {arch.record(s).contact for s in hers} == {PHONE, BSUID}

    got = arch.cli("erase", "--contact", BSUID, "--reason", "Art. 17", "--json")
    assert got.exit_code == 0, got.output
    out = json.loads(got.stdout)
    assert out["identifiers"] == sorted([PHONE, BSUID])
    assert sorted(k["key"] for k in out["certificate"]["certificate"]["shredded"]) == sorted(set(hers.values()))
    assert not any(arch.key_alive(s) for s in hers)
    assert arch.key_alive(bob) and _content(arch, bob)["content"] is not None
    # By her phone number now: the same person, nothing left to shred.
    again = json.loads(arch.cli("erase", "--contact", PHONE, "--reason", "Art. 17", "--json").stdout)
    assert again["shred"] == [] and {k["reason"] for k in again["kept"]} == {"destroyed"}
    text = arch.cli("erase", "--contact", PHONE, "--reason", "Art. 17")
    assert text.exit_code == 0 and "shredded 0 keys, 0 records" in text.output, text.output
    assert f"shredded already by erasure record {out['erasure_seq']}" in text.output


def test_held_and_obligated_keys_are_kept_with_why_over_the_api(arch: Archive) -> None:
    from archiver.auth import create_token

    (feb,) = arch.ingest(message("wamid.F1", "held feb", HELD, ts=FEB))
    (mar,) = arch.ingest(message("wamid.M1", "free mar", HELD, ts=MAR))
    (desk,) = arch.ingest(message("wamid.T1", "buy 100", HELD, ts=MAR, phone_id=TRADING_DESK))
    matter = holds.create_matter(arch.services, "test:legal", "Acme v. Us")
    hold = holds.create_hold(arch.services, "test:legal", matter, "feb",
                             holds.parse_criteria([HELD], before="2026-03-01"), "preserve")
    with arch.services.sessions() as session:
        assert feb in holds.held_seqs(session) and mar not in holds.held_seqs(session)
    assert arch.record(desk).retention_class == "trading"
    with arch.services.sessions.begin() as session:
        tokens = {role: create_token(session, role, f"t-{role}") for role in ("compliance", "legal", "admin")}

    def call(role: str, body: Any) -> Any:
        return arch.client.post("/api/v1/erasures", json=body, headers={"Authorization": f"Bearer {tokens[role]}"})

    body = {"contact": HELD, "reason": "Art. 17 request #2"}
    assert call("legal", body).status_code == 403 and call("admin", body).status_code == 403
    assert arch.client.post("/api/v1/erasures", json=body).status_code == 401
    assert call("compliance", {"contact": HELD}).status_code == 400  # a reason is required
    assert call("compliance", {**body, "dry_run": "yes"}).status_code == 400
    assert call("compliance", {"contact": "33600000000", "reason": "r"}).status_code == 404  # names nobody
    before = _state(arch)
    dry = call("compliance", {**body, "dry_run": True})
    assert dry.status_code == 200 and dry.get_json()["dry_run"] is True and _state(arch) == before

    got = call("compliance", body)
    assert got.status_code == 201, got.get_json()
    out = got.get_json()
    cert = out["certificate"]["certificate"]
    assert erasure.verify_certificate(out["certificate"]) == []
    kept = {k["key"]: k for k in cert["kept"]}
    shredded = {k["key"] for k in cert["shredded"]}
    # The held February key: kept, naming the hold and its matter.
    feb_key = arch.record(feb).key_id
    assert kept[feb_key]["reason"] == "hold" and kept[feb_key]["holds"] == [{"hold": hold, "matter": matter}]
    assert matter in kept[feb_key]["why"] and arch.key_alive(feb)
    # The trading desk's key: a legal obligation, naming the class and its rule.
    desk_key = arch.record(desk).key_id
    assert kept[desk_key]["reason"] == "class-obligation" and kept[desk_key]["rule"] == "finra-4511"
    assert "class trading (rule finra-4511)" in kept[desk_key]["why"]
    assert arch.key_alive(desk)
    # March, not held and erasable: shredded.
    assert arch.record(mar).key_id in shredded and not arch.key_alive(mar)
    assert _content(arch, feb)["content"] is not None and _content(arch, desk)["content"] is not None
    # The run, as the catalog keeps it: compliance only, 404 for no such erasure.
    url = f"/api/v1/erasures/{out['erasure_id']}"
    assert arch.client.get(url).status_code == 401
    assert arch.client.get(url, headers={"Authorization": f"Bearer {tokens['legal']}"}).status_code == 403
    mine = {"Authorization": f"Bearer {tokens['compliance']}"}
    assert arch.client.get("/api/v1/erasures/999999", headers=mine).status_code == 404
    shown = arch.client.get(url, headers=mine)
    assert shown.status_code == 200, shown.get_json()
    run = shown.get_json()
    assert run["erasure_seq"] == out["erasure_seq"] and run["applied"] is True and run["reason"] == body["reason"]
    assert erasure.verify_certificate(run["certificate"]) == []
    assert {k["key"] for k in run["certificate"]["certificate"]["shredded"]} == shredded
    assert {k["key"] for k in run["certificate"]["certificate"]["kept"]} == set(kept)
    assert arch.cli("verify").exit_code == 0


CRASH = """
import os, signal, sys
from archiver import disposition
from archiver.cli import main
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
disposition._destroy = die
sys.argv = ["archiver", "erase", "--contact", "%s", "--reason", "Art. 17"]
main()
""" % ALICE


def test_kill_9_between_seal_and_shred_is_finished_by_the_next_erase(arch: Archive) -> None:
    arch.ingest(message("wamid.A1", "alice feb", ALICE, ts=FEB))
    hers = _of(arch, ALICE)
    killed = subprocess.run([sys.executable, "-c", CRASH], env={**os.environ, **arch.env}, cwd=ROOT,
                            capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert all(arch.key_alive(s) for s in hers)
    with arch.services.sessions() as session:
        (row,) = session.scalars(select(Disposition))
        assert row.applied_at is None and row.plan["event"] == "erasure"
        assert session.scalar(select(Journal.sealed).where(Journal.id == row.journal_id))  # sealed before it died
        first = session.scalar(select(Journal.delivery_seq).where(Journal.id == row.journal_id))
    # The next erase finishes the sealed one first, then finds nothing left to shred.
    out = json.loads(arch.cli("erase", "--contact", ALICE, "--reason", "Art. 17", "--json").stdout)
    assert out["shred"] == [] and not any(arch.key_alive(s) for s in hers)
    assert all(f"erasure record {first}" in k["why"] for k in out["kept"])
    assert {_content(arch, s)["disposition"]["erasure_seq"] for s in hers} == {first}
    assert arch.cli("verify").exit_code == 0
