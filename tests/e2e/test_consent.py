"""Consent ledger and consent-revocation review (issue 11) on the real servers: SeaweedFS
Object Lock, SQLite and PostgreSQL catalogs.

A scripted month of traffic for several contacts (opt-ins on a web form, marketing sends by
the capture API, an echo and a status priced marketing, STOP in English, French and Spanish,
a resume, a dismissed and a confirmed detection, a STOP delivered late) gives exactly the
expected findings, run after run, and a further run adds none. user_preferences events out
of order and duplicated give the same state at every time as in order.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from archiver import consent, consent_review
from archiver.auth import create_token
from archiver.catalog import Record
from archiver.cli import main as cli
from tests.e2e.test_holds import CATALOGS, Instance, _instance
from tests.e2e.test_pipeline import post, report, seal

pytestmark = [pytest.mark.s3]

BUSINESS, BUSINESS_ID, WABA = "15550009999", "1099", "2099"
ANA, BEA, CARLOS, DAN, EVE = "4479460001234", "33612345678", "34612345678", "4915112345678", "4479460005555"
TEMPLATE_IDS = {"spring_offer": 1500440012345678, "order_update": 1500440087654321}
BASE = int(datetime(2026, 11, 1, 10, tzinfo=timezone.utc).timestamp())


def day(n: float) -> int:
    return BASE + int(n * 86400)


def _webhook(field: str, value: dict[str, Any], entry_time: int | None = None) -> bytes:
    entry: dict[str, Any] = {"id": WABA, "changes": [{"field": field, "value": value}]}
    if entry_time is not None:
        entry["time"] = entry_time
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def _meta() -> dict[str, Any]:
    return {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": BUSINESS, "phone_number_id": BUSINESS_ID}}


def text(wamid: str, who: str, body: str, at: int) -> bytes:
    return _webhook("messages", {**_meta(), "contacts": [{"profile": {"name": "X"}, "wa_id": who}],
                                 "messages": [{"from": who, "id": wamid, "timestamp": str(at), "type": "text",
                                               "text": {"body": body}}]})


def preference(who: str, value: str, at: int) -> bytes:
    return _webhook("user_preferences", {**_meta(), "contacts": [{"profile": {"name": "X"}, "wa_id": who}],
                                         "user_preferences": [{"wa_id": who, "detail": "User request",
                                                               "category": "marketing_messages", "value": value,
                                                               "timestamp": at}]})


def template_status(name: str, event: str, category: str, at: int) -> bytes:
    return _webhook("message_template_status_update", {
        "event": event, "message_template_id": TEMPLATE_IDS[name], "message_template_name": name,
        "message_template_language": "en_GB", "reason": "NONE", "message_template_category": category}, at)


def priced_status(wamid: str, who: str, at: int) -> bytes:
    return _webhook("messages", {**_meta(), "statuses": [{
        "id": wamid, "status": "sent", "timestamp": str(at), "recipient_id": who,
        "pricing": {"billable": True, "pricing_model": "PMP", "category": "marketing"}}]})


def echo_template(wamid: str, who: str, name: str, at: int) -> bytes:
    return _webhook("smb_message_echoes", {**_meta(), "message_echoes": [{
        "from": BUSINESS, "to": who, "id": wamid, "timestamp": str(at), "type": "template",
        "template": {"name": name, "language": {"code": "en_GB"}}}]})


class Month:
    """The instance, its tokens and helpers to post traffic and run the review."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst
        with inst.services.sessions.begin() as session:
            self.tokens = {role: {"Authorization": f"Bearer {create_token(session, role, f'c-{role}')}"}
                           for role in ("ingest", "compliance", "auditor", "legal")}

    def webhooks(self, *bodies: bytes) -> None:
        for body in bodies:
            assert post(self.inst.client, body).status_code == 200
        seal(self.inst.services)

    def opt_in(self, who: str, at: int) -> None:
        body = {"contact": who, "scope": "marketing", "action": "opt_in", "source": "web-form", "at": at,
                "proof": "form-123"}
        assert self.inst.client.post("/api/v1/consent", json=body, headers=self.tokens["ingest"]).status_code == 202
        seal(self.inst.services)

    def send(self, wamid: str, who: str, template: str, at: int) -> None:
        body = {"request": {"messaging_product": "whatsapp", "to": who, "type": "template",
                            "template": {"name": template, "language": {"code": "en_GB"}}},
                "response": {"messaging_product": "whatsapp", "contacts": [{"input": who, "wa_id": who}],
                             "messages": [{"id": wamid}]},
                "sender": "crm", "sent_at": at, "phone_number_id": BUSINESS_ID}
        resp = self.inst.client.post("/api/v1/capture/messages", json=body, headers=self.tokens["ingest"])
        assert resp.status_code == 202, resp.get_json()
        seal(self.inst.services)

    def seq(self, wamid: str, kinds: tuple[str, ...] = ("message", "outbound", "echo")) -> int:
        with self.inst.services.sessions() as session:
            found = session.scalar(select(Record.seq).where(Record.wamid == wamid, Record.kind.in_(kinds)))
            assert found is not None, wamid
            return int(found)

    def consent_seq(self, who: str, value: str) -> int:
        with self.inst.services.sessions() as session:
            seqs = session.scalars(select(Record.seq).where(Record.kind == "consent", Record.contact == who,
                                                            Record.type == value)).all()
        assert len(seqs) == 1, (who, value, seqs)
        return int(seqs[0])

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=self.inst.env, catch_exceptions=False)

    def review(self, *extra: str) -> dict[str, Any]:
        done = self.cli("review", "consent", "--json", *extra)
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)

    def findings(self) -> list[dict[str, Any]]:
        done = self.cli("findings", "list", "--kind", "consent", "--json")
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)

    def at(self, who: str, moment: int) -> dict[str, Any]:
        done = self.cli("consent", "at", who, "--time", str(moment), "--category", "marketing", "--json")
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)


