"""Export jobs (issue 10 point 4) on the real servers (SeaweedFS Object Lock; SQLite and
PostgreSQL catalogs): ``POST /api/v1/exports`` answers 202 and the bundle is written off the
request; ``GET /api/v1/exports/<id>`` shows state and progress; the finished zip verifies with
``scripts/verify-export``; a restart resumes queued jobs and fails interrupted ones; the export
is one ``export`` audit record naming who, the selection, the count and the manifest's hash;
``archiver export`` prints its progress."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from archiver import export, export_jobs
from archiver.pdf import chunked
from archiver.auth import create_token
from archiver.catalog import ExportJob, Journal, leader_lock, utcnow
from archiver.cli import ExportProgress
from archiver.cli import main as cli
from tests.e2e.test_export import both_pass, finished, ingest_three, standalone  # noqa: F401 - the fixture
from tests.e2e.test_holds import CATALOGS, Instance, _instance

pytestmark = [pytest.mark.s3]


@pytest.fixture
def inst(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    yield from _instance(request, tmp_path, monkeypatch, {})


def _caller(inst: Instance, role: str) -> Callable[..., Any]:
    with inst.services.sessions.begin() as session:
        secret = create_token(session, role, f"jobs-{role}")

    def call(method: str, url: str, body: Any = None) -> Any:
        return inst.client.open(url, method=method, json=body, headers={"Authorization": f"Bearer {secret}"})
    return call


def _export_records(inst: Instance) -> list[dict[str, Any]]:
    with inst.services.sessions() as session:
        rows = session.scalars(select(Journal).where(Journal.source == "audit").order_by(Journal.id)).all()
        return [json.loads(r.body) for r in rows if r.body is not None and json.loads(r.body)["event"] == "export"]


@pytest.mark.parametrize("inst", CATALOGS, indirect=True, ids=["sqlite", "postgresql"])
def test_a_job_answers_202_shows_progress_and_its_zip_verifies(
        inst: Instance, tmp_path: Path, standalone: Callable[[Path], tuple[int, str]]) -> None:  # noqa: F811
    ingest_three(inst)
    call = _caller(inst, "auditor")
    made = call("POST", "/api/v1/exports", {"query": "refund"})
    assert made.status_code == 202, made.get_json()
    queued = made.get_json()
    assert queued["state"] == "queued" and queued["selection"] == {"by": "query", "query": "refund"}
    assert made.headers["Location"] == queued["status"] == f"/api/v1/exports/{queued['id']}"
    job = finished(lambda: call("GET", queued["status"]))
    pages = job["progress"]["pages"]
    assert job["progress"] == {"records_done": 4, "records_total": 4, "pages": pages, "pages_total": pages}
    assert job["error"] is None and job["counts"]["records"] == 4 and job["exported_by"].endswith("(auditor)")
    assert job["started_at"] is not None and job["ended_at"] is not None
    got = call("GET", job["download"])
    assert got.status_code == 200 and got.mimetype == "application/zip"
    unzipped = tmp_path / "unzipped"
    zipfile.ZipFile(io.BytesIO(got.data)).extractall(unzipped)
    assert pages == chunked.page_count((unzipped / "transcript.pdf").read_bytes()) >= 2  # the cover, a thread
    both_pass(unzipped, standalone)  # archiver verify-export and the standalone scripts/verify-export
    manifest = hashlib.sha256((unzipped / "MANIFEST.json").read_bytes()).hexdigest()
    assert job["manifest_sha256"] == manifest
    (audited,) = _export_records(inst)
    assert audited["export"] == job["id"] and audited["actor"] == job["exported_by"]
    assert audited["selection"] == {"by": "query", "query": "refund"}
    assert audited["counts"]["records"] == 4 and audited["manifest_sha256"] == manifest


def test_before_it_is_done_the_zip_is_not_ready_and_legal_sees_hold_exports_only(inst: Instance) -> None:
    ingest_three(inst)
    export_id = export_jobs.submit(inst.services, export.Selection(query="refund"), "test:compliance (compliance)")
    call, legal = _caller(inst, "compliance"), _caller(inst, "legal")
    shown = call("GET", f"/api/v1/exports/{export_id}")
    assert shown.status_code == 200 and shown.get_json()["state"] == "queued"
    assert shown.get_json()["download"] is None
    early = call("GET", f"/api/v1/exports/{export_id}/bundle.zip")
    assert early.status_code == 409 and early.get_json()["error"] == "export-not-ready"
    assert legal("GET", f"/api/v1/exports/{export_id}").status_code == 403
    assert legal("GET", f"/api/v1/exports/{export_id}/bundle.zip").status_code == 403
    bad = call("POST", "/api/v1/exports", {"query": "refund AND ("})
    assert bad.status_code == 400, bad.get_json()  # refused at submit, not a failed job


def test_a_restart_resumes_queued_jobs_and_fails_interrupted_ones(inst: Instance) -> None:
    ingest_three(inst)
    services, home = inst.services, inst.services.settings.home
    queued = export_jobs.submit(services, export.Selection(query="refund"), "test:auditor")
    lost, alive = (export_jobs.submit(services, export.Selection(contact=c), "test:auditor")
                   for c in ("15550001111", "15550002222"))
    with services.sessions.begin() as session:  # as a killed process left them: running, no lock held
        for export_id in (lost, alive):
            row = session.get(ExportJob, export_id)
            assert row is not None
            row.state, row.started_at, row.owner = "running", utcnow(), "gone:1"
    partial = home / "exports" / f".{lost}.partial-0000"
    partial.mkdir(parents=True)
    (partial / "records.jsonl").write_bytes(b"half")
    with leader_lock(services.engine, f"export-{alive}") as mine:  # a runner that is still at work
        assert mine
        assert export_jobs.run_pending(services) == {"interrupted": 1, "ran": 1}
    states = {i: export_jobs.get(services, i) for i in (queued, lost, alive)}
    assert states[queued].state == "done" and states[queued].counts is not None
    assert states[queued].counts["records"] == 4
    assert (states[lost].state, states[lost].error) == ("failed", "interrupted") and not partial.exists()
    assert states[alive].state == "running"  # its lock is held: not taken for dead
    assert [r["export"] for r in _export_records(inst)] == [queued]  # nothing audited for the lost one
    assert export_jobs.run(services, queued) is None  # a done job is never run again


def test_cli_export_prints_progress_lines_off_a_terminal_and_a_bar_on_one(
        inst: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest_three(inst)
    for name, value in inst.env.items():
        monkeypatch.setenv(name, value)
    done = CliRunner().invoke(cli, ["export", "--query", "refund", "--out", str(tmp_path / "cli")])
    assert done.exit_code == 0, done.output
    pages = chunked.page_count((tmp_path / "cli" / "transcript.pdf").read_bytes())
    assert [line for line in done.stderr.splitlines() if line.startswith("export")] == [
        "export: records 0/4", "export: records 4/4", "export: records 4/4, pages 0",
        f"export: records 4/4, pages {pages}/{pages}"]
    assert "4 records exported" in done.stdout

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Tty()
    bar = ExportProgress(screen)
    for n in (0, 200, 400):
        bar(n, 400)
    for pages, total in ((0, None), (12, None), (30, 30)):
        bar.pages(pages, total)
    bar.finish()
    assert screen.getvalue() == ("\rexport [------------------------------] records 0/400"
                                 "\rexport [###############---------------] records 200/400"
                                 "\rexport [##############################] records 400/400"
                                 "\rexport [#############################-] records 400/400, pages 0"
                                 "\rexport [#############################-] records 400/400, pages 12"
                                 "\rexport [##############################] records 400/400, pages 30/30\n")

