"""Background jobs (APScheduler): one registry, housekeeping on intervals, scheduled jobs on cron lines.

Two kinds of job (``Job``):

*Housekeeping* (``seal``, ``media``, ``index``, ``holds``, ``exports``) runs every few seconds (intervals from the
settings). Each run takes that stage's own lock (``leader_lock``) and is idempotent: a run
that fails is retried on the next tick from what the catalog says is done. A run is not
sealed: a record every few seconds would grow the WORM store by records no one may delete,
and what the stage did is sealed anyway (the records, segments and media it wrote); the
``holds`` sync seals one ``job_run`` of its own when a run applied hold decisions
(``holds.sync``), none when idle. Its
``job_state`` row (last run, outcome, next run) is written when the outcome changes and
otherwise at most every ``STATE_EVERY`` seconds, so an idle archive does not write the
catalog every tick.

*Scheduled* jobs (``worm-selftest``, ``disposition``, ``verification``, the reviews) run on
a cron line in UTC from ``policies/schedule.yaml`` (``archiver.schedule``), or the default
they were registered with. Each run:

1. holds the job's lock across processes (``leader_lock(engine, "job-<name>")``: a
   PostgreSQL advisory lock, an flock beside an SQLite catalog; released however the
   holder exits), so two processes never run it at once; a scheduled run that finds the
   lock taken is skipped, ``archiver jobs run NAME`` refuses (JobBusy);
2. skips a scheduled run whose time another process already ran (``job_state.next_run_at``
   is the one schedule every process follows), and marks the job running;
3. runs it, then journals a ``job_run`` record (job, trigger, start, end, outcome, the
   error's class and code, never its text, and the job's summary: counts and ids) and
   updates ``job_state`` in the same transaction; the sealer seals the record.

A job that raises is recorded ``failed`` and the scheduler goes on. A process killed
mid-run (or unable to record the run's end: the catalog down) leaves ``running_since`` set; the next run (holding the lock, so nobody else is
running it) first seals a ``job_run`` for the lost run: ``failed``, error
``Interrupted``, no end.

Restarts: each jobs process computes next runs from the schedule. A job whose
``next_run_at`` has passed when a jobs process starts (every process was down at that
time) runs once at start (trigger ``start``), however many times were missed; a job that
never ran waits for its first cron time.

Registering a job: a module calls ``register(Job(...))`` at import and is listed in
``JOB_MODULES``. ``Job.run`` takes the Services and returns a summary dict (counts,
seqs, key ids: never message content) or None.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from archiver import schedule as schedules
from archiver.canonical import canonical
from archiver.catalog import JobState, leader_lock, utcnow
from archiver.config import Settings
from archiver.errors import ArchiverError, JobBusy, UnknownJob
from archiver.journal import append_job_run
from archiver.schedule import Schedule
from archiver.services import Services

log = logging.getLogger(__name__)

STATE_EVERY = 60.0
"""Seconds between ``job_state`` writes of a housekeeping job whose outcome did not change."""

JOB_MODULES: tuple[str, ...] = ()
"""Modules that register jobs when imported (``register``), besides this one."""

TRIGGERS = ("schedule", "start", "manual")


@dataclass(frozen=True)
class Job:
    """A background job. ``cron``: the default cron line of a scheduled job (sealed runs);
    ``every``: the interval of a housekeeping job, from the settings, and ``cadence`` how
    ``archiver jobs list`` says it (e.g. ``every ARCHIVER_SEAL_INTERVAL seconds``)."""

    name: str
    run: Callable[[Services], Any]
    description: str
    cron: str | None = None
    every: Callable[[Settings], float] | None = None
    cadence: str = ""

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"job {self.name}: give a cron line (scheduled) or an interval (housekeeping)")
        if self.cron is not None:
            schedules.check_cron(self.cron)

    @property
    def scheduled(self) -> bool:
        """True for a scheduled job: runs are single-instance and sealed as ``job_run`` records."""
        return self.cron is not None


_REGISTRY: dict[str, Job] = {}


def register(job: Job) -> Job:
    """Add ``job`` to the registry (at import of its module). Raises ValueError for a name taken."""
    if job.name in _REGISTRY and _REGISTRY[job.name] is not job:
        raise ValueError(f"a job named {job.name!r} is registered already")
    _REGISTRY[job.name] = job
    return job


def registered() -> dict[str, Job]:
    """Every registered job by name (importing ``JOB_MODULES`` first), in registration order."""
    for module in JOB_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def load_schedule(settings: Settings, jobs: Mapping[str, Job] | None = None) -> Schedule:
    """``ARCHIVER_POLICIES/schedule.yaml`` for ``jobs`` (default: every registered job). Raises ScheduleError."""
    jobs = registered() if jobs is None else jobs
    return schedules.load(settings.policies_dir,
                          {n: j.cron for n, j in jobs.items() if j.cron is not None},
                          {n: j.cadence for n, j in jobs.items() if j.cron is None})


@dataclass(frozen=True)
class Outcome:
    """How one run ended: ``ok`` or ``failed`` with the error's class (and code); no text."""

    outcome: str
    error: str | None = None
    code: str | None = None
    summary: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return self.outcome, self.error