@pytest.fixture(params=CATALOGS, ids=lambda p: p[0] if isinstance(p, tuple) else str(p))
def month(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Month]:
    for inst in _instance(request, tmp_path, monkeypatch, {}):
        yield Month(inst)


def test_a_scripted_month_gives_exactly_the_expected_findings_and_a_rerun_none(month: Month) -> None:
    m = month
    m.webhooks(template_status("spring_offer", "APPROVED", "MARKETING", day(0)),
               template_status("order_update", "APPROVED", "UTILITY", day(0)))
    for who in (ANA, BEA, CARLOS, DAN, EVE):
        m.opt_in(who, day(1))
    for who in (ANA, BEA, CARLOS, DAN):
        m.send(f"wamid.{who}.d3", who, "spring_offer", day(3))
    m.webhooks(text("wamid.ana.stop", ANA, "STOP", day(5)),
               text("wamid.bea.stop", BEA, "Arrêt, merci", day(5)),
               text("wamid.carlos.stop", CARLOS, "por favor BAJA", day(5)),
               text("wamid.dan.stopover", DAN, "Is the stopover in Paris included?", day(5)),
               text("wamid.dan.quoted", DAN, "> Reply STOP to opt out\nYes please, book it", day(5)))
    for who in (ANA, BEA, CARLOS, DAN):
        m.send(f"wamid.{who}.d7", who, "spring_offer", day(7))
    m.send("wamid.ana.utility", ANA, "order_update", day(7))  # utility: not marketing

    first = m.review()
    found = {f["detail"]["wamid"]: f for f in first["findings"]}
    assert set(found) == {f"wamid.{w}.d7" for w in (ANA, BEA, CARLOS)}
    ana = found[f"wamid.{ANA}.d7"]
    assert ana["kind"] == "consent" and ana["rule"] == consent_review.RULE and ana["status"] == "open"
    assert ana["record_seq"] == m.seq(f"wamid.{ANA}.d7")
    assert m.seq("wamid.ana.stop") in ana["evidence"] and ana["record_seq"] in ana["evidence"]
    assert m.review()["findings"] == []  # nothing twice

    # The detections: Bea's dismissed (API, compliance), Carlos's confirmed (CLI); both sealed first.
    bea_stop, carlos_stop = m.seq("wamid.bea.stop"), m.seq("wamid.carlos.stop")
    refused = m.inst.client.post(f"/api/v1/consent/detections/{bea_stop}/dismiss", json={"note": "x"},
                                 headers=m.tokens["auditor"])
    assert refused.status_code == 403
    dismissed = m.inst.client.post(f"/api/v1/consent/detections/{bea_stop}/dismiss",
                                   json={"note": "she asked about the train stop"}, headers=m.tokens["compliance"])
    assert dismissed.status_code == 200, dismissed.get_json()
    assert dismissed.get_json()["status"] == "dismissed"
    again = m.inst.client.post(f"/api/v1/consent/detections/{bea_stop}/confirm", json={},
                               headers=m.tokens["compliance"])
    assert again.status_code == 409
    confirmed = m.cli("consent", "confirm", str(carlos_stop), "--note", "clear opt-out")
    assert confirmed.exit_code == 0 and json.loads(confirmed.stdout)["status"] == "confirmed"
    with m.inst.services.sessions() as session:
        decisions = set(session.scalars(select(Record.type).where(Record.kind == "decision")))
    assert {consent.CONFIRMED, consent.DISMISSED} <= decisions

    m.webhooks(preference(ANA, "resume", day(10)))
    m.send(f"wamid.{ANA}.d12", ANA, "spring_offer", day(12))  # after the resume: fine
    m.webhooks(preference(EVE, "stop", day(14)))
    m.webhooks(priced_status(f"wamid.{EVE}.d15", EVE, day(15)))  # sent around the archive, billed marketing
    m.send(f"wamid.{BEA}.d21", BEA, "spring_offer", day(21))  # her detection was dismissed: fine
    m.webhooks(echo_template(f"wamid.{DAN}.d23", DAN, "spring_offer", day(23)))  # from the app; no opt-out yet

    second = m.review()
    assert [f["detail"]["wamid"] for f in second["findings"]] == [f"wamid.{EVE}.d15"]
    eve = second["findings"][0]
    assert eve["record_seq"] == m.seq(f"wamid.{EVE}.d15", ("status",))
    assert m.consent_seq(EVE, "stop") in eve["evidence"]

    # Dan's STOP of day 22 arrives after his day-23 send was reviewed: the next run finds it.
    m.webhooks(preference(DAN, "stop", day(22)))
    third = m.review()
    assert [f["detail"]["wamid"] for f in third["findings"]] == [f"wamid.{DAN}.d23"]
    assert m.consent_seq(DAN, "stop") in third["findings"][0]["evidence"]
    assert m.review()["findings"] == [] and m.review("--since", "2026-11-01")["findings"] == []

    listed = m.findings()
    assert sorted(f["detail"]["wamid"] for f in listed) == sorted(
        [f"wamid.{w}.d7" for w in (ANA, BEA, CARLOS)] + [f"wamid.{EVE}.d15", f"wamid.{DAN}.d23"])
    assert all(f["status"] == "open" and f["seq"] is not None for f in listed)
    with m.inst.services.sessions() as session:
        sealed = session.scalar(select(func.count()).select_from(Record).where(Record.kind == "finding"))
        runs = session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "job_run", Record.type == consent_review.JOB))
    assert sealed == 5 and runs == 6  # every finding and every run sealed

    # consent at T names the deciding entries and their records' seqs.
    assert m.at(ANA, day(2))["valid"] is True
    stopped = m.at(ANA, day(6))
    assert stopped["valid"] is False and stopped["deciding_seqs"] == [m.seq("wamid.ana.stop")]
    resumed = m.at(ANA, day(11))
    assert resumed["valid"] is True and resumed["deciding_seqs"] == [m.consent_seq(ANA, "resume")]
    assert m.at(BEA, day(6))["valid"] is True  # dismissed
    carlos = m.at(CARLOS, day(6))  # the detection, and the decision confirming it
    assert carlos["valid"] is False and carlos["deciding_seqs"][0] == carlos_stop and len(carlos["deciding_seqs"]) == 2
    assert [e["action"] for e in carlos["deciding"]] == ["opt_out", "confirm"]
    api = m.inst.client.get(f"/api/v1/consent/{DAN}/at?time={day(22) + 1}", headers=m.tokens["auditor"])
    assert api.status_code == 200 and api.get_json()["valid"] is False
    assert m.inst.client.get(f"/api/v1/consent/{DAN}", headers=m.tokens["legal"]).status_code == 403
    shown = m.inst.client.get(f"/api/v1/consent/{DAN}", headers=m.tokens["compliance"]).get_json()
    assert shown["state"]["marketing"]["valid"] is False
    assert [e["source"] for e in shown["ledger"]] == ["consent_api", "user_preferences"]  # stopover, quote: none

    # Resolving: sealed (who, when, why) before it shows resolved; via the API and the CLI.
    one, two = listed[0]["id"], listed[1]["id"]
    resp = m.inst.client.post(f"/api/v1/findings/{one}/resolve", json={"note": "customer re-opted in by phone"},
                              headers=m.tokens["compliance"])
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "resolved" and resp.get_json()["resolution"]["note"].startswith("customer")
    assert m.cli("findings", "resolve", two, "--note", "send was a test to staff").exit_code == 0
    assert m.inst.client.post(f"/api/v1/findings/{one}/resolve", json={"note": "again"},
                              headers=m.tokens["compliance"]).status_code == 409
    by_id = {f["id"]: f for f in m.inst.client.get("/api/v1/findings?kind=consent",
                                                   headers=m.tokens["auditor"]).get_json()["findings"]}
    assert by_id[one]["status"] == by_id[two]["status"] == "resolved"
    assert by_id[one]["resolution"]["by"] and not by_id[one]["resolution"]["by"].startswith("cli:")
    assert by_id[two]["resolution"]["by"].startswith("cli:") and by_id[two]["resolution"]["seq"] is not None
    with m.inst.services.sessions() as session:
        resolutions = session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "decision", Record.type == "finding_resolved"))
    assert resolutions == 2

    stats = json.loads(m.cli("stats", "--json").stdout)
    review = stats["reviews"]["consent"]
    assert review["open_findings"] == 3 and review["last_run"] and review["next_run"] and review["outcome"] == "ok"
    with m.inst.services.sessions() as session:  # consent.yaml was sealed as a policy record of type consent
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "policy", Record.type == "consent")) == 1
    assert report(m.inst.services).ok  # findings, decisions and the policy record are in the verified chain


