"""The journal: the only writer of new evidence.

Every accepted body (webhook, capture call), every audit event and every fetched-media
notice becomes one journal row, byte-exact, committed before the caller answers. The
sealer turns journal rows into sealed records later.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from archiver.catalog import (
    CatalogSessions, Journal, bind_processors, chunked, insert_sql, positional_marker, utcnow,
)
from archiver.canonical import canonical, sha256_hex
from archiver.errors import ArchiverError, JournalUnavailable

SOURCES = ("webhook", "capture_message", "consent", "audit", "media", "policy", "decision", "job_run", "finding",
           "template")
OWN_RECORDS = ("audit", "job_run", "finding", "template")  # template: a Graph API snapshot
"""Sources whose journal row is sealed as one record of that kind (typed by its meta's ``event``)."""


def append_delivery(session: Session, source: str, body: bytes, meta: dict[str, Any]) -> int:
    """Add a raw delivery to the journal (caller commits); return its journal id.

    ``meta`` holds what the request said about itself (signature header, remote address,
    content type, the authenticated token name) and never content.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown journal source {source!r}")
    row = Journal(source=source, body=body, body_sha256=sha256_hex(body), meta=meta)
    session.add(row)
    session.flush()
    return row.id


def append_audit(session: Session, event: str, actor: str | None, **details: Any) -> int:
    """Journal an audit event (who did what); it is sealed in the chain like a message."""
    body = {"event": event, "actor": actor, "at": datetime.now(timezone.utc).isoformat(), **details}
    return append_delivery(session, "audit", canonical(body), {"event": event})


def append_job_run(session: Session, job: str, report: dict[str, Any]) -> int:
    """Journal one run of a scheduled job (``archiver.jobs``); it is sealed as a ``job_run`` record.

    ``report`` says when, how it ended and its summary: counts and ids, never content.
    """
    return append_delivery(session, "job_run", canonical({"job": job, **report}), {"event": job})


def append_findings(session: Session, found: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """Journal reviews' findings, each ``(kind, body)`` sealed as a ``finding`` record of type
    ``kind`` (``consent``, ``template``, ``capture``: see ``archiver.findings``), in one flush;
    their journal ids in order."""
    rows = []
    for kind, body in found:
        raw = canonical(body)
        rows.append(Journal(source="finding", body=raw, body_sha256=sha256_hex(raw), meta={"event": kind}))
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def append_media(session: Session, notice: dict[str, Any]) -> int:
    """Journal a stored attachment so the sealer links it to its message in the chain."""
    return append_delivery(session, "media", canonical(notice), {})


def mark_sealed(conn: Connection, delivery_seqs: dict[int, int], chunk: int = 400) -> None:
    """Mark journal rows sealed with their delivery seq and drop their bodies (now in the outbox).

    One ``UPDATE ... CASE`` per chunk rather than one statement per row (see
    ``catalog.insert_rows`` for why the number of statements matters).
    """
    marker = positional_marker(conn.dialect)
    ids = list(delivery_seqs)
    if marker is None:
        jt = Journal.__table__
        conn.execute(update(jt).where(jt.c.id == bindparam("jid")).values(sealed=True, body=None,
                                                                          delivery_seq=bindparam("dseq")),
                     [{"jid": i, "dseq": s} for i, s in delivery_seqs.items()])
        return
    if conn.dialect.name == "sqlite":
        _rewrite_sealed(conn, delivery_seqs, ids, chunk)
        return
    for part in chunked(ids, chunk):
        cases = " ".join([f"WHEN {marker} THEN {marker}"] * len(part))
        params = [v for jid in part for v in (jid, delivery_seqs[jid])] + part
        conn.exec_driver_sql(
            f"UPDATE journal SET sealed = {marker}, body = NULL, delivery_seq = CASE id {cases} END "  # noqa: S608 - placeholders only
            f"WHERE id IN ({', '.join([marker] * len(part))})", tuple([True] + params))


#: The journal columns a sealed row keeps as they were (the body is dropped, sealed and delivery_seq set).
_KEPT = ("id", "source", "received_at", "body_sha256", "meta")


def _rewrite_sealed(conn: Connection, delivery_seqs: dict[int, int], ids: list[int], chunk: int) -> None:
    """SQLite: delete the sealed rows and insert them again without their bodies, same ids.

    An UPDATE that only shrinks a row leaves its b-tree page as sparse as it was (SQLite
    rebalances pages on delete, not on a shrinking update): on the realistic corpus the journal
    kept ~75% of its pages empty after sealing. Delete + insert lets the pages merge and go to
    the free list, which new journal rows reuse and ``catalog.truncate_wal`` hands back to the
    file system (``PRAGMA incremental_vacuum``, catalogs created with auto_vacuum=INCREMENTAL).
    One transaction with the rest of the batch: a crash leaves the rows as they were.
    """
    cols = ", ".join(_KEPT)
    for part in chunked(ids, chunk):
        marks = ", ".join("?" * len(part))
        rows = conn.exec_driver_sql(f"SELECT {cols} FROM journal WHERE id IN ({marks})",  # noqa: S608 - placeholders only
                                    tuple(part)).all()
        conn.exec_driver_sql(f"DELETE FROM journal WHERE id IN ({marks})", tuple(part))  # noqa: S608 - placeholders only
        conn.exec_driver_sql(f"INSERT INTO journal ({cols}, body, sealed, delivery_seq) "  # noqa: S608 - column names are constants
                             "VALUES (?, ?, ?, ?, ?, NULL, 1, ?)", [(*row, delivery_seqs[row[0]]) for row in rows])


def _let_ready_requests_queue() -> None:
    """Before a group commit: let requests that are ready to append queue their rows.

    Under gevent (``serve``'s workers), wait until the event loop has run every greenlet
    whose socket became readable meanwhile (``sleep(0)`` would only run those already
    scheduled), but no longer than ``GATHER_SECONDS``: under a flood of new connections
    the loop may not fall idle for a while. With threads, give up the GIL once.
    """
    gevent = sys.modules.get("gevent")
    if gevent is not None and gevent.monkey.is_module_patched("threading"):
        with gevent.Timeout(GATHER_SECONDS, False):
            gevent.idle()
    else:
        time.sleep(0)


GATHER_SECONDS = 0.002


@dataclass
class _Pending:
    row: tuple[Any, ...]
    done: bool = False
    id: int | None = None
    error: BaseException | None = None
    lead: bool = False  # this request commits the queue (its own row included)
    woken: threading.Event = field(default_factory=threading.Event)


class JournalWriter:
    """Group commit for intake: requests arriving together share one transaction.

    ``append`` returns only after the row is committed (durable), exactly like a
    transaction of its own. One request at a time leads: it lets the requests that are
    ready queue their rows, commits the whole queue in one transaction (one fsync) and
    hands the lead to the first request that queued meanwhile. The others wait on their
    own event, never on a lock they would only take to learn they are done (with gevent's
    barging locks, that made every commit a batch of one). One writer per process.

    This is intake's hot path, so it talks to the pooled DBAPI connection directly with a
    statement built once; every value still goes through its column type's bind processor,
    exactly as SQLAlchemy would store it.
    """

    COLUMNS = ("source", "received_at", "body", "body_sha256", "meta", "sealed")

    def __init__(self, sessions: CatalogSessions) -> None:
        self._sessions = sessions
        self._engine = sessions.kw["bind"]
        self._queue: list[_Pending] = []
        self._lock = threading.Lock()  # guards _queue and _leading, held only briefly
        self._leading = False
        dialect = self._engine.dialect
        self._procs = bind_processors(dialect, Journal.__table__, self.COLUMNS)
        self._sqlite = dialect.name == "sqlite"
        self._sql = insert_sql(dialect, Journal.__table__, self.COLUMNS) + ("" if self._sqlite else " RETURNING id")

    def append(self, source: str, body: bytes, meta: dict[str, Any]) -> int:
        """Journal a raw delivery durably; return its journal id. Raises what the commit raised."""
        if source not in SOURCES:
            raise ValueError(f"unknown journal source {source!r}")
        values = (source, utcnow(), body, sha256_hex(body), meta, False)
        mine = _Pending(tuple(p(v) if p else v for p, v in zip(self._procs, values)))
        with self._lock:
            self._queue.append(mine)
            if not self._leading:
                self._leading = mine.lead = True
        if not mine.lead:
            mine.woken.wait()  # committed by the leader, or handed the lead
        if not mine.done:
            self._lead()
        if mine.error is not None:
            raise mine.error
        assert mine.id is not None
        return mine.id

    def _lead(self) -> None:
        """Commit the queue as one transaction, then wake its requests and hand on the lead."""
        _let_ready_requests_queue()
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        except BaseException:  # noqa: BLE001, S110 - each request of the batch raises its own error
            pass
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.lead = True
                else:
                    self._leading = False
            for p in batch:
                p.woken.set()
            if successor is not None:
                successor.woken.set()

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with self._sessions.gate.held():
                raw = self._engine.raw_connection()
                try:
                    cur = raw.cursor()
                    if self._sqlite:  # autocommit connection (see catalog): take the write lock now
                        cur.execute("BEGIN IMMEDIATE")
                    ids = []
                    for p in batch:
                        cur.execute(self._sql, p.row)
                        ids.append(cur.lastrowid if self._sqlite else cur.fetchone()[0])
                    raw.commit()
                except BaseException:
                    raw.rollback()
                    raise
                finally:
                    raw.close()  # back to the pool
        except BaseException as exc:  # every waiter learns its row was not journaled
            error: BaseException = exc
            if isinstance(exc, Exception) and not isinstance(exc, ArchiverError):
                # The DBAPI's own error (driver-specific): name the failure, not the values.
                error = JournalUnavailable(f"journal write failed ({exc.__class__.__name__})")
                error.__cause__ = exc
            for p in batch:
                p.error, p.done = error, True
            raise error from exc
        for p, jid in zip(batch, ids):
            p.id, p.done = jid, True
