"""Signed PDF reports (issue 10, point 3) on the real servers (SeaweedFS Object Lock): every kind
is checked as a recipient would check it: Poppler's pdfsig with an NSS database trusting the
signer's certificate (or its CA), a changed byte breaking the signature, the PDF/A-3b
identification, and the machine-readable report.json attached to it; each report is an audit
record with the PDF's SHA-256. A tampered archive's integrity report names the break; a bad
signer is refused before anything is rendered."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from archiver import chain, export, holds, indexer, jobs
from archiver.auth import create_token
from archiver.catalog import Journal, Record, Segment
from archiver.cli import main as cli
from archiver.listing import Filters, audit_list
from archiver.reports import KINDS
from tests import pdfcheck
from tests.conftest import make_env
from tests.e2e.test_consent import BUSINESS_ID, preference, template_status, text
from tests.e2e.test_disposition import KEPT, REVIEWED, SHORT, Archive, _archive
from tests.e2e.test_holds import message
from tests.e2e.test_pipeline import msg_body, post, seal
from tests.e2e.test_tamper import lines_of, rewrite

pytestmark = [pytest.mark.s3, pytest.mark.filterwarnings("ignore::ResourceWarning"),
              # WeasyPrint leaves its sRGB ICC profile file open (a library leak, not ours)
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture
def arch(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Archive]:
    """An archive on SeaweedFS Object Lock with the disposition tests' short-retention policy."""
    yield from _archive(request, tmp_path, monkeypatch)


def _token(arch: Archive, role: str, name: str) -> dict[str, str]:
    with arch.services.sessions.begin() as session:
        return {"Authorization": f"Bearer {create_token(session, role, name)}"}


def _reports_audited(arch: Archive) -> list[dict[str, Any]]:
    seal(arch.services)
    with arch.services.sessions() as session:
        return audit_list(arch.services, session, Filters(match=("report",), limit=100, order="oldest"))["items"]


def _check_pdf(path: Path, nssdir: Path, kind: str) -> dict[str, Any]:
    """Signed (trusted, whole document), PDF/A-3b, report.json attached; a changed byte breaks it."""
    pdfcheck.assert_signed(path, nssdir)
    pdfcheck.assert_a_changed_byte_breaks_it(path, nssdir)
    pdf = path.read_bytes()
    assert pdfcheck.pdfa_id(pdf) == ("3", "B")
    data: dict[str, Any] = json.loads(pdfcheck.attachments(pdf)["report.json"])
    assert data["kind"] == kind and data["format"] == 1
    return data


def _activity(arch: Archive) -> dict[str, Any]:
    """Messages, searches, views, an export, a hold placed and released, failed logins, a refused
    role, a WORM self-test job run, a disposition run and an approved review batch."""
    (short,) = arch.ingest(message("wamid.S1", "expiring quote", SHORT))
    (kept,) = arch.ingest(message("wamid.K1", "refund kept", KEPT))
    (reviewed,) = arch.ingest(message("wamid.R1", "expiring reviewed", REVIEWED))
    indexer.index_pending(arch.services)
    auditor = _token(arch, "auditor", "ines-auditor")
    assert arch.client.get("/api/v1/search?q=refund", headers=auditor).status_code == 200
    assert arch.client.get(f"/api/v1/records/{kept}", headers=auditor).status_code == 200
    assert arch.client.get("/api/v1/search?q=refund").status_code == 401  # no token
    for _ in range(2):
        assert arch.client.get("/api/v1/search?q=refund", headers={"Authorization": "Bearer wa_bogus"}).status_code == 401
    assert arch.client.get("/api/v1/search?q=refund", headers=_token(arch, "ingest", "feeder")).status_code == 403
    export.write_bundle(arch.services, export.Selection(query="refund"), arch.services.settings.home / "x1",
                        "test:exporter")
    matter = holds.create_matter(arch.services, "test:legal", "Acme v. Us")
    hold = holds.create_hold(arch.services, "test:legal", matter, "kept", holds.parse_criteria([KEPT]), "preserve")
    holds.release_hold(arch.services, "test:legal", hold, "settled")
    runner = jobs.Runner(arch.services, jobs.load_schedule(arch.services.settings))
    done = runner.run_scheduled("worm-selftest", "manual", actor="test")
    assert done is not None and done.outcome.outcome == "ok", done
    # before the disposition deletes the short-test segment: the consent ledger reads every
    # record sealed since its cursor, and cannot read one of a deleted segment
    consent_and_templates = _consent_and_templates(arch)
    arch.wait_expired(short, reviewed)
    disposed = arch.cli("dispose", "--json")
    assert disposed.exit_code == 0, disposed.output
    batch = json.loads(disposed.stdout)["batches_proposed"][0]
    assert arch.cli("disposition", "approve", batch).exit_code == 0
    arch.services.rejections.flush(everything=True)  # the windows of the refused requests above
    seal(arch.services)
    return {"hold": hold, "matter": matter, "batch": batch, "kept": kept, **consent_and_templates}


