"""Matters and litigation holds: decisions sealed first, then applied (derived state).

Every decision is journaled as an ``audit`` record and sealed in the chain before it acts
(architecture decisions 7, 11-13):

- ``matter_created`` (matter, name), ``hold_created`` (hold, matter, name, criteria, reason),
- ``hold_edited`` (hold, reason, the criteria before and after, whether the edit narrows it),
- ``hold_applied`` (hold, the seq window evaluated, the seqs newly held as ranges, counts, and
  after a narrowing edit the seqs ``released`` as ranges),
- ``hold_released`` (hold, reason, the counts at release).

Each names its ``actor`` and ``at`` (see ``journal.append_audit``). The catalog tables
(``matters``, ``holds``, ``held_records``, ``hold_objects``, ``hold_history``) are derived:
:func:`replay` applies the sealed decisions after the ``holds`` cursor in seq order, so a
crash between seal and apply is finished by the next :func:`sync`, and :func:`rebuild`
makes the tables again from the chain alone. Applying a hold puts the S3 legal hold ON
every WORM object holding a held record (its segment, the segment's checkpoint, and the
media object of a held media record); releasing one turns it OFF on the objects no other
active hold still needs.

Evaluation follows the sealer (and, for a query hold, the search index) by seq, with a
cursor per hold: :func:`sync` runs at each decision and as the ``holds`` job, so records
sealed while a hold is active are held too. Evaluation is one pass for all holds: the
records sealed since the holds' cursors are read once (``hold_criteria.Scan``) and every
active hold selects from them; a hold far behind (a new or edited one, over the whole
archive) is evaluated alone, by index and the search backend (``hold_criteria.matching``,
which also says what a record must meet to be held). A sync that applied at least one decision
seals one ``job_run`` record (job ``holds``) saying what it applied; an idle one seals
nothing (see :func:`_seal_run`). When a pairing is learned (the ``identity`` cursor moves), every active custodian hold is
evaluated again on the records it already passed that name one of its custodians'
identifiers, so her records sealed before the pairing are held too.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from archiver import hold_criteria, identity, records
from archiver.catalog import (
    Cursor, Hold, HoldEvent, HeldRecord, HoldObject, Journal, Matter, Media, Record, Segment, chunked,
    cursor_value, insert_rows, leader_lock, set_cursor, stored_through,
)
from archiver.errors import ArchiverError, ValidationError
from archiver.hold_criteria import Criteria, Scan, matching, parse_criteria
from archiver.journal import append_audit, append_job_run
from archiver.services import Services

__all__ = ["Criteria", "matching", "parse_criteria"]  # (re-exported: callers name them holds.X)

log = logging.getLogger(__name__)

EVENTS = ("matter_created", "hold_created", "hold_edited", "hold_applied", "hold_released")
CURSOR = "holds"  # the last sealed decision applied to the catalog tables
IDENTITY_SEEN = "holds-identity"  # the identity cursor the holds were last re-checked at
WINDOW = 20000  # records read once and evaluated by every hold caught up with the sealer
SOLO_WINDOW = 250000  # records a hold far behind evaluates alone per step (and per hold_applied decision)
WAIT_SECONDS = 120.0


class NoSuchMatter(ArchiverError):
    code = "no-such-matter"
    http_status = 404


class NoSuchHold(ArchiverError):
    code = "no-such-hold"
    http_status = 404


class HoldReleased(ArchiverError):
    code = "hold-released"
    http_status = 409


class DecisionPending(ArchiverError):
    """The decision is journaled (and will be applied) but was not sealed in time."""

    code = "decision-pending"
    http_status = 503
    hint = ("the decision is journaled: the background jobs seal and apply it once the cause is gone "
            "(see 'archiver hold show'); do not repeat it")


# --------------------------------------------------------------------------- criteria


def _text(value: Any, field: str, limit: int) -> str:
    """A required text field, stripped. Raises ValidationError naming ``field``."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "is required")
    if len(value) > limit:
        raise ValidationError(field, f"must be at most {limit} characters")
    if "\x00" in value:  # no catalog column takes NUL (PostgreSQL refuses it)
        raise ValidationError(field, "must not contain NUL characters")
    return value.strip()


