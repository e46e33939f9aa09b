"""The template review, and the human reviews it checks against (issue 11 point 3).

A run (job ``template-review``, daily by default in ``policies/schedule.yaml``; ``archiver
review templates``) reads the template lifecycle (``archiver.templates.load``), then:

1. binds each new outbound template message (capture API ``outbound`` or ``echo`` records
   sealed since its cursor: incremental) to the snapshot in force when it was sent (name +
   language + time -> snapshot seq) in ``template_sends``, with the status and category at
   send time, and raises for it (subject: the wamid):

   * ``sent-not-approved``: the status at send time was known and not ``APPROVED``
     (PAUSED, DISABLED, REJECTED, PENDING_DELETION, FLAGGED...);
   * ``category-drift``: the category at send time was ``MARKETING`` while the business
     labelled the template ``UTILITY`` (the ``previous_category`` of Meta's first completed
     category change, else the first category stated);

   sends of templates with template events sealed since the last run are checked again
   (an event stamped before a send can be sealed after it was read);

2. for every template: ``components-changed`` (subject: the change's record) when its
   wording changed (a components webhook, or a snapshot whose components differ from the
   previous one) after its last sealed review; ``review-overdue`` (subject: the template
   and the due date) when ``policies/templates.yaml`` gives its category a cadence and the
   last review (or the archive's first sight of it) is older than that. A retired template
   is neither.

Findings are kind ``template``, keyed by rule and subject: a re-run finds nothing twice.

A review (``record_review``: decision ``approve`` or ``retire`` with a note) is journaled as a
``decision`` record (event ``template_reviewed``) and counts only once sealed (decision 11).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from archiver import consent_review, findings, policy_records, records, template_sync
from archiver.canonical import canonical
from archiver.catalog import (Journal, Record, TemplateReview, TemplateSend, cursor_value, leader_lock, set_cursor,
                              stored_through)
from archiver.errors import ArchiverError, NotFound, ValidationError
from archiver.journal import append_delivery
from archiver.services import Services
from archiver.templates import APPROVED, MARKETING, UTILITY, Book, load, sealed_reviews

log = logging.getLogger(__name__)

JOB = "template-review"
CRON = "0 3 * * *"
CURSOR = "template-review"  # the last record seq read for sends
EVENTS_CURSOR = "template-review-events"  # the last template event / snapshot seq re-checked
BATCH = 5000
DECISIONS = ("approve", "retire")
REVIEWED = "template_reviewed"
MAX_NOTE = 2000
WAIT_SECONDS = 30.0
ACTOR = "system:template-review"


class ReviewPending(ArchiverError):
    code = "decision-pending"
    http_status = 503
    hint = "the review is journaled: the background jobs seal it; do not repeat it"


@dataclass
class Run:
    records: int = 0
    sends: int = 0
    rechecked: int = 0
    found: list[str] = field(default_factory=list)
    through: int = 0

    def summary(self) -> dict[str, Any]:
        return {"records": self.records, "template_sends": self.sends, "rechecked": self.rechecked,
                "findings": len(self.found), "finding_ids": self.found, "through": self.through}


def review(services: Services, now: int | None = None) -> dict[str, Any]:
    """One run of the review; its summary. Single instance (``leader_lock``)."""
    moment = int(time.time()) if now is None else now
    run = Run()
    with leader_lock(services.engine, JOB) as leader:
        if not leader:
            return {"skipped": "running elsewhere"}
        policy_records.seal_versions(services, ACTOR)  # templates.yaml sealed before it is used
        template_sync.settle(services)
        _settle_reviews(services)
        book = load(services)
        with services.sessions() as session:
            read_before = cursor_value(session, CURSOR)  # sends read by earlier runs
        while _read_sends(services, book, run):
            pass
        _recheck(services, book, run, read_before)
        _templates(services, book, moment, run)
        findings.settle(services)
    log.info("review.templates records=%d sends=%d findings=%d", run.records, run.sends, len(run.found))
    return run.summary()


def _read_sends(services: Services, book: Book, run: Run) -> bool:
    """One batch of new records: bind and check their template sends. True when there may be more."""
    with services.sessions() as session:
        after = cursor_value(session, CURSOR)
        through = stored_through(session)
        rows = session.execute(
            select(Record.seq, Record.kind, Record.wamid, Record.occurred_at, Record.segment_id)
            .where(Record.seq > after, Record.seq <= through, Record.kind.in_(("outbound", "echo")),
                   Record.type == "template")
            .order_by(Record.seq).limit(BATCH)).all()
        plains = records.payloads(services, session, [(r.seq, r.segment_id) for r in rows]) if rows else {}
    upto = rows[-1].seq if len(rows) == BATCH else through
    new: list[TemplateSend] = []
    with services.sessions.begin() as session:
        if cursor_value(session, CURSOR) != after:
            return True
        wamids = sorted({r.wamid for r in rows if r.wamid is not None})
        known: set[str] = set()
        for start in range(0, len(wamids), 500):  # one query per 500 wamids, not one per send
            known.update(session.scalars(select(TemplateSend.wamid).where(
                TemplateSend.wamid.in_(wamids[start:start + 500]))))
        for r in rows:
            if r.wamid is None or r.occurred_at is None or r.wamid in known:
                continue
            template = consent_review._template_of(r.kind, consent_review._json(plains.get(r.seq)))
            if template is None:
                continue
            known.add(r.wamid)  # a capture and its echo in one batch name one wamid
            name, lang = template
            state = book.state_at(name, lang, r.occurred_at)
            snap = book.snapshot_at(name, lang, r.occurred_at)
            send = TemplateSend(wamid=r.wamid, record_seq=r.seq, name=name[:512], language=lang[:32] if lang else None,
                                sent_at=r.occurred_at,
                                snapshot_seq=snap.seq if snap is not None else None, status=state.status,
                                category=state.category, evidence=sorted(set(state.evidence.values())))
            session.add(send)
            new.append(send)
        session.flush()
        session.expunge_all()
        if upto > after:
            set_cursor(session, CURSOR, upto)
    run.records += len(rows)
    run.sends += len(new)
    run.through = max(run.through, upto)
    _check(services, book, new, run)
    return len(rows) == BATCH


def _recheck(services: Services, book: Book, run: Run, read_before: int) -> None:
    """Check again the sends earlier runs read, of templates with events or snapshots sealed since."""
    with services.sessions() as session:
        after = cursor_value(session, EVENTS_CURSOR)
    changed = {name: min(e.at for e in evs if e.seq > after) for (name, _), evs in book.events.items()
               if any(e.seq > after for e in evs)}
    top = max((e.seq for evs in book.events.values() for e in evs), default=after)
    if changed:
        with services.sessions.begin() as session:
            sends = list(session.scalars(select(TemplateSend).where(TemplateSend.name.in_(sorted(changed)),
                                                                    TemplateSend.record_seq <= read_before)))
            sends = [s for s in sends if s.sent_at >= changed[s.name]]
            for s in sends:  # the state at send time, as the archive now knows it
                state = book.state_at(s.name, s.language, s.sent_at)
                s.status, s.category = state.status, state.category
                s.evidence = sorted(set(s.evidence) | set(state.evidence.values()))
            session.flush()
            session.expunge_all()
        run.rechecked += len(sends)
        _check(services, book, sends, run)
    if top > after:
        with services.sessions.begin() as session:
            set_cursor(session, EVENTS_CURSOR, top)


def _check(services: Services, book: Book, sends: list[TemplateSend], run: Run) -> None:
    with services.sessions.begin() as session:
        batch = findings.Batch(session)
        for s in sends:
            base = {"wamid": s.wamid, "template": s.name, "language": s.language, "sent_at": s.sent_at,
                    "status": s.status, "category": s.category, "snapshot_seq": s.snapshot_seq}
            evidence = [s.record_seq, *s.evidence] + ([s.snapshot_seq] if s.snapshot_seq else [])
            if s.status is not None and s.status != APPROVED:
                _raise(batch, "sent-not-approved", s.wamid, s.record_seq, evidence, base)
            labelled, label_seq = book.labelled(s.name, s.language)
            if s.category == MARKETING and labelled == UTILITY:
                _raise(batch, "category-drift", s.wamid, s.record_seq,
                       evidence + ([label_seq] if label_seq else []), {**base, "labelled": labelled})
        run.found.extend(row.id for row in batch.flush())


def _raise(batch: findings.Batch, rule: str, subject: str, record_seq: int | None, evidence: list[int],
           detail: dict[str, Any]) -> None:
    batch.add("template", rule, subject, record_seq=record_seq, evidence=evidence, detail=detail)


def _templates(services: Services, book: Book, now: int, run: Run) -> None:
    """components-changed and review-overdue, for every template."""
    with services.sessions.begin() as session:
        batch = findings.Batch(session)
        policy = policy_records.templates_in_force(session)
        by_name: dict[str, list[TemplateReview]] = {}
        for r in sealed_reviews(session):
            by_name.setdefault(r.name, []).append(r)
        for name in book.names():
            reviews = by_name.get(name, [])
            last = reviews[-1] if reviews else None
            if last is not None and last.decision == "retire":
                continue
            if last is not None:
                for lang in book.languages(name):
                    previous: str | None = None
                    for e in book.events[(name, lang)]:
                        changed = e.components is not None and (e.source != "sync" or previous is not None
                                                                 and e.components != previous)
                        if e.components is not None and e.source == "sync":
                            previous = e.components
                        if changed and e.at > last.reviewed_at:
                            _raise(batch, "components-changed", f"{name}\x00{lang}\x00{e.seq}", None,
                                   [e.seq, last.seq or 0], {"template": name, "language": lang, "changed_at": e.at,
                                                            "last_review_seq": last.seq, "last_review_at": last.reviewed_at})
            if policy is None:
                continue
            category = next((c for c in (book.state_at(name, lang, now).category for lang in book.languages(name)) if c),
                            None)
            days = policy.cadence_days(category)
            since = last.reviewed_at if last is not None else book.first_seen(name)
            if days is None or since is None:
                continue
            due = since + days * 86400
            if due < now:
                due_day = datetime.fromtimestamp(due, timezone.utc).date().isoformat()
                evidence = [last.seq] if last is not None and last.seq else []
                _raise(batch, "review-overdue", f"{name}\x00{due_day}", None, evidence,
                       {"template": name, "category": category, "cadence_days": days, "due": due_day,
                        "last_review_seq": last.seq if last is not None else None})
        run.found.extend(row.id for row in batch.flush())


def record_review(services: Services, actor: str, name: str, decision: Any, note: Any,
                  now: int | None = None) -> dict[str, Any]:
    """Record a person's review of template ``name``: sealed first, then it counts.

    Raises ValidationError, NotFound, ReviewPending."""
    if decision not in DECISIONS:
        raise ValidationError("decision", f"must be one of {', '.join(DECISIONS)}")
    if not isinstance(note, str) or not note.strip() or len(note) > MAX_NOTE:
        raise ValidationError("note", f"must be a non-empty string of at most {MAX_NOTE} characters")
    book = load(services)
    if name not in book.names():
        raise NotFound(f"no template {name!r}", hint="'archiver templates list' lists the templates the archive knows")
    moment = int(time.time()) if now is None else now
    body = {"event": REVIEWED, "template": name, "decision": decision, "note": note.strip(), "actor": actor,
            "at": datetime.fromtimestamp(moment, timezone.utc).isoformat(), "reviewed_at": moment}
    with services.sessions.begin() as session:
        jid = append_delivery(session, "decision", canonical(body), {"event": REVIEWED})
        row = TemplateReview(name=name, decision=decision, note=body["note"], actor=actor, reviewed_at=moment,
                             journal_id=jid)
        session.add(row)
        session.flush()
        rid = row.id
    from archiver import sealer

    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        sealer.seal_pending(services, pipelined=False)
        _settle_reviews(services)
        with services.sessions() as session:
            found = session.get(TemplateReview, rid)
            assert found is not None
            if found.seq is not None:
                return {"id": found.id, "template": name, "decision": decision, "note": found.note, "by": actor,
                        "at": moment, "seq": found.seq}
        if time.monotonic() > deadline:
            raise ReviewPending(f"the review of {name!r} is journaled but not sealed yet")
        time.sleep(0.2)


def _settle_reviews(services: Services) -> None:
    with services.sessions.begin() as session:
        for row, seq in session.execute(select(TemplateReview, Journal.delivery_seq).join(
                Journal, Journal.id == TemplateReview.journal_id).where(
                TemplateReview.seq.is_(None), Journal.sealed.is_(True))).all():
            row.seq = seq