ANA, BEA, CARL = "4479460007001", "4479460007002", "4479460007003"
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _webhooks(arch: Archive, *bodies: bytes) -> None:
    for body in bodies:
        assert post(arch.client, body).status_code == 200
    seal(arch.services)


def _send(arch: Archive, token: dict[str, str], wamid: str, who: str, template: str, at: int) -> None:
    body = {"request": {"messaging_product": "whatsapp", "to": who, "type": "template",
                        "template": {"name": template, "language": {"code": "en_GB"}}},
            "response": {"messaging_product": "whatsapp", "contacts": [{"input": who, "wa_id": who}],
                         "messages": [{"id": wamid}]},
            "sender": "crm", "sent_at": at, "phone_number_id": BUSINESS_ID}
    resp = arch.client.post("/api/v1/capture/messages", json=body, headers=token)
    assert resp.status_code == 202, resp.get_json()
    seal(arch.services)


def _consent_and_templates(arch: Archive) -> dict[str, Any]:
    """Consent: Ana opts in (API) and stops by webhook, Bea's STOP in a message is detected and
    confirmed, Carl opts in; marketing sent to Ana and Bea after their opt-outs (two violations,
    one resolved), to Carl (fine). Templates: spring_offer approved, paused (a send while paused:
    a finding), approved again, and reviewed."""
    shutil.copy(REPO_POLICIES / "consent.yaml", arch.services.settings.policies_dir / "consent.yaml")
    ingest = _token(arch, "ingest", "crm-feed")
    now = int(time.time())
    _webhooks(arch, template_status("spring_offer", "APPROVED", "MARKETING", now - 30))
    for who in (ANA, BEA, CARL):
        body = {"contact": who, "scope": "marketing", "action": "opt_in", "source": "web-form", "at": now - 29,
                "proof": "form-1"}
        assert arch.client.post("/api/v1/consent", json=body, headers=ingest).status_code == 202
    _webhooks(arch, preference(ANA, "stop", now - 20), text("wamid.bea.stop", BEA, "STOP please", now - 20))
    _send(arch, ingest, "wamid.ana.m1", ANA, "spring_offer", now - 15)
    _send(arch, ingest, "wamid.bea.m1", BEA, "spring_offer", now - 15)
    _send(arch, ingest, "wamid.carl.m1", CARL, "spring_offer", now - 15)
    _webhooks(arch, template_status("spring_offer", "PAUSED", "MARKETING", now - 10))
    _send(arch, ingest, "wamid.carl.m2", CARL, "spring_offer", now - 9)  # while paused (and consent fine)
    _webhooks(arch, template_status("spring_offer", "APPROVED", "MARKETING", now - 5))
    with arch.services.sessions() as session:
        bea_stop = session.scalar(select(Record.seq).where(Record.wamid == "wamid.bea.stop", Record.kind == "message"))
    assert bea_stop is not None
    confirmed = arch.cli("consent", "confirm", str(bea_stop), "--note", "a clear opt-out")
    assert confirmed.exit_code == 0, confirmed.output
    reviewed = arch.cli("review", "consent", "--json")
    assert reviewed.exit_code == 0, reviewed.output
    violations = {f["detail"]["wamid"]: f["id"] for f in json.loads(reviewed.stdout)["findings"]}
    assert set(violations) == {"wamid.ana.m1", "wamid.bea.m1"}, violations
    resolved = arch.cli("findings", "resolve", violations["wamid.ana.m1"], "--note", "re-opted in by phone")
    assert resolved.exit_code == 0, resolved.output
    tpl = arch.cli("review", "templates", "--json")
    assert tpl.exit_code == 0, tpl.output
    tfound = [(f["rule"], f["detail"].get("wamid")) for f in json.loads(tpl.stdout)["findings"]]
    assert tfound == [("sent-not-approved", "wamid.carl.m2")], tfound
    done = arch.cli("templates", "review", "spring_offer", "--decision", "approve", "--note", "wording checked")
    assert done.exit_code == 0, done.output
    seal(arch.services)
    return {"violations": violations, "bea_stop": bea_stop}