_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def _id(value: Any, field: str) -> str:
    """A matter or hold id as this module makes them. Raises ValidationError."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValidationError(field, "must be an id as 'archiver matter create' / 'hold create' print them")
    return value


# --------------------------------------------------------------------------- decisions


def create_matter(services: Services, actor: str, name: Any) -> str:
    """Seal a ``matter_created`` decision, apply it; return the matter's id. Raises ValidationError."""
    matter = "matter-" + secrets.token_hex(6)
    _decide(services, "matter_created", actor, matter=matter, name=_text(name, "name", 255))
    return matter


def create_hold(services: Services, actor: str, matter: Any, name: Any, criteria: Criteria, reason: Any) -> str:
    """Seal a ``hold_created`` decision, apply it and evaluate the hold once; return its id.

    Raises ValidationError, NoSuchMatter, DecisionPending.
    """
    matter_id = _id(matter, "matter")
    hold_name, why = _text(name, "name", 255), _text(reason, "reason", 2000)
    with services.sessions() as session:
        if session.get(Matter, matter_id) is None:
            raise NoSuchMatter(f"no matter {matter_id}", hint="create it with 'archiver matter create NAME'")
    hold = "hold-" + secrets.token_hex(6)
    _decide(services, "hold_created", actor, hold=hold, matter=matter_id, name=hold_name,
            criteria=criteria.as_dict(), reason=why)
    return hold


def release_hold(services: Services, actor: str, hold_id: str, reason: Any) -> None:
    """Seal a ``hold_released`` decision, then turn legal holds off where no other hold needs them.

    Raises ValidationError, NoSuchHold, HoldReleased, DecisionPending.
    """
    why = _text(reason, "reason", 2000)
    with services.sessions() as session:
        hold = _get(session, hold_id)
        if hold.status != "active":
            raise HoldReleased(f"hold {hold_id} was released already")
        counts = hold_counts(session, hold_id)
    _decide(services, "hold_released", actor, hold=hold_id, reason=why, counts=counts)


def edit_hold(services: Services, actor: str, hold_id: str, reason: Any, **changes: Any) -> dict[str, Any]:
    """Seal a ``hold_edited`` decision (the criteria before and after, who, why), then apply it.

    ``changes`` as :func:`hold_criteria.edited` takes them (``add_custodians``,
    ``remove_custodians``, ``after``, ``before``, ``query``; ``""`` clears). Applying sets the
    new criteria and evaluates the hold again from seq 1: records the new criteria add are
    held (``hold_applied``), and when the edit narrows the hold, held records they no longer
    select are released, the S3 legal hold going OFF only on objects no other active hold
    needs. Returns the hold's view. Raises ValidationError, QuerySyntaxError, NoSuchHold,
    HoldReleased, DecisionPending.
    """
    why = _text(reason, "reason", 2000)
    with services.sessions() as session:
        hold = _get(session, hold_id)
        if hold.status != "active":
            raise HoldReleased(f"hold {hold_id} was released: it cannot be edited")
        before = Criteria.from_dict(hold.criteria)
        counts = hold_counts(session, hold_id)
    after = hold_criteria.edited(before, **changes)
    _decide(services, "hold_edited", actor, hold=hold_id, reason=why, before=before.as_dict(),
            criteria=after.as_dict(), narrows=hold_criteria.narrows(before, after), counts=counts)
    return show(services, hold_id)


def _decide(services: Services, event: str, actor: str, **details: Any) -> None:
    """Journal a decision, have it sealed, then apply it (and evaluate holds)."""
    with services.sessions.begin() as session:
        journal_id = append_audit(session, event, actor, **details)
    deadline = time.monotonic() + WAIT_SECONDS
    subject = details.get("hold") or details.get("matter")
    while True:
        try:
            sync(services)
        except ArchiverError as exc:  # reported; the decision stays journaled and the job applies it
            raise DecisionPending(f"{subject}: {event} is journaled (#{journal_id}) but not applied yet "
                                  f"({exc.code}: {exc})") from exc
        if _applied(services, journal_id):
            return
        if time.monotonic() > deadline:
            raise DecisionPending(f"{subject}: {event} is journaled (#{journal_id}) but not sealed yet")
        time.sleep(0.2)  # another process seals or syncs now; it applies the decision


