"""The journal: the only writer of new evidence.

Every accepted body (webhook, capture call), every audit event and every fetched-media
notice becomes one journal row, byte-exact, committed before the caller answers. The
sealer turns journal rows into sealed records later.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from archiver.catalog import CatalogSessions, Journal, utcnow

SOURCES = ("webhook", "capture_message", "consent", "audit", "media")


def append_delivery(session: Session, source: str, body: bytes, meta: dict[str, Any]) -> int:
    """Add a raw delivery to the journal (caller commits); return its journal id.

    ``meta`` holds what the request said about itself (signature header, remote address,
    content type, the authenticated token name) and never content.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown journal source {source!r}")
    row = Journal(source=source, body=body, body_sha256=hashlib.sha256(body).hexdigest(), meta=meta)
    session.add(row)
    session.flush()
    return row.id


def append_audit(session: Session, event: str, actor: str | None, **details: Any) -> int:
    """Journal an audit event (who did what); it is sealed in the chain like a message."""
    body = {"event": event, "actor": actor, "at": datetime.now(timezone.utc).isoformat(), **details}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return append_delivery(session, "audit", raw, {"event": event})


def append_media(session: Session, notice: dict[str, Any]) -> int:
    """Journal a stored attachment so the sealer links it to its message in the chain."""
    raw = json.dumps(notice, sort_keys=True, separators=(",", ":")).encode()
    return append_delivery(session, "media", raw, {})


@dataclass
class _Pending:
    row: dict[str, Any]
    done: bool = False
    id: int | None = None
    error: BaseException | None = None


class JournalWriter:
    """Group commit for intake: requests arriving together share one transaction.

    ``append`` returns only after the row is committed (durable), exactly like a
    transaction of its own; but while one thread commits, the rows queued behind it are
    committed together by the next thread to get the lock, so a burst costs one fsync
    instead of one per request. One writer per process (threads share it).
    """

    def __init__(self, sessions: CatalogSessions) -> None:
        self._sessions = sessions
        self._engine = sessions.kw["bind"]
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._stmt = insert(Journal)

    def append(self, source: str, body: bytes, meta: dict[str, Any]) -> int:
        """Journal a raw delivery durably; return its journal id. Raises what the commit raised."""
        if source not in SOURCES:
            raise ValueError(f"unknown journal source {source!r}")
        mine = _Pending({"source": source, "body": body, "body_sha256": hashlib.sha256(body).hexdigest(),
                         "meta": meta, "received_at": utcnow(), "sealed": False})
        with self._queue_lock:
            self._queue.append(mine)
        with self._commit_lock:
            if not mine.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if mine.error is not None:
            raise mine.error
        assert mine.id is not None
        return mine.id

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            # Core rather than an ORM session: intake's hot path, a few hundred us cheaper.
            with self._sessions.gate.held(), self._engine.connect() as conn:
                conn = conn.execution_options(catalog_write=True)
                with conn.begin():
                    ids = [conn.execute(self._stmt, p.row).inserted_primary_key[0] for p in batch]
        except BaseException as exc:  # every waiter learns its row was not journaled
            for p in batch:
                p.error, p.done = exc, True
            raise
        for p, jid in zip(batch, ids):
            p.id, p.done = jid, True
