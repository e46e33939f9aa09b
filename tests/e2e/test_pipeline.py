"""Webhook -> journal -> sealer -> WORM -> verify, on the embedded default."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from archiver import records, sealer, stats
from archiver import verify as verifier
from archiver.catalog import Journal, MessageState, Record
from archiver.cli import main
from tests.conftest import OLD_SECRET, all_fixture_bodies, make_env, sign


def seal(services: Any) -> int:
    return sealer.seal_pending(services)


def counts(services: Any) -> dict[str, Any]:
    with services.sessions() as session:
        return stats.collect(session)


def report(services: Any) -> verifier.Report:
    with services.sessions() as session:
        return verifier.audit(services.store, services.signing_key.public_key(), session)


def post(client: Any, body: bytes, **headers: str) -> Any:
    return client.post("/webhooks/whatsapp", data=body, headers={**sign(body), **headers})


def msg_body(wamid: str, text: str = "hello", field: str = "messages", ts: str = "1780001000") -> bytes:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"},
             "contacts": [{"profile": {"name": "Ines"}, "wa_id": "4479460001234"}],
             "messages": [{"from": "4479460001234", "id": wamid, "timestamp": ts, "type": "text",
                           "text": {"body": text}}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": field, "value": value}]}]}).encode()


def status_body(wamid: str, state: str) -> bytes:
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"},
             "statuses": [{"id": wamid, "status": state, "timestamp": "1780001500", "recipient_id": "4479460001234"}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": "messages", "value": value}]}]}).encode()


def test_every_fixture_case_is_accepted_sealed_and_verifiable(client: Any, services: Any) -> None:
    bodies = all_fixture_bodies()
    for name, body in bodies:
        assert post(client, body).status_code == 200, name
    seal(services)
    c = counts(services)
    assert c["deliveries"] == len(bodies)
    assert c["quarantined"] == 0
    assert c["pending"] == 0
    assert sum(c["items"].values()) >= len(bodies) - c["duplicates"]
    r = report(services)
    assert r.ok, r.first_error
    assert r.records == c["chain"]["seq"]


def test_handshake(client: Any) -> None:
    ok = client.get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1903260781")
    assert ok.status_code == 200 and ok.data == b"1903260781"
    php = client.get("/webhooks/whatsapp?hub_mode=subscribe&hub_verify_token=verify-me&hub_challenge=42")
    assert php.status_code == 200 and php.data == b"42"
    bad = client.get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1")
    assert bad.status_code == 403


def test_signatures_sizes_and_rotation(client: Any, services: Any) -> None:
    body = msg_body("wamid.A1")
    assert client.post("/webhooks/whatsapp", data=body).status_code == 401  # missing
    assert client.post("/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}).status_code == 401
    assert client.post("/webhooks/whatsapp", data=body, headers=sign(body, OLD_SECRET)).status_code == 200
    big = b" " * (1024 * 1024 + 1)
    assert client.post("/webhooks/whatsapp", data=big, headers=sign(big)).status_code == 413
    services.rejections.flush(everything=True)  # the open windows, as at worker exit
    seal(services)
    c = counts(services)
    assert c["deliveries"] == 1  # rejected bodies are not archived...
    assert c["audit"] == 3  # ...but each kind of rejection is an audit record: missing, bad, too large


def test_bad_bodies_are_quarantined_not_dropped(client: Any, services: Any) -> None:
    for body in (b"", b"{not json", b"[1,2]", "\u00e9t\u00e9".encode("latin-1")):
        assert post(client, body).status_code == 200
    seal(services)
    c = counts(services)
    assert c["deliveries"] == 4 and c["quarantined"] == 4
    assert report(services).ok


def test_escaped_unicode_and_pretty_printed_bodies_keep_their_bytes(client: Any, services: Any, token: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Upper-case escapes and indentation parse to the same JSON as other bytes would: only a
    # byte-exact archive gives back exactly these.
    escaped = msg_body("wamid.U1", "caf\u00e9 \U0001f64f").replace(b"\\u00e9", b"\\u00E9")
    pretty = json.dumps(json.loads(msg_body("wamid.U2", "r\u00e9sum\u00e9")), indent=2, ensure_ascii=False).encode()
    assert b"caf\\u00E9" in escaped and b"\\ud83d\\ude4f" in escaped and "r\u00e9sum\u00e9".encode() in pretty
    assert post(client, escaped).status_code == 200 and post(client, pretty).status_code == 200
    seal(services)
    with services.sessions() as session:
        sealed = [plain for rec, plain in records.iter_decrypted(services, session, 0, kinds={"delivery"})
                  if rec["kind"] == "delivery"]
        journal = session.scalars(select(Journal.body_sha256).where(Journal.source == "webhook").order_by(Journal.id)).all()
        seqs = session.scalars(select(Record.seq).where(Record.kind == "delivery").order_by(Record.seq)).all()
    assert sealed == [escaped, pretty]  # the sealed plaintext is the posted bytes, not a re-serialisation
    assert journal == [hashlib.sha256(escaped).hexdigest(), hashlib.sha256(pretty).hexdigest()]
    auth = token("auditor")
    got = [client.get(f"/api/v1/records/{s}", headers=auth).get_json() for s in seqs]
    assert [g["delivery"]["body_sha256"] for g in got] == journal
    # what a reader gets back is the bytes themselves, not JSON equal to them
    assert [base64.b64decode(g["raw"]) for g in got] == [escaped, pretty]
    assert [g["raw_sha256"] for g in got] == journal
    for k, v in make_env(services.settings.home).items():
        monkeypatch.setenv(k, v)
    assert [CliRunner().invoke(main, ["show", str(s), "--raw"]).stdout_bytes for s in seqs] == [escaped, pretty]


def test_redelivery_and_history_overlap_dedupe(client: Any, services: Any) -> None:
    live = msg_body("wamid.D1")
    post(client, live)
    post(client, live)  # byte-identical retry: a second delivery, the same item
    history = {"object": "whatsapp_business_account", "entry": [{"id": "2099", "changes": [{"field": "history", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"},
        "history": [{"metadata": {"phase": 0, "chunk_order": 2, "progress": 100}, "threads": [{"id": "4479460001234", "messages": [
            {"from": "4479460001234", "id": "wamid.D1", "timestamp": "1780001000", "type": "text", "text": {"body": "hello"},
             "history_context": {"status": "READ"}},
            {"from": "15550009999", "to": "4479460001234", "id": "wamid.H2", "timestamp": "1779400300", "type": "text",
             "text": {"body": "Saturdays only."}, "history_context": {"status": "DELIVERED"}}]}]}]}}]}]}
    post(client, json.dumps(history).encode())
    seal(services)
    c = counts(services)
    assert c["deliveries"] == 3
    assert c["items"]["message"] == 1 and c["items"]["history_message"] == 1
    assert c["duplicates"] == 2


def test_statuses_out_of_order_never_downgrade(client: Any, services: Any) -> None:
    for state in ("read", "sent", "delivered", "read"):
        post(client, status_body("wamid.S1", state))
    seal(services)
    with services.sessions() as session:
        assert session.get(MessageState, "wamid.S1").state == "read"
    c = counts(services)
    assert c["items"]["status"] == 3 and c["duplicates"] == 1


def test_batches_across_seal_runs_chain_and_verify(client: Any, services: Any) -> None:
    for i in range(5):
        post(client, msg_body(f"wamid.B{i}"))
        seal(services)
    r = report(services)
    assert r.ok and r.checkpoints >= 5
    assert counts(services)["items"]["message"] == 5


def test_record_read_is_audited_and_role_checked(client: Any, services: Any, token: Any) -> None:
    post(client, msg_body("wamid.R1", "meter reading"))
    seal(services)
    with services.sessions() as session:
        seq = session.scalar(Record.__table__.select().with_only_columns(Record.seq).where(Record.kind == "message"))
    assert client.get(f"/api/v1/records/{seq}").status_code == 401
    assert client.get(f"/api/v1/records/{seq}", headers=token("ingest")).status_code == 403
    got = client.get(f"/api/v1/records/{seq}", headers=token("compliance")).get_json()
    assert got["kind"] == "message" and "meter reading" in json.dumps(got["content"])
    assert got["delivery"]["seq"] < seq and got["proof"]["hash"]
    before = counts(services)["audit"]
    services.rejections.flush(everything=True)
    seal(services)
    assert counts(services)["audit"] >= before + 3  # the view and the two kinds of refused attempts


@pytest.mark.parametrize("role", ["compliance", "auditor", "legal", "admin"])
def test_stats_api_matches_cli(client: Any, services: Any, token: Any, role: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    post(client, msg_body("wamid.ST1"))
    post(client, status_body("wamid.ST1", "read"))
    seal(services)
    auth = token(role)  # the token's own journal rows are sealed too, so both read the same archive
    seal(services)
    got = client.get("/api/v1/stats", headers=auth).get_json()
    assert set(got) >= {"deliveries", "items", "duplicates", "quarantined", "pending", "media", "chain"}
    assert set(got["media"]) == {"stored", "pending", "failed"}
    assert got["deliveries"] == 2 and got["items"]["message"] == 1 and got["items"]["status"] == 1
    for k, v in make_env(services.settings.home).items():
        monkeypatch.setenv(k, v)
    cli = CliRunner().invoke(main, ["stats", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == got


def test_every_route_but_webhook_and_health_refuses_without_token(app: Any, client: Any) -> None:
    public = {"/webhooks/whatsapp", "/healthz"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.rule in public or rule.endpoint.startswith("console."):
            continue  # the console's pages send a browser to its login page (walked in test_roles.py)
        url = rule.rule.replace("<seq>", "1").replace("<contact>", "4479460001234").replace("<path:key>", "x")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            resp = client.open(url, method=method, headers={"Authorization": "Bearer wa_not-a-token"})
            assert resp.status_code == 401, (method, url)
            assert client.open(url, method=method).status_code == 401, (method, url)
            checked += 1
    assert checked >= 4


def test_capture_api_validation_and_journaling(client: Any, services: Any, token: Any) -> None:
    auth = token("ingest")
    good = {"request": {"messaging_product": "whatsapp", "to": "+4479460001234", "type": "text", "text": {"body": "Your engineer arrives"}},
            "response": {"messaging_product": "whatsapp", "contacts": [{"input": "+4479460001234", "wa_id": "4479460001234"}],
                         "messages": [{"id": "wamid.OUT1"}]}, "sender": "crm-bot", "sent_at": "2026-11-27T10:00:00Z"}
    assert client.post("/api/v1/capture/messages", json=good, headers=auth).status_code == 202
    bad = dict(good, sender="")
    resp = client.post("/api/v1/capture/messages", json=bad, headers=auth)
    assert resp.status_code == 400 and resp.get_json()["field"] == "sender"
    assert client.post("/api/v1/capture/messages", data=b"{", headers=auth).get_json()["field"] == "body"
    consent = {"contact": "4479460001234", "scope": "marketing", "action": "opt_out", "source": "crm", "proof": "STOP", "at": 1780003000}
    assert client.post("/api/v1/consent", json=consent, headers=auth).status_code == 202
    assert client.post("/api/v1/consent", json=dict(consent, action="maybe"), headers=auth).get_json()["field"] == "action"
    assert client.post("/api/v1/consent", json=consent, headers=token("compliance")).status_code == 403
    seal(services)
    c = counts(services)
    assert c["items"]["outbound"] == 1 and c["items"]["consent"] == 1
    post(client, status_body("wamid.OUT1", "delivered"))
    seal(services)
    with services.sessions() as session:
        assert session.get(MessageState, "wamid.OUT1").state == "delivered"


def test_lone_surrogates_in_ids_and_types_seal_and_verify(client: Any, services: Any) -> None:
    """JSON may escape a lone surrogate; UTF-8 cannot hold one. It must not stall the sealer."""
    body = ('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":'
            '{"messaging_product":"whatsapp","metadata":{"display_phone_number":"1555","phone_number_id":"10\\ud800"},'
            '"contacts":[{"profile":{"name":"A\\udc00"},"wa_id":"44\\ud800"}],'
            '"messages":[{"from":"44\\ud800","id":"wamid.\\udc00X","timestamp":"1780001000","type":"te\\ud800xt",'
            '"text":{"body":"hi \\ud83d"}}]}}]}]}').encode()
    assert post(client, body).status_code == 200
    post(client, msg_body("wamid.AFTER"))  # and what comes after it is sealed too
    seal(services)
    c = counts(services)
    assert c["pending"] == 0 and c["quarantined"] == 0
    assert c["items"]["message"] == 2
    with services.sessions() as session:
        wamids = {r.wamid for r in session.query(Record).filter(Record.kind == "message")}
    assert wamids == {"wamid.\\udc00X", "wamid.AFTER"}  # the escape, as text
    r = report(services)
    assert r.ok, r.first_error


def test_a_catalog_that_refuses_the_write_gets_503_and_nothing_is_accepted(client: Any, services: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    def refuse() -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    body = msg_body("wamid.DOWN")
    monkeypatch.setattr(services.journal._engine, "raw_connection", refuse)
    resp = post(client, body)
    assert resp.status_code == 503
    assert resp.get_json()["error"] == "journal-unavailable"
    monkeypatch.undo()
    assert counts(services)["pending"] == 0
    assert post(client, body).status_code == 200  # Meta's retry is accepted once the catalog is back
    seal(services)
    assert counts(services)["items"]["message"] == 1


def test_an_unknown_status_name_is_archived_but_never_becomes_the_state(client: Any, services: Any) -> None:
    post(client, status_body("wamid.S9", "mystery"))
    seal(services)
    with services.sessions() as session:
        assert session.get(MessageState, "wamid.S9") is None  # as the search index sees it
    post(client, status_body("wamid.S9", "delivered"))
    seal(services)
    with services.sessions() as session:
        assert session.get(MessageState, "wamid.S9").state == "delivered"
    assert counts(services)["items"]["status"] == 2


def test_segment_records_at_reads_just_the_asked_seqs_and_checks_each_line(client: Any, services: Any) -> None:
    from dataclasses import dataclass

    from archiver.catalog import Segment

    for i in range(12):
        assert post(client, msg_body(f"wamid.at{i}", text=f"line {i}")).status_code == 200
    seal(services)
    with services.sessions() as session:
        seg = session.scalars(select(Segment).order_by(Segment.records.desc())).first()
        assert seg is not None and seg.records > 4
        session.expunge(seg)
    whole = records.segment_records(services, seg)
    asked = {whole[1]["seq"], whole[-1]["seq"], seg.last_seq + 5, seg.first_seq - 1}
    expect = [r for r in whole if r["seq"] in asked]
    assert len(expect) == 2
    assert records.segment_records_at(services, seg, asked) == expect
    assert records.segment_records_at(services, seg, set()) == []
    many = set(range(seg.first_seq - 50, seg.last_seq + 50))  # more seqs asked than the segment holds
    assert records.segment_records_at(services, seg, many) == whole
    assert records.segment_records_at(services, seg, sorted(asked)) == expect  # any collection

    @dataclass
    class Shifted:  # a catalog row whose range does not line up with the lines: every line is checked
        key: str
        first_seq: int
        last_seq: int
        state: str = "stored"
        blob: bytes | None = None

    off = Shifted(seg.key, seg.first_seq + 1, seg.last_seq + 1)
    assert records.segment_records_at(services, off, asked) == expect  # type: ignore[arg-type]