def _applied(services: Services, journal_id: int) -> bool:
    with services.sessions() as session:
        seq = session.scalar(select(Journal.delivery_seq).where(Journal.id == journal_id, Journal.sealed.is_(True)))
        return seq is not None and cursor_value(session, CURSOR) >= seq


# --------------------------------------------------------------------------- sync (the job step)


def sync(services: Services) -> dict[str, int]:
    """Seal pending decisions, apply sealed ones, evaluate active holds on newly sealed records.

    Single instance (``leader_lock``); returns ``{}`` when another process syncs. Idempotent.
    Raises StoreError, SearchUnavailable (the next run retries).
    """
    with leader_lock(services.engine, "holds") as leader:
        if not leader:
            return {}
        with services.sessions() as session:  # a decision to seal, or one in the outbox to publish
            unsealed = _unsealed_decisions(session) or session.scalar(
                select(Segment.id).where(Segment.state == "writing").limit(1)) is not None
        if unsealed:
            _seal(services)
        started = datetime.now(timezone.utc)
        done = Applied()
        applied = replay(services, done)
        held = 0
        for _ in range(1000):  # evaluate in windows until every hold has caught up
            journaled, more = evaluate(services)
            if journaled:
                _seal(services)
                applied += replay(services, done)
            held += journaled
            if not more:
                break
        summary = {"decisions": applied, "evaluated": held}
        if applied:
            _seal_run(services, started, summary, done)
        return summary


@dataclass
class Applied:
    """What one sync applied: the seqs of the decisions by event, and the holds they named."""

    seqs: dict[str, list[int]] = field(default_factory=dict)
    holds: set[str] = field(default_factory=set)

    def add(self, seq: int, body: dict[str, Any]) -> None:
        self.seqs.setdefault(str(body.get("event")), []).append(seq)
        if isinstance(body.get("hold"), str):
            self.holds.add(body["hold"])


def _seal_run(services: Services, started: datetime, summary: dict[str, int], done: Applied) -> None:
    """Journal and seal one ``job_run`` record (job ``holds``) for a sync that applied decisions.

    The decisions themselves are sealed before they act; this record says what the run did
    with them: each applied decision's seq by event, the holds touched, and when. An idle
    sync seals nothing. ``job_run`` records are never held (``NOT_HELD``), so this record
    gives the next sync nothing to do.
    """
    report = {"trigger": "sync", "actor": None, "started_at": started.isoformat(),
              "ended_at": datetime.now(timezone.utc).isoformat(), "outcome": "ok", "error": None, "code": None,
              "summary": {**summary, "applied": {event: ranges(sorted(seqs)) for event, seqs in sorted(done.seqs.items())},
                          "holds": sorted(done.holds)}}
    with services.sessions.begin() as session:
        append_job_run(session, "holds", report)
    _seal(services)


def _seal(services: Services) -> None:
    from archiver import sealer

    sealer.seal_pending(services, pipelined=False)


def replay(services: Services, done: Applied | None = None) -> int:
    """Apply every sealed decision after the ``holds`` cursor, in seq order; return how many
    (and add each to ``done``).

    A decision is applied once its segment is in WORM (not while it waits in the outbox).
    """
    count = 0
    while True:
        with services.sessions() as session:
            after = cursor_value(session, CURSOR)
            rows = session.execute(
                select(Record.seq, Record.type, Record.segment_id).where(
                    Record.kind == "audit", Record.type.in_(EVENTS), Record.seq > after,
                    Record.seq <= _sealed_through(session))
                .order_by(Record.seq).limit(200)).all()
            if not rows:
                return count
            bodies = _bodies(services, session, [(r.seq, r.segment_id) for r in rows])
        for row in rows:
            body = bodies.get(row.seq)
            if body is None:  # its data key was destroyed: nothing left to apply
                with services.sessions.begin() as session:
                    set_cursor(session, CURSOR, row.seq)
                continue
            _apply(services, row.seq, body)
            count += 1
            if done is not None:
                done.add(row.seq, body)


def _bodies(services: Services, session: Session, wanted: list[tuple[int, int]]) -> dict[int, dict[str, Any] | None]:
    """The decrypted bodies of sealed decision records (None if unreadable)."""
    out: dict[int, dict[str, Any] | None] = {}
    cache: dict[str, bytes | None] = {}
    by_segment: dict[int, set[int]] = {}
    for seq, segment_id in wanted:
        by_segment.setdefault(segment_id, set()).add(seq)
    for segment_id, seqs in by_segment.items():
        seg = session.get(Segment, segment_id)
        assert seg is not None
        for rec in records.segment_records_at(services, seg, seqs):
            plain = records.decrypt(services, session, rec, cache)
            out[rec["seq"]] = json.loads(plain) if plain is not None else None
    return out


