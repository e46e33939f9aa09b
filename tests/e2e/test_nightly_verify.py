"""The nightly ``verification`` job: seals a verification record and stores the signed integrity
report in WORM; a tampered archive makes it fail, log at ERROR (no content), report ``degraded``
in ``archiver stats --json`` and ``/healthz`` with the first error, and call the alert webhook."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

from archiver import integrity_job, jobs
from archiver.canonical import sha256_hex
from archiver.catalog import Journal, Record, VerificationState
from archiver.cli import main
from tests.conftest import make_env
from tests.e2e.test_pipeline import seal
from tests.e2e.test_tamper import objects, rewrite, sealed, segments  # noqa: F401 - the fixture

# WeasyPrint leaves its sRGB ICC profile file open (a library leak, not ours): the integrity report renders here
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

CONTENT = ("text 00", "text 11", "text 22")  # what the sealed fixture's messages say


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []
    handler = type("Handler", (Hook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(integrity_job.WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/alert")
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def _stats(settings: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for k, v in make_env(settings.home).items():
        monkeypatch.setenv(k, v)
    got = CliRunner().invoke(main, ["stats", "--json"])
    assert got.exit_code == 0, got.output
    integrity: dict[str, Any] = json.loads(got.stdout)["integrity"]
    return integrity


def test_nightly_verification_ok_then_tampered_degrades_and_alerts(
        sealed: Any, client: Any, settings: Any, hook: list[dict[str, Any]],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert client.get("/healthz").get_json()["integrity"]["status"] == "unverified"
    runner = jobs.Runner(sealed, jobs.load_schedule(sealed.settings))
    assert runner.schedule.entries["verification"].cron == "0 3 * * *"  # policies/schedule.yaml
    good = runner.run_scheduled("verification", "manual", actor="test")
    assert good is not None and good.outcome.outcome == "ok", good
    summary = good.outcome.summary
    assert summary is not None and summary["outcome"] == "ok" and summary["first_error"] is None
    assert summary["segments"] == 3 and summary["records"] >= 9 and summary["report_error"] is None
    pdf = sealed.store.get(summary["report"])  # the signed integrity report, in WORM
    assert pdf.startswith(b"%PDF") and sha256_hex(pdf) == summary["report_sha256"]
    assert sealed.store.head(summary["report"]).retain_until is not None
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["status"] == "ok"
    assert health.get_json()["integrity"]["report"] == summary["report"]
    assert _stats(settings, monkeypatch)["status"] == "ok"
    assert hook == []

    with sealed.sessions() as session:
        state = session.get(VerificationState, 1)
        assert state is not None and state.status == "ok"
        journal_id = state.journal_id
        row = session.get(Journal, journal_id)
        assert row is not None and row.body is not None and row.source == "audit"
        body = json.loads(row.body)
        assert body["event"] == "verification" and body["outcome"] == "ok" and body["report"] == summary["report"]
    seal(sealed)  # the verification record is sealed like every audit record
    with sealed.sessions() as session:
        row = session.get(Journal, journal_id)
        assert row is not None and row.delivery_seq is not None
        record = session.get(Record, row.delivery_seq)
        assert record is not None and record.kind == "audit"

    seg = segments(sealed)[1]
    path = objects(sealed) / seg.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    rewrite(path, bytes(data))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        bad = runner.run_scheduled("verification", "manual", actor="test")
    assert bad is not None and bad.outcome.outcome == "failed" and bad.outcome.error == "IntegrityError"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "archiver.integrity_job"]
    assert [r.getMessage().split()[0] for r in errors] == ["verification.failed"]
    assert seg.key in errors[0].getMessage()
    assert not any(text in r.getMessage() for r in caplog.records for text in CONTENT)

    with sealed.sessions() as session:  # the broken run wrote its own report, seconds after the good one
        state = session.get(VerificationState, 1)
        assert state is not None and state.report_key not in (None, summary["report"])
        assert sealed.store.get(state.report_key).startswith(b"%PDF")
    degraded = _stats(settings, monkeypatch)
    assert degraded["status"] == "degraded" and degraded["first_error"].startswith(seg.key)
    health = client.get("/healthz")
    assert health.status_code == 200
    got = health.get_json()
    assert got["status"] == "degraded" and got["integrity"]["first_error"] == degraded["first_error"]
    assert len(hook) == 1
    alert = hook[0]
    assert alert["alert"] == "integrity-verification-failed" and alert["outcome"] == "failed"
    assert alert["first_error"] == degraded["first_error"]
    assert not any(text in json.dumps(alert) for text in CONTENT)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "http://"])
def test_the_alert_webhook_must_be_http_or_https(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        integrity_job.webhook_url({integrity_job.WEBHOOK_ENV: url})
    assert integrity_job.webhook_url({}) is None
    assert integrity_job.webhook_url({integrity_job.WEBHOOK_ENV: "https://alerts.example.org/x"}) is not None
