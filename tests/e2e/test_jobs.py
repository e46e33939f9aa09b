"""Scheduled jobs: one instance at a time across real processes (SQLite and PostgreSQL), each
run sealed as a verifiable job_run record, a killed run sealed as interrupted, a failing
job recorded and the scheduler going on, a run missed while down made once at start, and
``archiver stats`` showing each job's last run, outcome and next run.

The scheduler tests run APScheduler's cron triggers in-process on a test clock (its
``datetime`` replaced, and the Runner given the same clock); production code has none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apscheduler.schedulers.base
import pytest
from sqlalchemy import select

from archiver import jobs, records, sealer, stats
from archiver import verify as verifier
from archiver.catalog import JobState, Journal, Record, leader_lock
from archiver.config import Settings
from archiver.schedule import Entry, Schedule
from archiver.services import Services
from tests.serving import ROOT, wait_until

# A jobs process with one more scheduled job, "probe", that says it started and then waits
# until the test opens and closes the FIFO named on its command line.
CHILD = """
import sys
from archiver import jobs
from archiver.cli import main

def probe(services):
    print("started", flush=True)
    with open(sys.argv[1]) as fifo:
        fifo.read()
    return {"released": 1}

jobs.register(jobs.Job("probe", probe, "a job the test holds", cron="0 2 * * *"))
main(["jobs", "run", "probe"])
"""


@pytest.fixture
def services(catalog_env: dict[str, str]) -> Iterator[Services]:
    svc = Services.open(Settings.from_env(catalog_env))
    yield svc
    svc.close()


def child(env: dict[str, str], fifo: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(fifo)], env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def release(fifo: Path) -> None:
    """Let the probe that waits on ``fifo`` end (opening blocks until it has opened its end)."""
    with open(fifo, "w"):
        pass


def state(services: Services, name: str) -> JobState | None:
    with services.sessions() as session:
        return session.get(JobState, name)


def job_runs(services: Services, name: str) -> list[dict[str, Any]]:
    """The sealed job_run records of ``name``, decrypted, in seq order."""
    with services.sessions() as session:
        seqs = session.scalars(select(Record.seq).where(Record.kind == "job_run", Record.type == name)
                               .order_by(Record.seq)).all()
        return [records.read_record(services, session, seq) for seq in seqs]


def test_one_process_at_a_time_and_a_killed_run_is_sealed_as_interrupted(
        services: Services, catalog_env: dict[str, str], tmp_path: Path) -> None:
    fifo = tmp_path / "probe.fifo"
    os.mkfifo(fifo)
    first = child(catalog_env, fifo)
    assert first.stdout is not None and first.stdout.readline() == "started\n"
    running = state(services, "probe")
    assert running is not None and running.running_since is not None
    assert running.running_owner and running.running_owner.endswith(f":{first.pid}")
    shown = subprocess.run([sys.executable, "-m", "archiver.cli", "stats", "--json"], env={**os.environ, **catalog_env},
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    probe = json.loads(shown.stdout)["jobs"]["probe"]  # a job this process does not know: its state still shows
    assert probe["kind"] == "unknown" and probe["running_since"] is not None and probe["last_run"] is None

    second = subprocess.run([sys.executable, "-c", CHILD, str(fifo)], env={**os.environ, **catalog_env}, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert "error[job-busy]: job probe is running in another process" in second.stderr
    assert "started" not in second.stdout  # it never ran the job

    release(fifo)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert json.loads(out)["outcome"] == "ok" and json.loads(out)["summary"] == {"released": 1}

    killed = child(catalog_env, fifo)
    assert killed.stdout is not None and killed.stdout.readline() == "started\n"
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)  # closes its pipes

    def lock_free() -> bool:  # PostgreSQL ends the dead process's session (and its lock) on its own time
        with leader_lock(services.engine, "job-probe") as mine:
            return mine
    wait_until(lock_free, 60, "the killed process's lock to be released")
    last = child(catalog_env, fifo)
    assert last.stdout is not None and last.stdout.readline() == "started\n"
    release(fifo)
    out, err = last.communicate(timeout=120)
    assert last.returncode == 0, err

    sealer.seal_pending(services)
    sealed = [r["content"] for r in job_runs(services, "probe")]
    assert [(r["outcome"], r["error"], r["trigger"]) for r in sealed] == [
        ("ok", None, "manual"), ("failed", "Interrupted", "manual"), ("ok", None, "manual")]
    assert sealed[1]["owner"].endswith(f":{killed.pid}") and sealed[1]["ended_at"] is None
    assert sealed[1]["noticed_by"].endswith(f":{last.pid}")
    assert sealed[0]["actor"].startswith("cli:") and sealed[0]["summary"] == {"released": 1}
    done = state(services, "probe")
    assert done is not None and done.running_since is None and (done.runs, done.failures) == (3, 1)
    with services.sessions() as session:
        report = verifier.audit(services.store, services.signing_key.public_key(), session)
        probe = stats.collect(session)["jobs"]["probe"]
    assert report.ok, report.first_error
    assert (probe["outcome"], probe["running_since"], probe["next_run"]) == ("ok", None, done.next_run_at.isoformat())
    assert probe["record"] == job_runs(services, "probe")[-1]["seq"]


def test_a_sealed_run_is_verifiable_and_stats_show_last_and_next(services: Services) -> None:
    clock = Clock(datetime(2026, 12, 2, 1, 59, 30, tzinfo=UTC))
    runner = jobs.Runner(services, jobs.load_schedule(services.settings), clock=clock)
    assert runner.first_run("worm-selftest") == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    clock.now = datetime(2026, 12, 2, 6, 0, 1, tzinfo=UTC)
    done = runner.run_scheduled("worm-selftest")
    assert done is not None and done.outcome.outcome == "ok"
    # another process firing for the same time finds it run and the next run moved on
    other = jobs.Runner(services, runner.schedule, clock=clock)
    assert other.run_scheduled("worm-selftest") is None
    sealer.seal_pending(services)
    (sealed,) = job_runs(services, "worm-selftest")
    assert sealed["kind"] == "job_run" and sealed["retention_class"] == "default"  # the shipped policy's
    assert sealed["content"]["summary"] == {"store": "LocalStore", "allow_unlocked": False}
    assert sealed["content"]["cron"] == "0 */6 * * *" and sealed["content"]["schedule_sha256"] == runner.schedule.sha256
    with services.sessions() as session:
        report = verifier.audit(services.store, services.signing_key.public_key(), session)
        shown = stats.collect(session)["jobs"]
    assert report.ok, report.first_error
    assert shown["worm-selftest"] == {
        "kind": "scheduled", "last_run": "2026-12-02T06:00:01+00:00", "ended": "2026-12-02T06:00:01+00:00",
        "outcome": "ok", "error": None, "next_run": "2026-12-02T12:00:00+00:00", "running_since": None,
        "runs": 1, "failures": 0, "record": sealed["seq"]}
    assert shown["seal"]["kind"] == "housekeeping" and shown["seal"]["record"] is None


def test_housekeeping_state_is_written_on_a_change_or_after_a_while_never_sealed(services: Services) -> None:
    clock = Clock(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    runner = jobs.Runner(services, jobs.load_schedule(services.settings), clock=clock)
    assert runner.run_housekeeping("seal").outcome == "ok"
    first = state(services, "seal")
    assert first is not None and (first.runs, first.last_outcome) == (1, "ok")
    clock.now = datetime(2026, 12, 2, 12, 0, 30, tzinfo=UTC)
    runner.run_housekeeping("seal")  # same outcome, 30 s later: not written
    assert state(services, "seal").runs == 1  # type: ignore[union-attr]
    clock.now = datetime(2026, 12, 2, 12, 1, 0, tzinfo=UTC)
    runner.run_housekeeping("seal")
    written = state(services, "seal")
    assert written is not None and written.runs == 3 and written.last_started_at == clock.now
    assert written.next_run_at is not None and written.next_run_at > clock.now
    with services.sessions() as session:
        assert session.scalar(select(Journal.id).where(Journal.source == "job_run")) is None


class Clock:
    """A test clock: what the Runner and (patched) APScheduler call now."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    test_clock = Clock(datetime(2026, 12, 2, 12, 0, 30, tzinfo=UTC))

    class TestDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return test_clock.now.astimezone(tz) if tz is not None else test_clock.now

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", TestDatetime)
    return test_clock