def _apply(services: Services, seq: int, body: dict[str, Any]) -> None:
    """Apply one sealed decision to the catalog (and the store's legal holds), then move the cursor."""
    event, actor = body["event"], body.get("actor")
    at = datetime.fromisoformat(body["at"])
    if event == "matter_created":
        with services.sessions.begin() as session:
            if session.get(Matter, body["matter"]) is None:
                session.add(Matter(id=body["matter"], name=body["name"], created_at=at, created_by=actor,
                                   decision_seq=seq))
            set_cursor(session, CURSOR, seq)
    elif event == "hold_created":
        with services.sessions.begin() as session:
            if session.get(Matter, body["matter"]) is not None and session.get(Hold, body["hold"]) is None:
                session.add(Hold(id=body["hold"], matter_id=body["matter"], name=body["name"],
                                 criteria=body["criteria"], reason=body["reason"], status="active", created_at=at,
                                 created_by=actor, decision_seq=seq, cursor=0))
                session.flush()
                _history(session, body["hold"], "created", at, actor, seq,
                         {"criteria": body["criteria"], "reason": body["reason"]})
            set_cursor(session, CURSOR, seq)
    elif event == "hold_edited":
        with services.sessions.begin() as session:
            row = session.get(Hold, body["hold"])
            if row is not None and row.status == "active":
                # Evaluated again from seq 1 with the new criteria; up to the old cursor, what they
                # no longer select is released (when the edit narrows the hold).
                if body.get("narrows"):
                    row.recheck_through = max(row.recheck_through, row.cursor)
                row.criteria, row.cursor = body["criteria"], 0
                _history(session, row.id, "edited", at, actor, seq,
                         {"before": body.get("before"), "criteria": body["criteria"], "reason": body.get("reason"),
                          "narrows": bool(body.get("narrows"))})
            set_cursor(session, CURSOR, seq)
    elif event == "hold_applied":
        _apply_held(services, seq, body, at, actor)
    elif event == "hold_released":
        _apply_release(services, seq, body, at, actor)
    else:  # not a hold decision (EVENTS filters): step over it
        with services.sessions.begin() as session:
            set_cursor(session, CURSOR, seq)


def _history(session: Session, hold: str, event: str, at: datetime, actor: str | None, seq: int,
             details: dict[str, Any]) -> None:
    session.add(HoldEvent(hold_id=hold, event=event, at=at, actor=actor, decision_seq=seq, details=details))