@dataclass(frozen=True)
class JobRun:
    """One finished run of a scheduled job, as journaled (``journal_id`` of its ``job_run`` record)."""

    job: str
    trigger: str
    started_at: datetime
    ended_at: datetime
    outcome: Outcome
    journal_id: int


class Runner:
    """Runs jobs for one process: locks, ``job_state`` and ``job_run`` records.

    ``clock`` is what ``now`` means (tests running it in-process may give their own).
    """

    def __init__(self, services: Services, schedule: Schedule, jobs: Mapping[str, Job] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.services = services
        self.schedule = schedule
        self.jobs = dict(registered() if jobs is None else jobs)
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}"[:128]
        self._written: dict[str, tuple[tuple[str, str | None], datetime]] = {}
        self._unwritten_runs: dict[str, tuple[int, int]] = {}

    def job(self, name: str) -> Job:
        """The job called ``name``. Raises UnknownJob."""
        try:
            return self.jobs[name]
        except KeyError:
            raise UnknownJob(f"no job named {name!r} (jobs: {', '.join(self.jobs)})") from None

    # ------------------------------------------------------------------ scheduled jobs

    def first_run(self, name: str) -> datetime | None:
        """When this process first runs scheduled job ``name`` (the clock's now if it is overdue),
        recording its next run in ``job_state`` when nobody has (or the schedule changed it)."""
        entry = self.schedule.entries[name]
        now = self.clock()
        with self.services.sessions.begin() as session:
            state = _state(session, name)
            if state.next_run_at is not None and state.next_run_at <= now:
                return now  # missed while no jobs process ran: once, at start
            state.next_run_at = entry.next_after(now)
            return state.next_run_at

    def run_scheduled(self, name: str, trigger: str = "schedule", actor: str | None = None) -> JobRun | None:
        """One run of scheduled job ``name``; None when skipped (running elsewhere, or this
        time already run by another process). ``trigger`` is ``schedule``, ``start`` (a run
        missed while no process ran) or ``manual`` (``archiver jobs run``: never skipped,
        raises JobBusy instead). Raises UnknownJob; catalog errors propagate."""
        job = self.job(name)
        if not job.scheduled:
            raise UnknownJob(f"{name} is a housekeeping job, not a scheduled one")
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}")
        with leader_lock(self.services.engine, f"job-{name}") as mine:
            if not mine:
                if trigger == "manual":
                    raise JobBusy(f"job {name} is running in another process")
                log.info("job.skipped job=%s reason=running-elsewhere", name)
                return None
            return self._locked_run(job, trigger, actor)

    def _locked_run(self, job: Job, trigger: str, actor: str | None) -> JobRun | None:
        started = self.clock()
        with self.services.sessions.begin() as session:
            state = _state(session, job.name)
            if trigger != "manual" and state.next_run_at is not None and state.next_run_at > started:
                log.info("job.skipped job=%s reason=already-run", job.name)
                return None
            if state.running_since is not None:
                self._seal_interrupted(session, job, state, started)
            state.running_since, state.running_owner = started, self.owner
        outcome = _call(job, self.services)
        ended = self.clock()
        entry = self.schedule.entries[job.name]
        report = {
            "trigger": trigger, "actor": actor, "owner": self.owner,
            "started_at": started.isoformat(), "ended_at": ended.isoformat(),
            "outcome": outcome.outcome, "error": outcome.error, "code": outcome.code,
            "summary": outcome.summary or {}, "cron": entry.cron, "schedule_sha256": self.schedule.sha256,
        }
        with self.services.sessions.begin() as session:
            state = _state(session, job.name)
            journal_id = append_job_run(session, job.name, report)
            _record(state, outcome, started, ended, trigger, runs=1, failures=int(outcome.outcome != "ok"))
            state.last_journal_id = journal_id
            state.running_since = state.running_owner = None
            if trigger != "manual" or state.next_run_at is None:
                state.next_run_at = entry.next_after(ended)
        log.info("job.run job=%s trigger=%s outcome=%s", job.name, trigger, outcome.outcome)
        return JobRun(job.name, trigger, started, ended, outcome, journal_id)

    def _seal_interrupted(self, session: Any, job: Job, state: JobState, now: datetime) -> None:
        """Seal the run a dead process left unfinished (``running_since`` still set)."""
        assert state.running_since is not None
        lost = Outcome("failed", "Interrupted")
        report: dict[str, Any] = {"trigger": state.last_trigger, "actor": None, "owner": state.running_owner,
                  "started_at": state.running_since.isoformat(), "ended_at": None,
                  "outcome": lost.outcome, "error": lost.error, "code": None, "summary": {},
                  "noticed_by": self.owner, "noticed_at": now.isoformat()}
        state.last_journal_id = append_job_run(session, job.name, report)
        _record(state, lost, state.running_since, None, None, runs=1, failures=1)
        log.warning("job.interrupted job=%s owner=%s", job.name, state.running_owner)

    # ------------------------------------------------------------------ housekeeping jobs

    def run_housekeeping(self, name: str) -> Outcome:
        """One tick of housekeeping job ``name``; ``job_state`` is written when the outcome
        changed or ``STATE_EVERY`` seconds have passed since this process last wrote it."""
        job = self.job(name)
        started = self.clock()
        outcome = _call(job, self.services)
        ended = self.clock()
        runs, failures = self._unwritten_runs.get(name, (0, 0))
        runs, failures = runs + 1, failures + int(outcome.outcome != "ok")
        last = self._written.get(name)
        if last is not None and last[0] == outcome.key and (ended - last[1]).total_seconds() < STATE_EVERY:
            self._unwritten_runs[name] = (runs, failures)
            return outcome
        assert job.every is not None
        try:
            with self.services.sessions.begin() as session:
                state = _state(session, name)
                _record(state, outcome, started, ended, "schedule", runs=runs, failures=failures)
                state.next_run_at = ended + timedelta(seconds=job.every(self.services.settings))
        except Exception as exc:  # noqa: BLE001 - the catalog is down: the next tick tries again
            log.warning("job.state_unwritten job=%s error=%s", name, exc.__class__.__name__)
            self._unwritten_runs[name] = (runs, failures)
            return outcome
        self._written[name] = (outcome.key, ended)
        self._unwritten_runs.pop(name, None)
        return outcome

    # ------------------------------------------------------------------ the scheduler

    def tick(self, name: str, trigger: str = "schedule") -> Callable[[], None]:
        """What the scheduler calls for job ``name``: never raises (a job must not stop it)."""
        def run() -> None:
            try:
                if self.jobs[name].scheduled:
                    self.run_scheduled(name, trigger)
                else:
                    self.run_housekeeping(name)
            except Exception as exc:  # noqa: BLE001 - the catalog failed around the run: next time again
                log.error("job.unrecorded job=%s error=%s", name, exc.__class__.__name__)
        return run


