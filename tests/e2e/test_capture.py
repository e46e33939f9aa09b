"""The capture-health review (issue 11 point 4) on the real servers: SeaweedFS Object Lock,
SQLite and PostgreSQL catalogs.

Scripted traffic for five business numbers (one going silent, one whose Business App was
last used 12 days ago, a status for a send the archive never captured, a history sync with
a missing chunk, a declined history sync, an account_update disconnection, echoes for a
number capture.yaml does not list) gives exactly the expected findings; a second run none.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from archiver import capture_review
from archiver.catalog import Record
from tests.e2e.test_consent import WABA, Month, _webhook
from tests.e2e.test_holds import CATALOGS, _instance
from tests.e2e.test_pipeline import report

pytestmark = [pytest.mark.s3]

NOW = int(time.time())
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
BUSY, SILENT, APP, HISTORY, STRANGER = "1099", "1101", "1102", "1103", "1104"
ANA = "4479460001234"
POLICY = f"""# the test's capture thresholds
status_grace: "0s"
history_wait: "0s"
numbers:
  "{BUSY}":
    silence: "2h"
  "{SILENT}":
  "{APP}":
  "{HISTORY}":
"""


def ago(days: float) -> int:
    return NOW - int(days * 86400)


def meta(number: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "metadata": {"display_phone_number": f"1555000{number}",
                                                          "phone_number_id": number}}


def inbound(number: str, wamid: str, at: int) -> bytes:
    return _webhook("messages", {**meta(number), "contacts": [{"profile": {"name": "Ana"}, "wa_id": ANA}],
                                 "messages": [{"from": ANA, "id": wamid, "timestamp": str(at), "type": "text",
                                               "text": {"body": "hello"}}]})


def status(number: str, wamid: str, state: str, at: int) -> bytes:
    return _webhook("messages", {**meta(number), "statuses": [{"id": wamid, "status": state, "timestamp": str(at),
                                                               "recipient_id": ANA}]})


def echo(number: str, wamid: str, at: int) -> bytes:
    return _webhook("smb_message_echoes", {**meta(number), "message_echoes": [{
        "from": f"1555000{number}", "to": ANA, "id": wamid, "timestamp": str(at), "type": "text",
        "text": {"body": "See you Tuesday."}}]})


def history(number: str, chunk: int, progress: int, wamid: str) -> bytes:
    return _webhook("history", {**meta(number), "history": [{
        "metadata": {"phase": 1, "chunk_order": chunk, "progress": progress},
        "threads": [{"id": ANA, "messages": [{"from": ANA, "id": wamid, "timestamp": str(ago(40)), "type": "text",
                                              "text": {"body": "old"}, "history_context": {"status": "READ"}}]}]}]})


def declined(number: str) -> bytes:
    return _webhook("history", {**meta(number), "history": [{"errors": [{
        "code": 2593109, "title": "History sync is turned off by the business from the WhatsApp Business App",
        "message": "History sync is turned off", "error_data": {"details": "History sharing is turned off"}}]}]})


def account(event: str, at: int, **extra: Any) -> bytes:
    return _webhook("account_update", {"event": event, "waba_info": {"waba_id": WABA,
                                                                      "owner_business_id": "3310000000000001"},
                                       **extra}, at)


class Capture(Month):
    def review(self, *extra: str) -> dict[str, Any]:
        done = self.cli("review", "capture", "--json", *extra)
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)

    def rules(self, out: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((f["rule"], f["detail"].get("number") or f["detail"].get("wamid") or f["detail"].get("event"))
                      for f in out["findings"])

    def delivery(self, seq: int) -> int:
        with self.inst.services.sessions() as session:
            found = session.scalar(select(Record.delivery_seq).where(Record.seq == seq))
        assert found is not None
        return int(found)


@pytest.fixture(params=CATALOGS, ids=lambda p: p[0] if isinstance(p, tuple) else str(p))
def cap(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, policies)
    (policies / "capture.yaml").write_text(POLICY)
    for inst in _instance(request, tmp_path, monkeypatch, {"ARCHIVER_POLICIES": str(policies)}):
        yield Capture(inst)


def test_scripted_capture_traffic_gives_exactly_the_expected_findings_and_a_rerun_none(cap: Capture) -> None:
    m = cap
    # BUSY: live all along; a send captured with its statuses, and a status for a send never captured.
    m.webhooks(inbound(BUSY, "wamid.busy.1", ago(0.02)))
    m.send("wamid.busy.out", ANA, "order_update", ago(0.02))
    m.webhooks(status(BUSY, "wamid.busy.out", "sent", ago(0.02)), status(BUSY, "wamid.busy.out", "delivered", ago(0.01)),
               status(BUSY, "wamid.ghost", "sent", ago(0.01)), status(BUSY, "wamid.ghost", "read", ago(0.01)))
    # SILENT: spoke five and four days ago, then nothing (threshold: the 24h default).
    m.webhooks(inbound(SILENT, "wamid.silent.1", ago(5)), inbound(SILENT, "wamid.silent.2", ago(4)))
    # APP: live messages today, but the Business App's last echo is 12 days old.
    m.webhooks(echo(APP, "wamid.app.echo", ago(12)), inbound(APP, "wamid.app.1", ago(0.01)))
    # HISTORY: chunks 1 and 3 of phase 1 (progress 100: complete but for chunk 2); live too.
    m.webhooks(history(HISTORY, 1, 30, "wamid.h1"), history(HISTORY, 3, 100, "wamid.h3"),
               inbound(HISTORY, "wamid.hist.live", ago(0.01)))
    # BUSY's owner declined history sharing; the WABA was disconnected for inactivity; a partner added (fine).
    m.webhooks(declined(BUSY))
    m.webhooks(account("PARTNER_ADDED", ago(1)),
               account("PARTNER_REMOVED", ago(0.5), disconnection_info={"reason": "PRIMARY_INACTIVITY",
                                                                        "initiated_by": "SYSTEM"}))
    # STRANGER: echoes from a number capture.yaml does not list.
    m.webhooks(echo(STRANGER, "wamid.stranger.echo", ago(0.01)))

    first = m.review()
    assert first["outcome"] == "ok"
    assert m.rules(first) == [("account-disconnected", "PARTNER_REMOVED"), ("app-inactive", APP),
                              ("history-declined", BUSY), ("history-partial", HISTORY),
                              ("number-silent", SILENT), ("status-without-message", "wamid.ghost"),
                              ("unknown-number", STRANGER)]
    by_rule = {f["rule"]: f for f in first["findings"]}
    assert all(f["kind"] == "capture" and f["status"] == "open" for f in first["findings"])
    ghost = by_rule["status-without-message"]
    with m.inst.services.sessions() as session:
        ghost_seqs = sorted(session.scalars(select(Record.seq).where(Record.wamid == "wamid.ghost")))
        removed = session.scalar(select(Record.seq).where(Record.kind == "account_event",
                                                          Record.type == "PARTNER_REMOVED"))
    assert ghost["record_seq"] == ghost_seqs[0] and ghost["evidence"] == ghost_seqs
    gone = by_rule["account-disconnected"]
    assert gone["record_seq"] == removed and removed in gone["evidence"]
    assert gone["detail"]["reason"] == "PRIMARY_INACTIVITY"
    silent = by_rule["number-silent"]
    assert silent["record_seq"] is None and silent["evidence"] == [m.delivery(m.seq("wamid.silent.2"))]
    assert silent["detail"]["threshold_from"] == "default" and silent["detail"]["threshold_s"] == 86400
    inactive = by_rule["app-inactive"]
    assert inactive["evidence"] == [m.delivery(m.seq("wamid.app.echo"))] and inactive["detail"]["threshold_s"] == 864000
    partial = by_rule["history-partial"]
    assert partial["detail"]["missing"] == ["1:2"] and partial["detail"]["progress"] == 100
    assert sorted(partial["evidence"]) == sorted(m.delivery(m.seq(w, ("history_message",))) for w in ("wamid.h1", "wamid.h3"))
    assert by_rule["unknown-number"]["evidence"] == [m.delivery(m.seq("wamid.stranger.echo"))]
    numbers = {n["number"]: n for n in first["numbers"]}
    assert set(numbers) == {BUSY, SILENT, APP, HISTORY, STRANGER}
    assert numbers[BUSY]["silence_threshold_s"] == 7200 and numbers[BUSY]["threshold_from"] == "configured"
    assert numbers[APP]["coexistence"] is True and numbers[SILENT]["coexistence"] is False

    assert m.review()["findings"] == []  # nothing twice
    # The silent number speaks again, the missing chunk arrives: nothing new is wrong.
    m.webhooks(inbound(SILENT, "wamid.silent.3", ago(0.001)), history(HISTORY, 2, 60, "wamid.h2"))
    assert m.review()["findings"] == []

    listed = json.loads(m.cli("findings", "list", "--kind", "capture", "--json").stdout)
    assert sorted(f["id"] for f in listed) == sorted(f["id"] for f in first["findings"])
    assert all(f["seq"] is not None for f in listed)
    api = m.inst.client.get("/api/v1/findings?kind=capture", headers=m.tokens["auditor"])
    assert api.status_code == 200 and len(api.get_json()["findings"]) == 7
    stats = json.loads(m.cli("stats", "--json").stdout)
    review = stats["reviews"]["capture"]
    assert review["open_findings"] == 7 and review["outcome"] == "ok" and review["next_run"] and review["record"]
    with m.inst.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "policy", Record.type == "capture")) == 1
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "job_run", Record.type == capture_review.JOB)) == 3
        assert session.scalar(select(func.count()).select_from(Record).where(
            Record.kind == "finding", Record.type == "capture")) == 7
    assert report(m.inst.services).ok


def test_an_invalid_capture_file_stops_start_up_naming_file_line_and_key(cap: Capture, tmp_path: Path) -> None:
    policies = Path(cap.inst.env["ARCHIVER_POLICIES"])
    (policies / "capture.yaml").write_text('# thresholds\napp_inactive: "ten days"\n')
    refused = cap.cli("seal")
    assert refused.exit_code == 2
    assert f"{policies / 'capture.yaml'}:2: app_inactive: 'ten days' is not a period" in refused.stderr
    checked = cap.cli("policy", "check")
    assert checked.exit_code == 1 and f"{policies / 'capture.yaml'}:2: app_inactive:" in checked.stderr