def _apply_held(services: Services, seq: int, body: dict[str, Any], at: datetime, actor: str | None) -> None:
    """Hold the decision's seqs: legal hold ON their objects first, then the catalog rows.

    Seqs it ``released`` (after a narrowing edit) leave the hold; the objects the hold then
    no longer needs get the legal hold OFF unless another active hold needs them, before the
    catalog rows go. A crash in between repeats the same store calls (idempotent).
    """
    hold_id = body["hold"]
    seqs = sorted(expand(body.get("seqs") or []))
    released = sorted(expand(body.get("released") or []))
    with services.sessions() as session:
        hold = session.get(Hold, hold_id)
        active = hold is not None and hold.status == "active"
        objects = _objects(session, seqs) if active else {}
        have = set(session.scalars(select(HoldObject.object_key).where(HoldObject.hold_id == hold_id))) if active else set()
        known = _already_held(session, hold_id, seqs) if active else set()
        new_objects = {key: kind for key, kind in objects.items() if key not in have}
        on_already = _needed_by_others(session, hold_id, list(new_objects))  # ON for another hold: nothing to do
        dropped: list[str] = []
        if active and released:
            gone = set(released)
            keep = [s for s in session.scalars(select(HeldRecord.seq).where(HeldRecord.hold_id == hold_id))
                    if s not in gone]
            needed = set(_objects(session, sorted(set(keep) | set(seqs))))
            dropped = sorted(have - needed)
            others = _needed_by_others(session, hold_id, dropped)
    for key in new_objects:  # each segment, then its checkpoint, in seq order; then media
        if key not in on_already:
            services.store.set_legal_hold(key, True)  # idempotent: a crash before the commit repeats it
    off = [key for key in dropped if key not in others] if dropped else []
    for key in off:
        services.store.set_legal_hold(key, False)
    with services.sessions.begin() as session:
        if active:
            conn = session.connection()
            insert_rows(conn, HeldRecord.__table__, [{"hold_id": hold_id, "seq": s} for s in seqs if s not in known])
            insert_rows(conn, HoldObject.__table__, [{"hold_id": hold_id, "object_key": k, "kind": v}
                                                     for k, v in sorted(new_objects.items())])
            for part in chunked(released, 500):
                session.execute(delete(HeldRecord).where(HeldRecord.hold_id == hold_id, HeldRecord.seq.in_(part)))
            for part in chunked(dropped, 500):
                session.execute(delete(HoldObject).where(HoldObject.hold_id == hold_id, HoldObject.object_key.in_(part)))
            row = session.get(Hold, hold_id)
            assert row is not None
            row.cursor = max(row.cursor, int(body["through"]))
            details: dict[str, Any] = {"after": body["after"], "through": body["through"], "records": len(seqs),
                                       "objects": len(new_objects)}
            if released:
                details.update(released=len(released), legal_holds_off=len(off), kept_for_other_holds=len(dropped) - len(off))
            _history(session, hold_id, "applied", at, actor, seq, details)
        set_cursor(session, CURSOR, seq)
    log.info("hold.applied hold=%s records=%d objects=%d released=%d off=%d", hold_id, len(seqs), len(new_objects),
             len(released), len(off))


def _needed_by_others(session: Session, hold_id: str, keys: list[str]) -> set[str]:
    """Which of ``keys`` another active hold has the legal hold ON for."""
    needed: set[str] = set()
    for part in chunked(sorted(keys), 500):
        needed.update(session.scalars(
            select(HoldObject.object_key).join(Hold, Hold.id == HoldObject.hold_id)
            .where(HoldObject.object_key.in_(part), HoldObject.hold_id != hold_id, Hold.status == "active")))
    return needed


def _apply_release(services: Services, seq: int, body: dict[str, Any], at: datetime, actor: str | None) -> None:
    """Release: legal hold OFF on the objects no other active hold needs, then the catalog rows."""
    hold_id = body["hold"]
    with services.sessions() as session:
        hold = session.get(Hold, hold_id)
        active = hold is not None and hold.status == "active"
        mine = list(session.scalars(select(HoldObject.object_key).where(HoldObject.hold_id == hold_id))) if active else []
        needed = _needed_by_others(session, hold_id, mine)
    off = [key for key in mine if key not in needed]
    for key in off:
        services.store.set_legal_hold(key, False)
    with services.sessions.begin() as session:
        row = session.get(Hold, hold_id)
        if active and row is not None:
            session.execute(delete(HeldRecord).where(HeldRecord.hold_id == hold_id))
            session.execute(delete(HoldObject).where(HoldObject.hold_id == hold_id))
            row.status, row.released_at, row.released_by = "released", at, actor
            row.release_reason, row.release_seq = body.get("reason"), seq
            _history(session, hold_id, "released", at, actor, seq,
                     {"reason": body.get("reason"), "counts": body.get("counts"), "legal_holds_off": len(off),
                      "kept_for_other_holds": len(mine) - len(off)})
        set_cursor(session, CURSOR, seq)
    log.info("hold.released hold=%s off=%d kept=%d", hold_id, len(off), len(mine) - len(off))