def test_user_preferences_out_of_order_and_duplicated_give_the_same_state_at_every_time(month: Month) -> None:
    events = [("stop", day(1)), ("resume", day(2)), ("stop", day(3)), ("stop", day(3.5)), ("resume", day(4)),
              ("stop", day(4))]  # a stop and a resume in the same second: the stop wins
    ordered, shuffled = ANA, BEA
    month.webhooks(*[preference(ordered, v, t) for v, t in events])
    jumbled = [preference(shuffled, v, t) for v, t in events] * 2  # every event twice
    random.Random(11).shuffle(jumbled)
    month.webhooks(*jumbled[:5])
    month.webhooks(*jumbled[5:])
    consent.sync(month.inst.services)
    moments = sorted({t + d for _, t in events for d in (-1, 0, 1)} | {day(10)})
    with month.inst.services.sessions() as session:
        for moment in moments:
            a = consent.state_at(session, ordered, "marketing", moment)
            b = consent.state_at(session, shuffled, "marketing", moment)
            assert a["valid"] == b["valid"], moment
            assert [e["action"] for e in a["deciding"]] == [e["action"] for e in b["deciding"]], moment
        assert consent.state_at(session, ordered, "marketing", day(4))["valid"] is False
        assert consent.state_at(session, ordered, "marketing", day(2) + 5)["valid"] is True
    shown = month.cli("consent", "show", shuffled, "--json")
    assert shown.exit_code == 0
    assert len(json.loads(shown.stdout)["ledger"]) == len(events)  # duplicates are one record each


