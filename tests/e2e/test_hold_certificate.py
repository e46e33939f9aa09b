"""Hold certificates and the sealed record of a hold sync, on the real servers (SeaweedFS
Object Lock, SQLite and PostgreSQL catalogs).

The RFC 6962 hashing is written here from the RFC (section 2.1), not imported from
``archiver.chain``, so the certificate's root is checked by an independent computation.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import func, select

from archiver import hold_certificate, holds
from archiver.catalog import Record, Segment
from archiver.cli import main as cli
from tests.e2e.test_holds import ALICE, BOB, CATALOGS, Instance, _instance, _token, message
from tests.e2e.test_pipeline import seal

pytestmark = [pytest.mark.s3]


@pytest.fixture(params=CATALOGS, ids=lambda p: p[0] if isinstance(p, tuple) else str(p))
def inst(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    yield from _instance(request, tmp_path, monkeypatch, {})


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1: MTH({}) = SHA-256(), MTH({d0}) = leaf, else split at the largest power of 2 < n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def stored_leaves(inst: Instance) -> dict[int, str]:
    """Every sealed record's leaf hash, read from the segments in the store: SHA-256(0x00 || canonical
    JSON of the stored line without its hash)."""
    out = {}
    with inst.services.sessions() as session:
        keys = list(session.scalars(select(Segment.key)))
    for key in keys:
        for line in gzip.decompress(inst.services.store.get(key)).splitlines():
            rec = json.loads(line)
            rec.pop("hash")
            body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            out[rec["seq"]] = hashlib.sha256(b"\x00" + body).hexdigest()
    return out


def public_key(inst: Instance) -> Any:
    return load_pem_public_key(inst.services.settings.signing_key_path.with_suffix(".pub").read_bytes())


def job_runs(inst: Instance) -> int:
    with inst.services.sessions() as session:
        return session.scalar(select(func.count()).select_from(Record)
                              .where(Record.kind == "job_run", Record.type == "holds")) or 0


def test_certificate_verifies_with_only_the_public_key_and_its_root_recomputes(inst: Instance) -> None:
    alice = inst.ingest(message("wamid.A1", "one", ALICE), message("wamid.A2", "two", ALICE))
    inst.ingest(message("wamid.B1", "other", BOB))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    doc = hold_certificate.generate(inst.services, hold, "test:legal")
    cert = doc["certificate"]
    assert doc["algorithm"] == "Ed25519"
    # the signature over the canonical JSON, checked with the published public key alone
    body = json.dumps(cert, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    public_key(inst).verify(base64.b64decode(doc["signature"]), body)
    held = sorted(inst.held_seqs(hold))
    assert set(alice) <= set(held) and [s for s, _ in cert["records"]] == held
    leaves = stored_leaves(inst)
    assert cert["records"] == [[s, leaves[s]] for s in held]
    assert cert["merkle_root"] == mth([bytes.fromhex(leaves[s]) for s in held]).hex()
    assert cert["hold"]["id"] == hold and cert["hold"]["status"] == "active"
    assert cert["hold"]["criteria"]["custodians"] == [ALICE]
    assert cert["checkpoint"]["last_seq"] >= held[-1]
    assert hold_certificate.verify(doc, public_key(inst)) == []
    assert hold_certificate.verify(doc, public_key(inst), inst.services) == []
    # a round trip through a file, as a recipient gets it
    again = json.loads(json.dumps(doc))
    assert hold_certificate.verify(again, public_key(inst)) == []
    # generating it is audited (and sealed like every audit event)
    with inst.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "audit", Record.type == "hold_certificate_generated")) == 0  # journaled, not yet sealed
    seal(inst.services)
    with inst.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "audit", Record.type == "hold_certificate_generated")) == 1


def test_a_flipped_leaf_or_seq_fails_naming_the_record(inst: Instance) -> None:
    inst.ingest(message("wamid.A1", "one", ALICE), message("wamid.A2", "two", ALICE))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    doc = hold_certificate.generate(inst.services, hold, "test:legal")
    seq, leaf = doc["certificate"]["records"][1]

    flipped = copy.deepcopy(doc)
    flipped["certificate"]["records"][1][1] = ("0" if leaf[0] != "0" else "1") + leaf[1:]
    offline = hold_certificate.verify(flipped, public_key(inst))
    assert any("signature does not verify" in p for p in offline)
    assert any("Merkle root does not recompute" in p for p in offline)
    online = hold_certificate.verify(flipped, public_key(inst), inst.services)
    assert [p for p in online if p.startswith("seq ")] == [
        f"seq {seq}: leaf hash {flipped['certificate']['records'][1][1][:16]}... differs from the chain's {leaf[:16]}..."]

    moved = copy.deepcopy(doc)
    last = moved["certificate"]["records"][-1][0]
    moved["certificate"]["records"][-1][0] = last + 1000
    online = hold_certificate.verify(moved, public_key(inst), inst.services)
    assert f"seq {last + 1000}: not in the chain" in online
    assert any("signature does not verify" in p for p in online)

    other = copy.deepcopy(doc)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    stranger = Ed25519PrivateKey.generate().public_key()
    assert any("signature does not verify" in p for p in hold_certificate.verify(other, stranger))


def test_a_hold_with_no_records_has_a_certificate(inst: Instance) -> None:
    inst.ingest(message("wamid.A1", "one", ALICE))
    hold = inst.hold(inst.matter(), custodians=["4400000000000"])
    doc = hold_certificate.generate(inst.services, hold, "test:legal")
    cert = doc["certificate"]
    assert cert["records"] == [] and cert["record_count"] == 0 and cert["segments"] == []
    assert cert["merkle_root"] == hashlib.sha256(b"").hexdigest() == mth([]).hex()
    assert hold_certificate.verify(doc, public_key(inst), inst.services) == []


def test_cli_writes_and_verifies_a_certificate(inst: Instance, tmp_path: Path) -> None:
    inst.ingest(message("wamid.A1", "one", ALICE))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    runner = CliRunner()
    out = tmp_path / "cert.json"
    made = runner.invoke(cli, ["hold", "certificate", hold, "--out", str(out)], env=inst.env, catch_exceptions=False)
    assert made.exit_code == 0, made.output
    assert "2 records" in made.stdout and out.exists()
    pub = str(inst.services.settings.signing_key_path.with_suffix(".pub"))
    ok = runner.invoke(cli, ["hold", "verify-certificate", str(out), "--public-key", pub], env=inst.env)
    assert ok.exit_code == 0 and "certificate OK (against the archive)" in ok.stdout, ok.output
    offline = runner.invoke(cli, ["hold", "verify-certificate", str(out), "--public-key", pub, "--offline"],
                            env=inst.env)
    assert offline.exit_code == 0 and "certificate OK (offline)" in offline.stdout, offline.output
    doc = json.loads(out.read_text())
    seq = doc["certificate"]["records"][0][0]
    doc["certificate"]["records"][0][1] = "00" * 32
    out.write_text(json.dumps(doc))
    bad = runner.invoke(cli, ["hold", "verify-certificate", str(out), "--public-key", pub], env=inst.env)
    assert bad.exit_code == 1 and f"FAIL seq {seq}: leaf hash" in bad.stderr
    missing = runner.invoke(cli, ["hold", "certificate", "hold-nope", "--out", str(out)], env=inst.env)
    assert missing.exit_code == 2 and "error[no-such-hold]" in missing.stderr


def test_api_gives_the_certificate_to_legal_and_admin_only(inst: Instance) -> None:
    inst.ingest(message("wamid.A1", "one", ALICE))
    hold = inst.hold(inst.matter(), custodians=[ALICE])
    url = f"/api/v1/holds/{hold}/certificate"
    for role in ("compliance", "auditor", "ingest"):
        assert inst.client.get(url, headers=_token(inst, role)).status_code == 403, role
    assert inst.client.get(url).status_code == 401
    for role in ("legal", "admin"):
        got = inst.client.get(url, headers=_token(inst, role))
        assert got.status_code == 200, role
        assert hold_certificate.verify(got.get_json(), public_key(inst), inst.services) == []
    assert inst.client.get("/api/v1/holds/hold-nope/certificate", headers=_token(inst, "legal")).status_code == 404


def test_a_sync_that_applied_something_seals_one_job_run_and_an_idle_one_none(inst: Instance) -> None:
    matter = inst.matter()
    assert job_runs(inst) == 1  # matter_created applied
    hold = inst.hold(matter, custodians=[ALICE])
    after_create = job_runs(inst)
    assert after_create >= 2
    holds.sync(inst.services)
    holds.sync(inst.services)
    assert job_runs(inst) == after_create  # idle: nothing sealed
    with inst.services.sessions() as session:
        head = session.scalar(select(func.max(Record.seq)))
    holds.sync(inst.services)
    with inst.services.sessions() as session:
        assert session.scalar(select(func.max(Record.seq))) == head  # not even the job_run record's own evaluation
    (alice,) = inst.ingest(message("wamid.A1", "one", ALICE))
    summary = holds.sync(inst.services)  # new held records: one hold_applied decision applied
    assert summary == {"decisions": 1, "evaluated": 1}
    assert job_runs(inst) == after_create + 1
    assert alice in inst.held_seqs(hold)
    with inst.services.sessions() as session:
        last = session.scalars(select(Record).where(Record.kind == "job_run", Record.type == "holds")
                               .order_by(Record.seq.desc()).limit(1)).one()
        runs = session.scalar(select(func.count()).select_from(Record).where(Record.seq > last.seq))
    assert runs == 0  # the record is sealed at the end of the run that made it
    holds.sync(inst.services)
    assert job_runs(inst) == after_create + 1
