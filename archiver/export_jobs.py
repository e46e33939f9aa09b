"""Export jobs (issue 10 point 4): ``POST /api/v1/exports`` queues, a runner writes the bundle.

A job is one ``export_jobs`` row: ``queued`` -> ``running`` -> ``done`` | ``failed``.

- ``submit`` checks the selection (a bad field, an unknown hold or a query that does not
  parse is refused then, 400/404) and queues the row; the API then hands the id to this
  process's runner thread (``start``: one thread, exports run one at a time per process, off
  every request thread, so never on a webhook's worker).
- ``run`` claims a queued row (an atomic ``queued -> running`` update: two runners never run
  one export), holds the lock ``export-<id>`` (``catalog.leader_lock``: released however
  the holder exits) while it writes the bundle with ``export.write_bundle``, which seals its
  ``export`` audit record (who, the selection, the counts, the manifest's SHA-256, the job
  id), and records ``records_done``/``records_total`` as it goes, then ``done`` (counts,
  manifest hash) or ``failed`` (the error's code or class, never its text).
- Restarts (``run_pending``, the ``exports`` housekeeping job every 2 s in ``archiver jobs`` /
  ``archiver serve``, and once when a runner thread starts): a ``queued`` job is resumed (run
  by whichever runner claims it first); a ``running`` job whose lock nobody holds was left by a
  killed process and is marked ``failed`` with error ``interrupted`` (its partial folder
  removed): the bundle is never resumed half-written; submit it again.

``pages`` in the progress counts the pages of ``transcript.pdf`` rendered so far (written as
each chunk of a chunked rendering is merged) and ``pages_total`` the document's once it is
whole; both None while the transcript has not started, and for an export without ``pdf``.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from archiver import export, holds
from archiver.catalog import ExportJob, leader_lock, utcnow
from archiver.errors import ArchiverError
from archiver.services import Services

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed")
PROGRESS_WRITE_EVERY = 1.0
"""Seconds between writes of a running job's progress (and always at the end)."""
INTERRUPTED = "interrupted"


class NoSuchExport(ArchiverError):
    code = "not-found"
    http_status = 404


class ExportNotReady(ArchiverError):
    code = "export-not-ready"
    http_status = 409


def folder_of(home: Path, export_id: str) -> Path:
    return home / "exports" / export_id


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def submit(services: Services, sel: export.Selection, actor: str, *,
           formats: tuple[str, ...] = export.DEFAULT_FORMATS, tz: str | None = None) -> str:
    """Queue an export of ``sel`` (``formats`` and the transcript's ``tz`` as ``export.write_bundle``
    takes them); return its id. Raises ValidationError, NoSuchHold, QuerySyntaxError."""
    sel.check()
    if sel.hold is not None:
        holds.show(services, sel.hold)  # NoSuchHold now, not as a failed job
    elif sel.query is not None:
        holds.parse_criteria(query=sel.query)  # QuerySyntaxError now
    else:
        holds.parse_criteria(custodians=[str(sel.contact)], after=sel.after, before=sel.before)
    export_id = f"exp-{secrets.token_hex(6)}"
    with services.sessions.begin() as session:
        session.add(ExportJob(id=export_id, state="queued", actor=actor[:255], selection=_fields(sel),
                              options={"formats": list(formats), "tz": tz}, created_at=utcnow(), records_done=0))
    log.info("export.queued export=%s by=%s", export_id, sel.as_dict()["by"])
    return export_id


def _fields(sel: export.Selection) -> dict[str, Any]:
    return {k: getattr(sel, k) for k in ("query", "hold", "contact", "after", "before") if getattr(sel, k) is not None}


def get(services: Services, export_id: str) -> ExportJob:
    """The job ``export_id``. Raises NoSuchExport."""
    with services.sessions() as session:
        row = session.get(ExportJob, export_id)
        if row is None:
            raise NoSuchExport(f"no export {export_id}")
        session.expunge(row)
        return row


def describe(row: ExportJob) -> dict[str, Any]:
    """What ``GET /api/v1/exports/<id>`` answers."""
    sel = export.Selection(**row.selection)
    out: dict[str, Any] = {
        "id": row.id, "state": row.state, "selection": sel.as_dict(), "exported_by": row.actor,
        "created_at": _iso(row.created_at), "started_at": _iso(row.started_at), "ended_at": _iso(row.ended_at),
        "progress": {"records_done": row.records_done, "records_total": row.records_total,
                     "pages": row.pages_done, "pages_total": row.pages_total},
        "error": row.error, "counts": row.counts, "manifest_sha256": row.manifest_sha256, "download": None,
    }
    if row.state == "done":
        out["download"] = f"/api/v1/exports/{row.id}/bundle.zip"
    return out