def boom(services: Services) -> None:
    raise RuntimeError("text that must not reach the record: Bonjour Camille")


def fine(services: Services) -> dict[str, int]:
    return {"checked": 1}


def runs_of(services: Services, name: str) -> int:
    got = state(services, name)
    return got.runs if got is not None else 0


def test_a_failing_job_is_recorded_and_the_scheduler_goes_on_and_a_missed_run_runs_once_at_start(
        services: Services, clock: Clock) -> None:
    registered = {j.name: j for j in (jobs.Job("boom", boom, "fails", cron="* * * * *"),
                                      jobs.Job("fine", fine, "works", cron="* * * * *"))}
    plan = Schedule(file="test", sha256=None, entries={n: Entry(n, "* * * * *") for n in registered})

    scheduler = jobs.start(services, jobs.Runner(services, plan, registered, clock=clock))
    try:
        for minute, runs in ((1, 1), (2, 2)):
            clock.now = datetime(2026, 12, 2, 12, minute, 0, 500000, tzinfo=UTC)
            scheduler.wakeup()
            wait_until(lambda n=runs: runs_of(services, "boom") >= n and runs_of(services, "fine") >= n, 60,
                       f"run {runs} of both jobs")
    finally:
        scheduler.shutdown(wait=True)
    failed, ok = state(services, "boom"), state(services, "fine")
    assert failed is not None and (failed.runs, failed.failures, failed.last_outcome) == (2, 2, "failed")
    assert failed.last_error == "RuntimeError" and failed.running_since is None
    assert ok is not None and (ok.runs, ok.failures, ok.last_outcome) == (2, 0, "ok")
    assert ok.next_run_at == datetime(2026, 12, 2, 12, 3, tzinfo=UTC)

    # Down from 12:02 to 15:00: every process gone, 177 runs missed; the next start runs it once.
    clock.now = datetime(2026, 12, 2, 15, 0, 10, tzinfo=UTC)
    scheduler = jobs.start(services, jobs.Runner(services, plan, registered, clock=clock))
    try:
        wait_until(lambda: runs_of(services, "fine") >= 3 and runs_of(services, "boom") >= 3, 60, "the catch-up runs")
    finally:
        scheduler.shutdown(wait=True)
    ok = state(services, "fine")
    assert ok is not None and ok.runs == 3 and ok.last_trigger == "start"
    assert ok.next_run_at == datetime(2026, 12, 2, 15, 1, tzinfo=UTC)

    sealer.seal_pending(services)
    sealed = [r["content"] for r in job_runs(services, "boom")]
    assert [(r["outcome"], r["error"], r["code"], r["trigger"]) for r in sealed] == [
        ("failed", "RuntimeError", None, "schedule")] * 2 + [("failed", "RuntimeError", None, "start")]
    with services.sessions() as session:
        bodies = [json.dumps(r["content"]) for r in job_runs(services, "boom")]
        assert all("Camille" not in b and "Bonjour" not in b for b in bodies)
        assert stats.collect(session)["jobs"]["boom"]["error"] == "RuntimeError"