def test_consent_show_of_an_unknown_contact_is_404(month: Month) -> None:
    resp = month.inst.client.get(f"/api/v1/consent/{uuid.uuid4().int % 10**12}", headers=month.tokens["compliance"])
    assert resp.status_code == 404


def test_a_findings_batch_journals_each_new_finding_once_in_the_order_added(tmp_path: Path) -> None:
    from archiver import findings
    from archiver.catalog import Finding, Journal
    from archiver.config import Settings
    from archiver.services import Services
    from tests.conftest import make_env

    services = Services.open(Settings.from_env(make_env(tmp_path / "home")))
    try:
        with services.sessions.begin() as session:
            findings.raise_finding(session, "consent", "r", "wamid.before", record_seq=None, evidence=[1])
        with services.sessions.begin() as session:
            batch = findings.Batch(session)
            for subject in ("wamid.b", "wamid.before", "wamid.a", "wamid.b"):
                batch.add("consent", "r", subject, record_seq=None, evidence=[3, 2, 3], contact="44")
            rows = batch.flush()
            assert [(r.detail, r.evidence) for r in rows] == [({}, [2, 3])] * 2
            ids = [r.id for r in rows]
            assert ids == ["find-" + findings.finding_key("consent", "r", s)[:16] for s in ("wamid.b", "wamid.a")]
            assert batch.flush() == []  # emptied
        with services.sessions() as session:
            journaled = [json.loads(j.body) for j in session.scalars(
                select(Journal).where(Journal.source == "finding").order_by(Journal.id))]
            assert [j["subject"] for j in journaled] == ["wamid.before", "wamid.b", "wamid.a"]
            assert session.scalar(select(func.count()).select_from(Finding)) == 3
            assert all(f.journal_id for f in session.scalars(select(Finding)))
    finally:
        services.close()


def test_a_status_billed_marketing_names_the_message_it_reports_on(month: Month) -> None:
    m = month
    m.webhooks(template_status("order_update", "APPROVED", "UTILITY", day(0)),
               text("wamid.eve.stop", EVE, "STOP", day(2)))
    m.send("wamid.eve.u3", EVE, "order_update", day(3))  # a utility template: not marketing by itself
    m.webhooks(priced_status("wamid.eve.u3", EVE, day(3) + 5))  # ... but Meta billed it as marketing
    found = {f["detail"]["wamid"]: f for f in m.review()["findings"]}
    assert set(found) == {"wamid.eve.u3"}
    assert found["wamid.eve.u3"]["record_seq"] == m.seq("wamid.eve.u3")  # the message, not the status
    assert found["wamid.eve.u3"]["detail"]["via"] == "status"
    assert m.seq("wamid.eve.u3", ("status",)) in found["wamid.eve.u3"]["evidence"]