def run(services: Services, export_id: str) -> str | None:
    """Run queued job ``export_id`` if this runner claims it; its final state (None: not claimed)."""
    with leader_lock(services.engine, f"export-{export_id}") as mine:
        if not mine:
            return None
        with services.sessions.begin() as session:
            claimed = _count(session.execute(update(ExportJob).where(ExportJob.id == export_id,
                                                                     ExportJob.state == "queued")
                                             .values(state="running", started_at=utcnow(), owner=owner())))
            row = session.get(ExportJob, export_id)
            if not claimed or row is None:
                return None
            sel, actor, options = export.Selection(**row.selection), row.actor, dict(row.options or {})
        return _write(services, export_id, sel, actor, options)


def _write(services: Services, export_id: str, sel: export.Selection, actor: str, options: dict[str, Any]) -> str:
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < PROGRESS_WRITE_EVERY:
            return
        last[0] = now
        with services.sessions.begin() as session:
            session.execute(update(ExportJob).where(ExportJob.id == export_id)
                            .values(records_done=done, records_total=total))

    def pages(done: int, total: int | None) -> None:
        now = time.monotonic()
        if total is None and done and now - last[0] < PROGRESS_WRITE_EVERY:
            return
        last[0] = now
        with services.sessions.begin() as session:
            session.execute(update(ExportJob).where(ExportJob.id == export_id)
                            .values(pages_done=done, pages_total=total))

    try:
        done = export.write_bundle(services, sel, folder_of(services.settings.home, export_id), actor,
                                   progress=progress, export_id=export_id, pages=pages,
                                   formats=tuple(options.get("formats") or export.DEFAULT_FORMATS),
                                   tz=options.get("tz"))
    except Exception as exc:  # noqa: BLE001 - a failed export is the job's state, the runner goes on
        code = exc.code if isinstance(exc, ArchiverError) else exc.__class__.__name__
        log.warning("export.failed export=%s error=%s", export_id, code)
        with services.sessions.begin() as session:
            session.execute(update(ExportJob).where(ExportJob.id == export_id)
                            .values(state="failed", error=str(code)[:64], ended_at=utcnow()))
        return "failed"
    with services.sessions.begin() as session:
        session.execute(update(ExportJob).where(ExportJob.id == export_id).values(
            state="done", ended_at=utcnow(), counts=done.counts, manifest_sha256=done.manifest_sha256,
            records_done=done.counts["records"], records_total=done.counts["records"]))
    log.info("export.done export=%s records=%d", export_id, done.counts["records"])
    return "done"


def recover(services: Services) -> list[str]:
    """Mark ``failed`` (``interrupted``) every running job whose runner is gone; their ids."""
    with services.sessions() as session:
        running = list(session.scalars(select(ExportJob.id).where(ExportJob.state == "running")))
    lost = []
    for export_id in running:
        with leader_lock(services.engine, f"export-{export_id}") as free:
            if not free:
                continue  # its runner is alive
            with services.sessions.begin() as session:
                marked = _count(session.execute(update(ExportJob).where(ExportJob.id == export_id,
                                                                        ExportJob.state == "running")
                                                .values(state="failed", error=INTERRUPTED, ended_at=utcnow())))
        if marked:
            home = services.settings.home / "exports"
            for partial in home.glob(f".{export_id}.partial-*"):
                shutil.rmtree(partial, ignore_errors=True)
            log.warning("export.interrupted export=%s", export_id)
            lost.append(export_id)
    return lost


def run_pending(services: Services) -> dict[str, int]:
    """Recover interrupted jobs, then run every queued one (oldest first)."""
    lost = recover(services)
    with services.sessions() as session:
        queued = list(session.scalars(select(ExportJob.id).where(ExportJob.state == "queued")
                                      .order_by(ExportJob.created_at)))
    ran = sum(run(services, export_id) is not None for export_id in queued)
    return {"interrupted": len(lost), "ran": ran}


class _Runner:
    """This process's export thread: runs the ids handed to it, one at a time."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.todo: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="archiver-exports", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        try:
            run_pending(self.services)  # what a killed process left
        except Exception as exc:  # noqa: BLE001 - the thread must live on
            log.error("export.runner_failed error=%s", exc.__class__.__name__)
        while True:
            export_id = self.todo.get()
            try:
                run(self.services, export_id)
            except Exception as exc:  # noqa: BLE001 - the catalog failed around the run: the jobs process retries
                log.error("export.runner_failed export=%s error=%s", export_id, exc.__class__.__name__)


_RUNNERS: dict[int, _Runner] = {}
_RUNNERS_LOCK = threading.Lock()


def start(services: Services, export_id: str) -> None:
    """Hand ``export_id`` to this process's runner thread for ``services`` (started on first use)."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(id(services))
        if runner is None or runner.services is not services or not runner.thread.is_alive():
            runner = _RUNNERS[id(services)] = _Runner(services)
    runner.todo.put(export_id)


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None