CATALOGS = [("sqlite", "fts5"), pytest.param(("postgresql", "fts5"), marks=pytest.mark.postgres)]


@pytest.mark.parametrize("arch", CATALOGS, indirect=True, ids=["sqlite", "postgresql"])
def test_every_report_kind_is_signed_pdfa_with_its_data_and_is_audited(arch: Archive, tmp_path: Path) -> None:
    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    did = _activity(arch)
    written: dict[str, dict[str, Any]] = {}
    nssdir: Path | None = None
    for kind in KINDS:
        out = tmp_path / f"{kind}.pdf"
        got = arch.cli("report", kind, "--from", start, "--out", str(out))
        assert got.exit_code == 0, got.output
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        assert f"sha256 {digest}" in got.stdout
        if nssdir is None:  # the embedded default: a self-signed certificate generated on first use
            signer = arch.services.settings.home / "report-signer.pem"
            assert signer.stat().st_mode & 0o777 == 0o600
            nssdir = pdfcheck.nss_db(tmp_path / "nss", pdfcheck.signer_certificate(signer))
        written[kind] = _check_pdf(out, nssdir, kind) | {"sha256": digest}

    integrity = written["integrity"]["content"]
    assert integrity["ok"] and integrity["errors"] == [] and integrity["gaps"] == [], integrity
    assert integrity["summary"]["segments_verified"] == integrity["summary"]["segments_in_period"] > 0
    # the disposition run deleted the short-test segment: verified by its saved leaf hashes, not a gap
    assert [s["retention_class"] for s in integrity["segments"] if s["deleted_by_disposition"]] == ["short-test"]
    assert integrity["worm_selftest_now"]["ok"] and integrity["worm_selftest_now"]["store"] == "S3Store"
    assert [r["outcome"] for r in integrity["worm_selftest_runs"]] == ["ok"]
    assert integrity["catalog"]["ok"]

    access = written["access"]["content"]
    seqs = [e["seq"] for e in access["events"]]
    assert seqs == sorted(seqs)  # chronologically (seq order is the order they were sealed in)
    by = access["per_actor"]
    assert by["ines-auditor (auditor)"]["search"] == 1 and by["ines-auditor (auditor)"]["view"] == 1
    assert by["test:exporter"]["export"] == 1
    assert by["test:legal"]["hold"] == 3  # matter_created, hold_created, hold_released
    assert by["feeder"]["refused"] == 1  # a known token whose role may not search
    failed = [e for e in access["events"] if e["category"] == "failed_login"]
    assert sum(e["details"]["count"] for e in failed) == 3 and access["totals"]["failed_login"] == 3
    assert {e["details"]["reason"] for e in failed} == {"no token", "bad token"}
    assert {e["event"] for e in access["events"] if e["category"] == "hold"} == {
        "matter_created", "hold_created", "hold_released"}
    assert "wa_bogus" not in json.dumps(access)  # never a token

    held = written["holds"]["content"]
    (matter,) = held["matters"]
    (hold,) = matter["holds"]
    assert (matter["id"], hold["id"], hold["status"], hold["release_reason"]) == (
        did["matter"], did["hold"], "released", "settled")
    assert hold["criteria"]["custodians"] == [KEPT]
    assert [e["event"] for e in hold["history"]] == ["created", "applied", "released"]

    disp = written["dispositions"]["content"]
    assert disp["summary"]["runs"] >= 1 and disp["runs"][0]["keys"] and disp["runs"][0]["seq"]
    assert {k["class"] for r in disp["runs"] for k in r["keys"]} >= {"short-test"}
    (batch,) = disp["batches"]
    assert (batch["id"], batch["state"], batch["class"]) == (did["batch"], "approved", "reviewed")
    assert batch["decided_by"] and batch["decided_by"].startswith("cli:")

    cons = written["consent"]["content"]
    outs = {(e["contact"], e["source"], e.get("status")) for e in cons["changes"] if e["action"] == "opt_out"}
    assert outs == {(ANA, "user_preferences", None), (BEA, "keyword", "confirmed")}, cons["changes"]
    assert {e["contact"] for e in cons["changes"] if e["action"] == "opt_in"} == {ANA, BEA, CARL}
    assert cons["summary"]["opt_outs"] == 2 and cons["summary"]["opt_ins"] == 3
    assert [(d["action"], d["refers_to"]) for d in cons["decisions"]] == [("confirm", did["bea_stop"])]
    by_wamid = {v["detail"]["wamid"]: v for v in cons["violations"]}
    assert set(by_wamid) == set(did["violations"])
    ana = by_wamid["wamid.ana.m1"]
    assert ana["status"] == "resolved" and ana["resolution"]["note"] == "re-opted in by phone"
    assert ana["resolution"]["by"].startswith("cli:") and ana["resolution"]["seq"]
    assert by_wamid["wamid.bea.m1"]["status"] == "open" and by_wamid["wamid.bea.m1"]["seq"]
    assert cons["summary"]["violations_resolved"] == 1 and cons["summary"]["violations_open"] == 1
    assert [r["outcome"] for r in cons["review_runs"]] == ["ok"]
    assert "STOP please" not in json.dumps(cons)  # never message content

    tpls = {t["name"]: t for t in written["templates"]["content"]["templates"]}
    spring = tpls["spring_offer"]
    lang = spring["languages"]["en_GB"]
    assert [e.get("status") for e in lang["history"]] == ["APPROVED", "PAUSED", "APPROVED"]
    assert lang["at_start"]["status"] is None and lang["at_end"]["status"] == "APPROVED"
    assert spring["sends"] == {"count": 4, "without_snapshot": 4, "not_approved": 1}
    assert [(r["decision"], r["note"]) for r in spring["reviews"]] == [("approve", "wording checked")]
    assert spring["last_review"]["seq"] and not spring["retired"]
    assert [(f["rule"], f["detail"]["wamid"], f["status"]) for f in spring["findings"]] == [
        ("sent-not-approved", "wamid.carl.m2", "open")]

    audited = _reports_audited(arch)
    assert [(a["details"]["kind"], a["details"]["pdf_sha256"]) for a in audited] == [
        (k, written[k]["sha256"]) for k in KINDS]
    assert all(a["actor"].startswith("cli:") and a["details"]["period"]["from"] == datetime.fromisoformat(start)
               .isoformat() for a in audited)