def _call(job: Job, services: Services) -> Outcome:
    """Run ``job``; its summary, or the error's class and code (never its message: it may quote content)."""
    try:
        result = job.run(services)
        summary = result if isinstance(result, dict) else ({} if result is None else {"count": result})
        canonical(summary)  # a summary the record cannot hold is the job's failure, not the recorder's
        return Outcome("ok", summary=summary)
    except ArchiverError as exc:
        log.warning("job.failed job=%s code=%s", job.name, exc.code)
        return Outcome("failed", exc.__class__.__name__, exc.code)
    except Exception as exc:  # noqa: BLE001 - a job must never kill the scheduler
        log.error("job.crashed job=%s error=%s", job.name, exc.__class__.__name__)
        return Outcome("failed", exc.__class__.__name__)


def _state(session: Any, name: str) -> JobState:
    row: JobState | None = session.get(JobState, name)
    if row is None:
        row = JobState(name=name, runs=0, failures=0)
        session.add(row)
        session.flush()
    return row


def _record(state: JobState, outcome: Outcome, started: datetime, ended: datetime | None, trigger: str | None,
            *, runs: int, failures: int) -> None:
    state.last_started_at, state.last_ended_at = started, ended
    state.last_outcome, state.last_error, state.last_trigger = outcome.outcome, outcome.code or outcome.error, trigger
    state.runs += runs
    state.failures += failures


