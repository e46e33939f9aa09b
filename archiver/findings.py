"""Review findings (kinds ``consent``, ``template``, ``capture``): sealed, listed, resolved with a note.

A review calls :func:`raise_finding` (or adds many to a :class:`Batch`) inside its own transaction: the finding is journaled as a
``finding`` record (typed by its kind: id, rule, the record at fault, the evidence seqs, what
the review saw; never message content) and noted in ``findings`` in the same transaction;
the sealer seals it. ``key`` (SHA-256 of kind, rule and subject: e.g. the wamid of the send
at fault) is unique, so a re-run, or two processes, never raise the same finding twice.

Resolving (:func:`resolve`, decision 11): a ``decision`` record (event ``finding_resolved``:
the finding, who, when, the note) is journaled and sealed; only then does the finding show
``resolved`` (:func:`settle` applies every sealed resolution not applied yet, so a crash
between the two is finished by the next call).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archiver.canonical import canonical, sha256_hex
from archiver.catalog import Finding, Journal, chunked, utcnow
from archiver.errors import ArchiverError, NotFound, ValidationError
from archiver.journal import append_delivery, append_findings
from archiver.services import Services

log = logging.getLogger(__name__)

KINDS = ("consent", "template", "capture")
STATUSES = ("open", "resolved")
RESOLVED = "finding_resolved"
WAIT_SECONDS = 30.0
MAX_NOTE = 2000


class FindingResolved(ArchiverError):
    code = "already-resolved"
    http_status = 409


class ResolutionPending(ArchiverError):
    code = "decision-pending"
    http_status = 503
    hint = "the resolution is journaled: the background jobs seal it; do not repeat it"


def finding_key(kind: str, rule: str, subject: str) -> str:
    return sha256_hex(f"{kind}\x00{rule}\x00{subject}".encode())


def raise_finding(session: Session, kind: str, rule: str, subject: str, *, record_seq: int | None,
                  evidence: list[int], contact: str | None = None, detail: dict[str, Any] | None = None,
                  ) -> Finding | None:
    """Journal and note a finding (caller commits); None if this one was raised before."""
    batch = Batch(session)
    batch.add(kind, rule, subject, record_seq=record_seq, evidence=evidence, contact=contact, detail=detail)
    rows = batch.flush()
    return rows[0] if rows else None


class Batch:
    """Findings raised together: :meth:`flush` asks the catalog for the keys raised before in
    one query and writes the new journal rows and findings in two flushes, not three
    statements per finding (a review over a whole archive raises thousands)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.wanted: dict[str, dict[str, Any]] = {}  # key -> the finding's fields; the first one raised wins

    def add(self, kind: str, rule: str, subject: str, *, record_seq: int | None, evidence: list[int],
            contact: str | None = None, detail: dict[str, Any] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown finding kind {kind!r}")
        self.wanted.setdefault(finding_key(kind, rule, subject), {
            "kind": kind, "rule": rule, "subject": subject, "record_seq": record_seq,
            "evidence": sorted(set(evidence)), "contact": contact, "detail": detail or {}})

    def flush(self) -> list[Finding]:
        """Journal and note the findings not raised before (caller commits); return them in the order added."""
        keys = list(self.wanted)
        known: set[str] = set()
        for part in chunked(keys, 500):
            known.update(self.session.scalars(select(Finding.key).where(Finding.key.in_(part))))
        now = utcnow()
        new = [(key, {"id": "find-" + key[:16], **self.wanted[key], "found_at": now.isoformat()})
               for key in keys if key not in known]
        self.wanted = {}
        jids = append_findings(self.session, [(body["kind"], body) for _, body in new])
        rows = [Finding(id=body["id"], key=key, kind=body["kind"], rule=body["rule"], record_seq=body["record_seq"],
                        evidence=body["evidence"], contact=body["contact"], detail=body["detail"], journal_id=jid,
                        created_at=now, status="open") for (key, body), jid in zip(new, jids)]
        self.session.add_all(rows)
        self.session.flush()
        for row in rows:
            log.info("finding.raised id=%s kind=%s rule=%s journal=%d", row.id, row.kind, row.rule, row.journal_id)
        return rows


def as_dict(row: Finding, seq: int | None = None) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "rule": row.rule, "record_seq": row.record_seq,
            "evidence": row.evidence, "status": "resolved" if row.status == "resolved" else "open",
            "seq": row.seq or seq, "contact": row.contact, "detail": row.detail,
            "found_at": row.created_at.isoformat(),
            "resolution": None if row.status != "resolved" else {
                "by": row.resolved_by, "at": row.resolved_at.isoformat() if row.resolved_at else None,
                "note": row.note, "seq": row.resolution_seq},
            "resolution_pending": row.status == "resolving"}


