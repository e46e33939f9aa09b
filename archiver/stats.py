"""Counts for ``archiver stats --json`` and ``GET /api/v1/stats``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archiver import integrity_job
from archiver.catalog import DuplicateHit, JobState, Journal, Media, Record, archive_id, chain_head
from archiver.errors import ArchiverError

ITEM_EXCLUDED = ("delivery", "audit", "media", "job_run", "finding", "template")
INDEX_STATES = ("built", "not-built", "foreign", "unavailable")
"""``built``: the index holds this archive up to ``indexed``; ``not-built``: it records no
state (new, wiped or reset: the next index run rebuilds it); ``foreign``: it was built for
another archive (``archiver reindex`` replaces it); ``unavailable``: it cannot be asked."""


def collect(session: Session, search: Any = None) -> dict[str, Any]:
    """Deliveries, distinct items by kind, duplicates, quarantine, pending, media, chain tip,
    each background job's last run, outcome and next run, the last nightly verification
    (``integrity``: ``ok``, ``degraded`` with its first error, or ``unverified``), and, given the ``search`` index (a
    SearchIndex), its state and lag."""
    by_kind = dict(session.execute(select(Record.kind, func.count()).group_by(Record.kind)).all())
    media = dict(session.execute(select(Media.state, func.count()).group_by(Media.state)).all())
    head = chain_head(session)
    jobs = job_status(session)
    out: dict[str, Any] = {
        "deliveries": by_kind.get("delivery", 0),
        "items": {k: n for k, n in sorted(by_kind.items()) if k not in ITEM_EXCLUDED},
        "audit": by_kind.get("audit", 0),
        "duplicates": session.scalar(select(func.count()).select_from(DuplicateHit)) or 0,
        "quarantined": by_kind.get("quarantine", 0),
        "pending": session.scalar(select(func.count()).select_from(Journal).where(Journal.sealed.is_(False))) or 0,
        "media": {"stored": media.get("stored", 0), "pending": media.get("pending", 0), "failed": media.get("failed", 0)},
        "chain": {"seq": head.seq, "hash": head.hash},
        "job_runs": by_kind.get("job_run", 0),
        "jobs": jobs,
        "reviews": review_status(session, jobs),
        "integrity": integrity_job.state(session),
    }
    if search is not None:
        out["index"] = index_status(search, archive_id(session), head.seq)
    return out


def index_status(search: Any, archive: str, head: int) -> dict[str, Any]:
    """``{"state", "indexed", "lag"}`` of ``search`` for this archive at chain head ``head``
    (``indexed`` and ``lag`` are None where the index cannot tell them)."""
    try:
        state = search.state()
    except ArchiverError as exc:  # down, or a search URL the install cannot open
        return {"state": "unavailable", "indexed": None, "lag": None, "error": exc.code}
    if state is None:
        return {"state": "not-built", "indexed": 0, "lag": head}
    if state.archive != archive:
        return {"state": "foreign", "indexed": None, "lag": None}
    return {"state": "built", "indexed": state.seq, "lag": max(head - state.seq, 0)}


def job_status(session: Session) -> dict[str, dict[str, Any]]:
    """Each job (registered, or with a state row) -> its last run, outcome and next run.

    ``last_run``/``ended`` are when the last run started and ended (``ended`` is None for a
    run that never finished), ``outcome`` is ``ok`` or ``failed`` (``error``: the error's
    code or class), ``next_run`` when the schedule runs it next (None: never run and no jobs
    process has scheduled it yet), ``record`` the seq of the last ``job_run`` record (None
    until sealed; housekeeping jobs have none).
    """
    from archiver import jobs

    registered = jobs.registered()
    rows = {row.name: row for row in session.scalars(select(JobState))}
    sealed = dict(session.execute(select(Journal.id, Journal.delivery_seq).where(
        Journal.id.in_([r.last_journal_id for r in rows.values() if r.last_journal_id is not None]))).all())
    out: dict[str, dict[str, Any]] = {}
    for name in list(registered) + sorted(set(rows) - set(registered)):
        job, row = registered.get(name), rows.get(name)
        out[name] = {
            "kind": "scheduled" if job is not None and job.scheduled else "housekeeping" if job is not None else "unknown",
            "last_run": _iso(row.last_started_at) if row else None,
            "ended": _iso(row.last_ended_at) if row else None,
            "outcome": row.last_outcome if row else None,
            "error": row.last_error if row else None,
            "next_run": _iso(row.next_run_at) if row else None,
            "running_since": _iso(row.running_since) if row else None,
            "runs": row.runs if row else 0,
            "failures": row.failures if row else 0,
            "record": sealed.get(row.last_journal_id) if row and row.last_journal_id is not None else None,
        }
    return out


REVIEWS = {"consent": "consent-review", "template": "template-review", "capture": "capture-review"}
"""Review (finding kind) -> the scheduled job that runs it."""


def review_status(session: Session, jobs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each review -> its job's last run, outcome and next run, and its findings still open."""
    from archiver.findings import open_count

    out = {}
    for kind, job in REVIEWS.items():
        state = jobs.get(job, {})
        out[kind] = {"job": job, "last_run": state.get("last_run"), "outcome": state.get("outcome"),
                     "next_run": state.get("next_run"), "record": state.get("record"),
                     "open_findings": open_count(session, kind)}
    return out


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None