def describe(runner: Runner) -> list[dict[str, Any]]:
    """Every job, as ``archiver jobs list`` shows it: name, kind, when it runs, description."""
    out = []
    for job in runner.jobs.values():
        entry = runner.schedule.entries.get(job.name)
        out.append({"name": job.name, "kind": "scheduled" if job.scheduled else "housekeeping",
                    "when": entry.cron if entry else job.cadence, "sealed": job.scheduled,
                    "from": (f"{runner.schedule.file}:{entry.line}" if entry.line else "default") if entry else "settings",
                    "description": job.description})
    return out


def start(services: Services, runner: Runner | None = None) -> BackgroundScheduler:
    """Start every job in a background scheduler; return it (call ``shutdown`` to stop).

    Raises ScheduleError for an invalid ``schedule.yaml`` (before any job runs).
    """
    runner = runner or Runner(services, load_schedule(services.settings))
    scheduler = BackgroundScheduler(timezone="UTC")
    for job in runner.jobs.values():
        if job.every is not None:
            scheduler.add_job(runner.tick(job.name), "interval", seconds=job.every(services.settings), id=job.name,
                              max_instances=1, coalesce=True, misfire_grace_time=None)
            continue
        first = runner.first_run(job.name)
        if first is not None and first <= runner.clock():  # overdue: once now, then on the cron line
            scheduler.add_job(runner.tick(job.name, "start"), id=f"{job.name}@start", next_run_time=first,
                              misfire_grace_time=None)
            first = runner.schedule.entries[job.name].next_after(first)
        scheduler.add_job(runner.tick(job.name), runner.schedule.entries[job.name].trigger(), id=job.name,
                          max_instances=1, coalesce=True, misfire_grace_time=None, next_run_time=first)
    scheduler.start()
    return scheduler


def run(services: Services, stop: threading.Event, runner: Runner | None = None) -> None:
    """Run every job until ``stop`` is set, then let running jobs finish (``archiver jobs``)."""
    scheduler = start(services, runner)
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)


# --------------------------------------------------------------------------- built-in jobs