def list_findings(services: Services, kind: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Findings, oldest first, filtered by kind and status. Raises ValidationError."""
    if kind is not None and kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}")
    if status is not None and status not in STATUSES:
        raise ValidationError("status", f"must be one of {', '.join(STATUSES)}")
    settle(services)
    with services.sessions() as session:
        q = select(Finding, Journal.delivery_seq).join(Journal, Journal.id == Finding.journal_id)
        if kind is not None:
            q = q.where(Finding.kind == kind)
        if status == "resolved":
            q = q.where(Finding.status == "resolved")
        elif status == "open":
            q = q.where(Finding.status != "resolved")
        return [as_dict(row, seq) for row, seq in session.execute(q.order_by(Finding.created_at, Finding.id))]


def open_count(session: Session, kind: str | None = None) -> int:
    q = select(func.count()).select_from(Finding).where(Finding.status != "resolved")
    if kind is not None:
        q = q.where(Finding.kind == kind)
    return int(session.scalar(q) or 0)


def resolve(services: Services, actor: str, finding_id: str, note: Any) -> dict[str, Any]:
    """Resolve a finding with a note: sealed first, then shown resolved.

    Raises ValidationError, NotFound, FindingResolved, ResolutionPending.
    """
    if not isinstance(note, str) or not note.strip() or len(note) > MAX_NOTE:
        raise ValidationError("note", f"must be a non-empty string of at most {MAX_NOTE} characters")
    with services.sessions.begin() as session:
        row = session.get(Finding, finding_id)
        if row is None:
            raise NotFound(f"no finding {finding_id}", hint="'archiver findings list' lists them")
        if row.status != "open":
            raise FindingResolved(f"finding {finding_id} is {row.status} already")
        body = {"event": RESOLVED, "finding": finding_id, "kind": row.kind, "rule": row.rule,
                "note": note.strip(), "actor": actor, "at": datetime.now(timezone.utc).isoformat()}
        row.resolution_journal_id = append_delivery(session, "decision", canonical(body), {"event": RESOLVED})
        row.status = "resolving"
        row.note, row.resolved_by = body["note"], actor
        row.resolved_at = datetime.fromisoformat(body["at"])
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        _seal(services)
        settle(services)
        with services.sessions() as session:
            row = session.get(Finding, finding_id)
            assert row is not None
            if row.status == "resolved":
                return as_dict(row)
        if time.monotonic() > deadline:
            raise ResolutionPending(f"the resolution of {finding_id} is journaled but not sealed yet")
        time.sleep(0.2)


def settle(services: Services) -> int:
    """Mark resolved every finding whose resolution is sealed (and note the findings' own seqs)."""
    with services.sessions.begin() as session:
        rows = session.execute(select(Finding, Journal.delivery_seq).join(
            Journal, Journal.id == Finding.resolution_journal_id).where(
            Finding.status == "resolving", Journal.sealed.is_(True))).all()
        for row, seq in rows:
            row.status, row.resolution_seq = "resolved", seq
        unseqd = session.execute(select(Finding, Journal.delivery_seq).join(
            Journal, Journal.id == Finding.journal_id).where(
            Finding.seq.is_(None), Journal.sealed.is_(True)).limit(1000)).all()
        for row, seq in unseqd:
            row.seq = seq
    return len(rows)


def _seal(services: Services) -> None:
    from archiver import sealer

    sealer.seal_pending(services, pipelined=False)