def _objects(session: Session, seqs: list[int]) -> dict[str, str]:
    """The WORM objects holding ``seqs``: segments, their checkpoints, media objects of media records.

    In seq order, each segment before its checkpoint, the media after.
    """
    out: dict[str, str] = {}
    media_keys: dict[str, str] = {}
    for part in chunked(seqs, 500):
        for key, checkpoint, _ in session.execute(
                select(Segment.key, Segment.checkpoint_key, Segment.first_seq).join(Record, Record.segment_id == Segment.id)
                .where(Record.seq.in_(part)).distinct().order_by(Segment.first_seq)):
            out[key], out[checkpoint] = "segment", "checkpoint"
        media = [links.get("message") for links in session.scalars(
            select(Record.links).where(Record.seq.in_(part), Record.kind == "media")) if links]
        for sub in chunked(sorted({m for m in media if isinstance(m, int)}), 500):
            for found in session.scalars(select(Media.object_key).where(Media.record_seq.in_(sub),
                                                                        Media.object_key.is_not(None))):
                if found:
                    media_keys[found] = "media"
    from archiver.worm_disposal import gone

    deleted = gone(session, sorted(out) + sorted(media_keys))  # disposition deleted them: nothing to hold
    return {k: v for k, v in {**out, **media_keys}.items() if k not in deleted}


# --------------------------------------------------------------------------- evaluation


def evaluate(services: Services) -> tuple[int, bool]:
    """Evaluate every active hold on the next window of sealed records after its cursor.

    The holds caught up with the sealer (at most ``WINDOW`` records behind) share one read
    of the records after the lowest of their cursors (``hold_criteria.Scan``); a hold
    further behind is evaluated alone over up to ``SOLO_WINDOW`` records, by index and the
    search backend. Journals (does not seal) one ``hold_applied`` per hold with new
    matches (or releases, after a narrowing edit), or for a hold never evaluated, and moves
    its cursor in the same transaction. Returns (decisions journaled, whether any hold has
    more to evaluate). Does nothing while a hold decision waits to be sealed or applied
    (the held sets it would read are not final yet).
    """
    with services.sessions() as session:
        if _decisions_waiting(session):
            return 0, False
        holds = list(session.scalars(select(Hold).where(Hold.status == "active").order_by(Hold.created_at)))
        ready = _sealed_through(session)
    if (rechecked := _recheck_identities(services, holds)) is not None:
        return rechecked, True
    index_seq: int | None = None
    due: list[tuple[Hold, Criteria, int]] = []  # (hold, criteria, evaluated through)
    for hold in holds:
        crit = Criteria.from_dict(hold.criteria)
        through = ready
        if crit.query:
            if index_seq is None:
                state = services.search.state()
                index_seq = state.seq if state is not None else 0
            through = min(through, index_seq)
        if through > hold.cursor:
            due.append((hold, crit, through))
    if not due:
        return 0, False
    together = [d for d in due if d[2] - d[0].cursor <= WINDOW]
    alone = [(h, c, min(t, h.cursor + SOLO_WINDOW)) for h, c, t in due if t - h.cursor > WINDOW]
    more = any(t < ready for _, _, t in alone)
    journaled = 0
    if together:
        lo, hi = min(h.cursor for h, _, _ in together), max(t for _, _, t in together)
        with services.sessions() as session:
            scan = Scan(session, lo, hi)
            for hold, crit, through in together:
                journaled += _evaluate_one(services, session, hold, crit, through, scan)
    for hold, crit, through in alone:
        with services.sessions() as session:
            journaled += _evaluate_one(services, session, hold, crit, through, None)
    return journaled, more


def _evaluate_one(services: Services, session: Session, hold: Hold, crit: Criteria, through: int,
                  scan: Scan | None) -> int:
    """Journal the hold's ``hold_applied`` for ``(cursor, through]`` (or just move its cursor); 1 if journaled."""
    after = hold.cursor
    recheck = min(through, hold.recheck_through) if hold.recheck_through > after else after

    def held_before(seqs: list[int]) -> set[int]:  # seqs in (after, recheck] are decided by this evaluation
        return _already_held(session, hold.id, [s for s in seqs if not after < s <= recheck])

    found = matching(services, session, crit, after, through, held_before, scan=scan)
    new = sorted(found - _already_held(session, hold.id, sorted(found)))
    released = sorted(_held_between(session, hold.id, after, recheck) - found) if recheck > after else []
    with services.sessions.begin() as writing:
        row = writing.get(Hold, hold.id)
        if row is None or row.status != "active" or row.cursor != hold.cursor:
            return 0  # changed meanwhile: the next run looks again
        if not new and not released and after > 0:
            row.cursor = max(row.cursor, through)
            return 0
        counts = {"new_records": len(new)}
        extra: dict[str, Any] = {}
        if released:  # only after a narrowing edit
            counts["released_records"] = len(released)
            extra["released"] = ranges(released)
        append_audit(writing, "hold_applied", "archiver:holds", hold=hold.id, after=after, through=through,
                     seqs=ranges(new), counts=counts, **extra)
        row.cursor = through
    return 1