def _seal(services: Services) -> int:
    from archiver import sealer

    return sealer.seal_pending(services)


def _media(services: Services) -> int:
    from archiver import media

    return media.fetch_due(services)


def _index(services: Services) -> int:
    from archiver import indexer

    return int(indexer.index_pending(services))


def _holds(services: Services) -> Any:
    from archiver import holds

    return holds.sync(services)


def _exports(services: Services) -> Any:
    from archiver import export_jobs

    return export_jobs.run_pending(services)


def _disposition(services: Services) -> Any:
    from archiver import disposition

    return disposition.summary(disposition.run(services, "archiver:jobs"))


def _consent_review(services: Services) -> Any:
    from archiver import consent_review

    return consent_review.review(services)


def _template_review(services: Services) -> Any:
    from archiver import template_review

    return template_review.review(services)


def _capture_review(services: Services) -> Any:
    from archiver import capture_review

    return capture_review.review(services)


def _template_sync(services: Services) -> Any:
    from archiver import template_sync

    if not services.settings.waba_id or not services.settings.graph_token:
        return {"skipped": "ARCHIVER_WABA_ID or ARCHIVER_GRAPH_TOKEN not set"}
    return template_sync.sync(services)


def _worm_selftest(services: Services) -> dict[str, Any]:
    from archiver.store import assert_worm

    assert_worm(services.store)
    return {"store": type(services.store).__name__, "allow_unlocked": bool(services.store.allow_unlocked)}


register(Job("seal", _seal, "seal journaled deliveries into WORM segments",
             every=lambda s: s.seal_interval, cadence="every ARCHIVER_SEAL_INTERVAL seconds"))
register(Job("media", _media, "fetch attachments from the Graph API into WORM",
             every=lambda s: 5.0, cadence="every 5 seconds"))
register(Job("index", _index, "index sealed records for search",
             every=lambda s: s.index_interval, cadence="every 2 seconds"))
register(Job("holds", _holds, "evaluate litigation holds on newly sealed and indexed records; apply sealed hold decisions",
             every=lambda s: s.index_interval, cadence="every 2 seconds"))
register(Job("exports", lambda services: _exports(services), "run queued export jobs; mark those a killed process "
             "left running failed (interrupted)", every=lambda s: s.index_interval, cadence="every 2 seconds"))
register(Job("disposition", _disposition, "destroy the data keys whose records' retention has run out "
             "(none held); review classes wait for approval", cron="0 2 * * *"))
register(Job("worm-selftest", _worm_selftest, "prove the store still refuses to delete a locked object",
             cron="0 */6 * * *"))


def _verification(services: Services) -> dict[str, Any]:
    from archiver import integrity_job
    from archiver.errors import IntegrityError

    summary = integrity_job.run(services)
    if summary["outcome"] != "ok":  # sealed, stored and alerted already: the run itself failed
        raise IntegrityError("verification", "the nightly verification found a break (see its verification record)")
    return summary


register(Job("verification", _verification, "full verification of the chain, segments, checkpoints and catalog; "
             "seals a verification record, stores the signed integrity report in WORM, alerts on a break",
             cron="0 3 * * *"))
register(Job("consent-review", _consent_review, "find marketing sent to contacts whose marketing consent was "
             "not valid at send time (sealed findings)", cron="0 * * * *"))
register(Job("template-sync", _template_sync, "read the template definitions from the Graph API into sealed "
             "snapshots (skipped without ARCHIVER_WABA_ID)", cron="30 2 * * *"))
register(Job("template-review", _template_review, "find template sends not approved or with a drifted category, "
             "changed wording since the last review, overdue reviews (sealed findings)", cron="0 3 * * *"))
register(Job("capture-review", _capture_review, "find capture gaps: silent numbers, an inactive Business App, statuses "
             "without their message, unknown numbers, disconnections, declined or partial history (sealed findings)",
             cron="*/15 * * * *"))