@pytest.mark.parametrize("arch", CATALOGS, indirect=True, ids=["sqlite", "postgresql"])
def test_the_api_answers_the_signed_pdf_to_the_roles_it_names(arch: Archive, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    signer, ca = pdfcheck.ca_issued_signer(tmp_path / "pki")  # an organisation's CA, not the default
    monkeypatch.setenv("ARCHIVER_REPORT_SIGNER", str(signer))
    nssdir = pdfcheck.nss_db(tmp_path / "nss", ca)
    arch.ingest(message("wamid.A1", "hello", KEPT))
    today = datetime.now(UTC).date()
    body = {"kind": "integrity", "from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()}
    resp = arch.client.post("/api/v1/reports", json=body, headers=_token(arch, "auditor", "aud"))
    assert resp.status_code == 200 and resp.mimetype == "application/pdf", resp.get_data()[:300]
    assert resp.headers["X-Archiver-Report-Sha256"] == hashlib.sha256(resp.data).hexdigest()
    out = tmp_path / "api.pdf"
    out.write_bytes(resp.data)
    data = _check_pdf(out, nssdir, "integrity")
    assert data["content"]["ok"] and data["generated_by"] == "aud (auditor)"
    assert data["signer"]["subject"] == "CN=archiver test report signer" and not data["signer"]["self_signed"]
    assert data["period"] == {"from": f"{today - timedelta(days=1)}T00:00:00+00:00",
                              "to": f"{today + timedelta(days=1)}T00:00:00+00:00"}  # "to" a date: the whole day

    legal = _token(arch, "legal", "counsel")
    refused = arch.client.post("/api/v1/reports", json={**body, "kind": "access"}, headers=legal)
    assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    for kind in ("consent", "templates", "dispositions", "integrity"):  # oversight of the archive: not legal's
        assert arch.client.post("/api/v1/reports", json={"kind": kind}, headers=legal).status_code == 403
    assert arch.client.post("/api/v1/reports", json={"kind": "holds"}, headers=legal).status_code == 200
    compliance = _token(arch, "compliance", "officer")
    got = arch.client.post("/api/v1/reports", json={"kind": "access"}, headers=compliance)
    assert got.status_code == 200
    out.write_bytes(got.data)
    access = _check_pdf(out, nssdir, "access")["content"]
    assert any(e["event"] == "report" and e["details"]["pdf_sha256"] == resp.headers["X-Archiver-Report-Sha256"]
               for e in access["events"])  # the first report is in the access report
    for bad, field in (({"kind": "nope"}, "kind"), ({"kind": "access", "from": "2026-13-01"}, "from"),
                       ({"kind": "access", "from": "2026-12-02", "to": "2026-12-01"}, "to"),
                       ({"kind": "access", "extra": 1}, "extra")):
        answer = arch.client.post("/api/v1/reports", json=bad, headers=compliance)
        assert answer.status_code == 400 and answer.get_json()["field"] == field, (bad, answer.get_json())
    for kind, role in (("consent", "auditor"), ("templates", "compliance")):
        got = arch.client.post("/api/v1/reports", json={"kind": kind}, headers=_token(arch, role, f"{role}-2"))
        assert got.status_code == 200, got.get_data()[:300]
        out.write_bytes(got.data)
        assert _check_pdf(out, nssdir, kind)["generated_by"] == f"{role}-2 ({role})"
    assert [a["details"]["kind"] for a in _reports_audited(arch)] == ["integrity", "holds", "access", "consent",
                                                                      "templates"]


# --------------------------------------------------------------------------- on the local store


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Archive]:
    """An archive on the embedded default (the local store, whose files root can rewrite)."""
    arch = Archive(make_env(tmp_path / "home"))
    for k, v in arch.env.items():
        monkeypatch.setenv(k, v)
    try:
        yield arch
    finally:
        arch.services.close()


def test_the_integrity_report_of_a_tampered_archive_names_each_break_and_gap(local: Archive, tmp_path: Path) -> None:
    for run in range(4):
        assert post(local.client, msg_body(f"wamid.T{run}", f"text {run}")).status_code == 200
        seal(local.services)
    with local.services.sessions() as session:
        segs = list(session.scalars(select(Segment).order_by(Segment.first_seq)))
    objects = Path(local.services.store.root) / "objects"
    # A record's ciphertext changed in the second segment...
    path = objects / segs[1].key
    lines = lines_of(path)
    rec = json.loads(lines[0])
    rec["ct"] = ("A" if rec["ct"][0] != "A" else "B") + rec["ct"][1:]
    lines[0] = chain.canonical(rec)
    rewrite(path, chain.encode_segment(lines))
    # ...and the third segment's checkpoint removed.
    (objects / segs[2].checkpoint_key).unlink()

    out = tmp_path / "integrity.pdf"
    got = CliRunner().invoke(cli, ["report", "integrity", "--out", str(out)])
    assert got.exit_code == 1, got.output  # written all the same, signed: it is the evidence
    assert "FAILED" in got.stderr and f"seq {segs[1].first_seq}" in got.stderr
    nssdir = pdfcheck.nss_db(tmp_path / "nss", pdfcheck.signer_certificate(
        local.services.settings.home / "report-signer.pem"))
    content = _check_pdf(out, nssdir, "integrity")["content"]
    assert not content["ok"]
    assert any(re.match(rf"seq {segs[1].first_seq}: hash [0-9a-f]{{16}}\.\.\. does not recompute", e)
               for e in content["errors"]), content["errors"]
    assert {"first_seq": segs[2].first_seq, "last_seq": segs[2].last_seq} in [
        {k: g[k] for k in ("first_seq", "last_seq")} for g in content["gaps"]], content["gaps"]
    bad = {s["segment"]: s["ok"] for s in content["segments"]}
    assert bad[segs[1].key] is False and bad[segs[0].key] is True and bad[segs[3].key] is True
    assert any("does not name the previous checkpoint" in e for e in content["errors"])
    text = pdfcheck.pdf_text(out)
    assert "FAILED" in text and "does not recompute" in text


def test_with_a_timestamp_authority_the_report_is_signed_pades_b_t(local: Archive, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert post(local.client, msg_body("wamid.TSA", "text")).status_code == 200
    seal(local.services)
    plain, stamped = tmp_path / "b-b.pdf", tmp_path / "b-t.pdf"
    assert CliRunner().invoke(cli, ["report", "holds", "--out", str(plain)]).exit_code == 0
    with pdfcheck.local_tsa() as url:
        monkeypatch.setenv("ARCHIVER_TSA_URL", url)
        got = CliRunner().invoke(cli, ["report", "holds", "--out", str(stamped)])
    assert got.exit_code == 0, got.output
    assert "signature_time_stamp_token" not in pdfcheck.unsigned_attributes(plain.read_bytes())
    assert "signature_time_stamp_token" in pdfcheck.unsigned_attributes(stamped.read_bytes())
    nssdir = pdfcheck.nss_db(tmp_path / "nss", pdfcheck.signer_certificate(
        local.services.settings.home / "report-signer.pem"))
    _check_pdf(stamped, nssdir, "holds")


@pytest.mark.parametrize("problem", ["expired", "wrong-key"])
def test_a_bad_signer_is_refused_before_anything_is_rendered(local: Archive, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, problem: str) -> None:
    expired = datetime.now(UTC) - timedelta(days=2) if problem == "expired" else None
    signer, _ = pdfcheck.ca_issued_signer(tmp_path / "pki", not_after=expired, wrong_key=problem == "wrong-key")
    monkeypatch.setenv("ARCHIVER_REPORT_SIGNER", str(signer))
    with local.services.sessions() as session:
        journal_before = session.scalar(select(func.count()).select_from(Journal))
    out = tmp_path / "r.pdf"
    got = CliRunner().invoke(cli, ["report", "access", "--out", str(out)])
    assert got.exit_code == 2, got.output
    said = "certificate expired on" if problem == "expired" else "private key does not match the certificate"
    assert "error[report-signer-invalid]" in got.stderr and said in got.stderr and "nothing was rendered" in got.stderr
    assert not out.exists()
    answer = local.client.post("/api/v1/reports", json={"kind": "access"}, headers=_token(local, "auditor", "a"))
    assert answer.status_code == 503 and answer.get_json()["error"] == "report-signer-invalid"
    assert said in answer.get_json()["message"]
    with local.services.sessions() as session:  # no report audit record: nothing was journaled at all
        assert session.scalar(select(func.count()).select_from(Journal)) == journal_before