def _held_between(session: Session, hold_id: str, after: int, through: int) -> set[int]:
    return set(session.scalars(select(HeldRecord.seq).where(HeldRecord.hold_id == hold_id, HeldRecord.seq > after,
                                                            HeldRecord.seq <= through)))


def _recheck_identities(services: Services, holds: list[Hold]) -> int | None:
    """A custodian's identity grew (a pairing learned): hold her records evaluated before.

    When contact identities changed since the last look (the ``identity`` cursor moved past
    ``holds-identity``), each active custodian hold is evaluated again on the records up to
    its cursor that name one of its custodians' identifiers, and journals a ``hold_applied``
    for what it did not hold yet. Returns the decisions journaled, or None when nothing
    changed (then marks the identities seen).
    """
    with services.sessions() as session:
        learned = cursor_value(session, identity.CURSOR)
        if learned <= cursor_value(session, IDENTITY_SEEN):
            return None
    journaled = 0
    for hold in holds:
        crit = Criteria.from_dict(hold.criteria)
        if not crit.custodians or hold.cursor <= 0:
            continue
        with services.sessions() as session:
            ids = identity.resolve_many(session, crit.custodians)
            contacts = sorted(ids | set(crit.custodians))
            found = matching(services, session, crit, 0, hold.cursor, functools.partial(_already_held, session, hold.id),
                             contacts=contacts)
            new = sorted(found - _already_held(session, hold.id, sorted(found)))
        if not new:
            continue
        with services.sessions.begin() as session:
            row = session.get(Hold, hold.id)
            if row is None or row.status != "active":
                continue
            append_audit(session, "hold_applied", "archiver:holds", hold=hold.id, after=0, through=hold.cursor,
                         seqs=ranges(new), counts={"new_records": len(new)}, reason="identity")
        journaled += 1
    if journaled:
        return journaled  # sealed and applied first; the next look finds nothing new and moves on
    with services.sessions.begin() as session:
        set_cursor(session, IDENTITY_SEEN, learned)
    return None


def _unsealed_decisions(session: Session) -> bool:
    """A hold decision journaled and not yet sealed."""
    return any((meta or {}).get("event") in EVENTS for meta in session.scalars(
        select(Journal.meta).where(Journal.sealed.is_(False), Journal.source == "audit")))


def _decisions_waiting(session: Session) -> bool:
    """A hold decision journaled and not yet sealed, or sealed and not yet applied."""
    if _unsealed_decisions(session):
        return True
    after = cursor_value(session, CURSOR)
    return session.scalar(select(Record.seq).where(Record.kind == "audit", Record.type.in_(EVENTS),
                                                   Record.seq > after).limit(1)) is not None


def _sealed_through(session: Session) -> int:
    """The last seq whose segment is in WORM (a legal hold needs the object there)."""
    return stored_through(session)


def _already_held(session: Session, hold_id: str, seqs: list[int]) -> set[int]:
    """Which of ``seqs`` the hold holds already."""
    found: set[int] = set()
    for part in chunked(seqs, 500):
        found.update(session.scalars(select(HeldRecord.seq).where(HeldRecord.hold_id == hold_id,
                                                                  HeldRecord.seq.in_(part))))
    return found


def ranges(seqs: list[int]) -> list[list[int]]:
    """Sorted seqs as ``[[first, last], ...]`` runs (how a decision lists them)."""
    out: list[list[int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def expand(runs: list[list[int]]) -> Iterator[int]:
    for first, last in runs:
        yield from range(int(first), int(last) + 1)


# --------------------------------------------------------------------------- reading


def _get(session: Session, hold_id: str) -> Hold:
    hold = session.get(Hold, hold_id) if isinstance(hold_id, str) and _ID.fullmatch(hold_id) else None
    if hold is None:
        raise NoSuchHold(f"no hold {hold_id}", hint="'archiver hold list' shows the holds")
    return hold


def hold_counts(session: Session, hold_id: str) -> dict[str, int]:
    """Records held now, their contacts, and the objects this hold has the legal hold ON."""
    records_held = session.scalar(select(func.count()).select_from(HeldRecord).where(HeldRecord.hold_id == hold_id))
    contacts = session.scalar(select(func.count(func.distinct(Record.contact)))
                              .select_from(HeldRecord).join(Record, Record.seq == HeldRecord.seq)
                              .where(HeldRecord.hold_id == hold_id, Record.contact.is_not(None)))
    kinds = dict(session.execute(select(HoldObject.kind, func.count()).where(HoldObject.hold_id == hold_id)
                                 .group_by(HoldObject.kind)).all())
    return {"records": records_held or 0, "contacts": contacts or 0, "segments": kinds.get("segment", 0),
            "checkpoints": kinds.get("checkpoint", 0), "media_objects": kinds.get("media", 0)}


def describe(session: Session, hold: Hold, *, history: bool = True) -> dict[str, Any]:
    """The JSON view of a hold: criteria, status, counts, history."""
    matter = session.get(Matter, hold.matter_id)
    out: dict[str, Any] = {
        "id": hold.id, "matter": {"id": hold.matter_id, "name": matter.name if matter else None},
        "name": hold.name, "status": hold.status, "criteria": hold.criteria, "reason": hold.reason,
        "created_at": hold.created_at.isoformat(), "created_by": hold.created_by, "decision_seq": hold.decision_seq,
        "evaluated_through": hold.cursor, "counts": hold_counts(session, hold.id),
        "released_at": hold.released_at.isoformat() if hold.released_at else None,
        "released_by": hold.released_by, "release_reason": hold.release_reason, "release_seq": hold.release_seq,
    }
    if history:
        out["history"] = [{"event": e.event, "at": e.at.isoformat(), "actor": e.actor, "seq": e.decision_seq,
                           "details": e.details} for e in session.scalars(
                               select(HoldEvent).where(HoldEvent.hold_id == hold.id).order_by(HoldEvent.id))]
    return out


def show(services: Services, hold_id: str) -> dict[str, Any]:
    """One hold. Raises NoSuchHold."""
    with services.sessions() as session:
        return describe(session, _get(session, hold_id))


def list_holds(services: Services) -> list[dict[str, Any]]:
    """Every hold, newest first, without history."""
    with services.sessions() as session:
        return [describe(session, h, history=False)
                for h in session.scalars(select(Hold).order_by(Hold.created_at.desc(), Hold.id))]


def held_seqs(session: Session) -> set[int]:
    """Every seq an active hold holds (what disposition and erasure must skip)."""
    return set(session.scalars(select(HeldRecord.seq).join(Hold, Hold.id == HeldRecord.hold_id)
                               .where(Hold.status == "active").distinct()))


def rebuild(services: Services) -> int:
    """Drop the derived tables and replay every sealed decision; return how many were applied.

    The store's legal holds are set again as the decisions say (idempotent); a hold released
    since is released again, turning off what no active hold needs.
    """
    with services.sessions.begin() as session:
        for model in (HoldEvent, HoldObject, HeldRecord, Hold, Matter):
            session.execute(delete(model))
        session.execute(delete(Cursor).where(Cursor.name == CURSOR))
    return replay(services)


def covering(services: Services, ident: str) -> list[dict[str, Any]]:
    """The holds covering a person (every identifier of hers, ``identity.resolve``): each hold
    naming one of her identifiers as a custodian or holding one of her records, with how many of
    her records it holds."""
    with services.sessions() as session:
        ids = identity.resolve(session, ident)
        forms = sorted(ids | {"+" + i for i in ids if i.isdigit()})
        held: dict[str, int] = {}
        for part in chunked(forms, 500):
            for hold_id, n in session.execute(
                    select(HeldRecord.hold_id, func.count(HeldRecord.seq)).join(Record, Record.seq == HeldRecord.seq)
                    .where(Record.contact.in_(part)).group_by(HeldRecord.hold_id)):
                held[hold_id] = held.get(hold_id, 0) + int(n)
        out = []
        for hold in session.scalars(select(Hold).order_by(Hold.created_at)):
            custodian = sorted(set(Criteria.from_dict(hold.criteria).custodians) & ids)
            if custodian or hold.id in held:
                out.append({"id": hold.id, "matter": hold.matter_id, "name": hold.name, "status": hold.status,
                            "custodian": custodian, "records_held": held.get(hold.id, 0)})
    return out
