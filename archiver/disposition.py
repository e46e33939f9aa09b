"""Disposition: crypto-shred the data keys whose records' retention has run out.

A data key covers the records of one (contact, class, period) scope (``archiver.keys``). A
key is *due* when every record under it has passed its ``retain_until``, no active hold
holds any of them, and hold evaluation has caught up with all of them (``due_keys``, pure:
the property test drives it). Disposition never runs ahead of hold evaluation: a run first
syncs the holds, and a record a hold has not evaluated yet (above a hold's cursor, or while
a hold decision waits to be applied) keeps its key.

A run (``run``; ``archiver dispose``, the ``disposition`` job):

1. finishes a disposition sealed but not applied (a crash between seal and apply);
2. plans: the due keys of classes without ``review`` go now; those of ``review: true``
   classes become a *batch* per class for approval (``archiver disposition list|approve|
   reject``, sealed ``decision`` records ``disposition_approved`` / ``disposition_rejected``);
   an approved batch goes with the next run (its keys checked again: still due, not held);
   a rejected batch's keys are kept and not proposed again;
3. journals one ``decision`` record (event ``disposition``: the keys, their seqs as runs,
   classes with record counts and the policy records that classed them, approved batches
   and who approved them), has it sealed, then applies it: each key's wrapped bytes are
   wiped (``data_keys.wrapped`` NULL, ``destroyed_at``), the key is noted in
   ``disposed_keys``, and the records leave the search index (both backends). Applying is
   idempotent and done under the sealer's lock, so the sealer never encrypts with a key
   being destroyed; a record sealed later into the same scope gets a new key (``<id>~2``).

4. deletes the WORM objects whose records are now all disposed (``archiver.worm_disposal``:
   segments and media objects, never checkpoints), once their lock has passed and no hold
   names them; a delete refused (legal hold, retention, store down) stays pending, is
   retried by every later run and reported in the run's summary, never an error that stops it.

An erasure (:mod:`archiver.erasure`) is a ``dispositions`` row too, its plan with event
``erasure``: applied by the same ``finish_pending``; ``disposed`` says ``erased`` for its keys.

With ``dry_run`` the plan is returned and nothing changes.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update

from archiver.canonical import canonical
from archiver.catalog import (
    DataKey, DisposedKey, Disposition, DispositionBatch, Hold, Journal, Record, chunked, insert_rows, leader_lock,
    utcnow,
)
from archiver.errors import ArchiverError, ValidationError
from archiver.journal import append_delivery
from archiver.services import Services

log = logging.getLogger(__name__)

EVENT = "disposition"
#: What a disposition record says of the WORM objects holding its records (``archiver.worm_disposal``).
WORM_RULE = "deleted once every record in them is disposed and their lock has passed; checkpoints kept"
LOCK_WAIT = 120.0  # seconds a run waits for the sealer's lock before leaving the apply to the next run
# Records dropped from the search index per call. Each call is one index transaction (FTS5: a
# connection whose close checkpoints the WAL; OpenSearch: a lookup, a bulk and a refresh), and
# both backends chunk inside: a few large calls, not one per 500 records (issue 9's rate).
INDEX_DELETE_BATCH = 50_000


class NoSuchBatch(ArchiverError):
    code = "no-such-batch"
    http_status = 404


class BatchDecided(ArchiverError):
    code = "batch-decided"
    http_status = 409


@dataclass(frozen=True)
class Fact:
    """What planning looks at for one sealed record."""

    seq: int
    key_id: str
    retention_class: str
    retain_until: datetime


def due_keys(facts: Iterable[Fact], held: set[int], now: datetime, evaluated_through: int,
             destroyed: Collection[str] = frozenset()) -> dict[str, list[int]]:
    """The keys that may be destroyed, each with its records' seqs (sorted).

    A key is due when every record under it has ``retain_until <= now``, none is in ``held``,
    each was evaluated by the holds (``seq <= evaluated_through``) and it is not destroyed yet.
    """
    seqs: dict[str, list[int]] = {}
    blocked: set[str] = set(destroyed)
    for f in facts:
        seqs.setdefault(f.key_id, []).append(f.seq)
        if f.retain_until > now or f.seq in held or f.seq > evaluated_through:
            blocked.add(f.key_id)
    return {k: sorted(v) for k, v in seqs.items() if k not in blocked}


def ranges(seqs: list[int]) -> list[list[int]]:
    from archiver.holds import ranges as _ranges

    return _ranges(seqs)


# --------------------------------------------------------------------------- planning


def evaluated_through(services: Services) -> int:
    """The last seq every active hold has evaluated (0 while a hold decision waits to be applied),
    and whose contact pairings are known (``identity.read_through``: a custodian hold holds the
    person under every identifier paired with hers)."""
    from archiver import holds, identity

    with services.sessions() as session:
        if holds._decisions_waiting(session):  # noqa: SLF001 - the holds' own readiness rule
            return 0
        through = holds._sealed_through(session)  # noqa: SLF001
        cursors = session.scalar(select(func.min(Hold.cursor)).where(Hold.status == "active"))
        paired = identity.read_through(session)
    return min([through, *(v for v in (cursors, paired) if v is not None)])


def plan(services: Services, now: datetime | None = None) -> dict[str, Any]:
    """What a run would do now: keys due by class, split into ``dispose`` and ``review``."""
    from archiver import holds
    from archiver.policy_records import in_force

    now = now or datetime.now(timezone.utc)
    through = evaluated_through(services)
    with services.sessions() as session:
        held = holds.held_seqs(session)
        destroyed = set(session.scalars(select(DataKey.id).where(DataKey.wrapped.is_(None))))
        # Only keys whose latest record has expired can be due: read the facts of those alone,
        # in one join (records.key_id has no index: a query per few hundred keys would scan
        # the table each time), with the policy record that classed each.
        gone = select(DataKey.id).where(DataKey.wrapped.is_(None))
        expired = (select(Record.key_id.label("key_id")).where(Record.key_id.not_in(gone)).group_by(Record.key_id)
                   .having(func.max(Record.retain_until) <= now).subquery())
        rows = session.execute(
            select(Record.seq, Record.key_id, Record.retention_class, Record.retain_until, Record.policy_seq)
            .join(expired, expired.c.key_id == Record.key_id)).all()
        facts = [Fact(s, k, c, u) for s, k, c, u, _ in rows]
        force = in_force(session)
        review_classes = {c.name for c in force.policy.classes if c.review} if force else set()
        batches = list(session.scalars(select(DispositionBatch).where(DispositionBatch.state != "disposed")))
    due = due_keys(facts, held, now, through, destroyed)
    cls_of = {f.key_id: f.retention_class for f in facts if f.key_id in due}
    policy_of: dict[str, set[int | None]] = {}
    for _, kid, _, _, pseq in rows:
        if kid in due:
            policy_of.setdefault(kid, set()).add(pseq)
    in_batch = {k: b for b in batches for k in b.key_ids}
    dispose: dict[str, list[int]] = {}
    approved: list[dict[str, Any]] = []
    proposed: dict[str, list[str]] = {}
    for kid in sorted(due):
        cls = cls_of[kid]
        if cls not in review_classes:
            dispose[kid] = due[kid]
            continue
        batch = in_batch.get(kid)
        if batch is None:
            proposed.setdefault(cls, []).append(kid)
        elif batch.state == "approved":
            dispose[kid] = due[kid]
    for batch in batches:
        if batch.state == "approved" and any(k in dispose for k in batch.key_ids):
            approved.append({"batch": batch.id, "class": batch.retention_class, "approved_by": batch.decided_by,
                             "approved_at": batch.decided_at.isoformat() if batch.decided_at else None,
                             "decision_journal_id": batch.decision_journal_id,
                             "keys": [k for k in batch.key_ids if k in dispose]})
    keys: list[dict[str, Any]] = [{"key": kid, "class": cls_of[kid], "records": len(due[kid]), "seqs": ranges(due[kid]),
             "first_seq": due[kid][0], "last_seq": due[kid][-1],
             "policy_seqs": sorted(p for p in policy_of.get(kid, ()) if p is not None)} for kid in sorted(dispose)]
    classes: dict[str, dict[str, Any]] = {}
    for k in keys:
        c = classes.setdefault(k["class"], {"keys": 0, "records": 0, "first_seq": k["first_seq"],
                                            "last_seq": k["last_seq"], "policy_seqs": set()})
        c["keys"] += 1
        c["records"] += k["records"]
        c["first_seq"], c["last_seq"] = min(c["first_seq"], k["first_seq"]), max(c["last_seq"], k["last_seq"])
        c["policy_seqs"].update(k["policy_seqs"])
    for c in classes.values():
        c["policy_seqs"] = sorted(c["policy_seqs"])
    review = [{"class": cls, "keys": kids, "records": sum(len(due[k]) for k in kids),
               "seqs": ranges(sorted(s for k in kids for s in due[k]))} for cls, kids in sorted(proposed.items())]
    waiting = sorted({b.id for b in batches if b.state in ("pending", "approving", "rejecting")})
    return {"at": now.isoformat(), "evaluated_through": through, "keys": keys, "classes": classes,
            "records": sum(k["records"] for k in keys), "approved_batches": approved,
            "to_review": review, "pending_batches": waiting}


# --------------------------------------------------------------------------- the run


def run(services: Services, actor: str = "archiver:disposition", *, dry_run: bool = False,
        now: datetime | None = None) -> dict[str, Any]:
    """One disposition run; returns its summary (the plan, and what was done).

    Single instance (``leader_lock`` "disposition"); raises JobBusy when another process runs it.
    """
    from archiver import holds, worm_disposal
    from archiver.errors import JobBusy

    if dry_run:
        out = plan(services, now)
        out["dry_run"] = True
        out["worm"] = worm_disposal.preview(services, [k["key"] for k in out["keys"]], now)
        return out
    with leader_lock(services.engine, "disposition") as mine:
        if not mine:
            raise JobBusy("a disposition run is going on in another process")
        settle_decisions(services)
        finished = finish_pending(services)
        holds.sync(services)  # disposition never runs ahead of hold evaluation
        out = plan(services, now)
        out["dry_run"] = False
        out["finished_earlier_runs"] = finished
        out["batches_proposed"] = _propose(services, out["to_review"])
        out["disposition_seq"] = None
        if out["keys"]:
            _decide_and_apply(services, actor, out, now)
        # Then the WORM objects whose records are all disposed now (or were refused before).
        out["worm"] = worm_disposal.sweep(services, out.get("disposition_id"))
        log.info("disposition.run keys=%d records=%d seq=%s worm_deleted=%d worm_pending=%d", len(out["keys"]),
                 out["records"], out["disposition_seq"], len(out["worm"]["deleted"]), len(out["worm"]["pending"]))
        return out


def _decide_and_apply(services: Services, actor: str, out: dict[str, Any], now: datetime | None) -> None:
    """Journal the run's disposition record, have it sealed, destroy its keys."""
    body = {"event": EVENT, "actor": actor, "at": (now or utcnow()).isoformat(),
            "keys": out["keys"], "classes": out["classes"], "records": out["records"],
            "approved_batches": out["approved_batches"], "evaluated_through": out["evaluated_through"],
            "worm_objects": WORM_RULE}
    with services.sessions.begin() as session:
        jid = append_delivery(session, "decision", canonical(body), {"event": EVENT})
        row = Disposition(journal_id=jid, plan=body, actor=actor)
        session.add(row)
        session.flush()
        out["disposition_id"] = row.id
    out["applied"] = finish_pending(services)
    with services.sessions() as session:
        out["disposition_seq"] = session.scalar(select(Disposition.seq).where(Disposition.id == out["disposition_id"]))


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """The counts and ids of a run (what a ``job_run`` record says of it)."""
    return {"disposition_seq": out.get("disposition_seq"), "keys": len(out["keys"]), "records": out["records"],
            "classes": {c: {"keys": v["keys"], "records": v["records"]} for c, v in out["classes"].items()},
            "evaluated_through": out["evaluated_through"], "batches_proposed": out.get("batches_proposed", []),
            "pending_batches": out["pending_batches"], "dry_run": out["dry_run"], **_worm_summary(out)}


def _worm_summary(out: dict[str, Any]) -> dict[str, Any]:
    """The WORM deletions of a run: how many objects went, and each one still pending with why."""
    worm = out.get("worm")
    if worm is None:
        return {}
    if "objects" in worm:  # a dry run's preview
        return {"worm": {"would_delete": [o["object"] for o in worm["objects"] if o["wait"] is None],
                         "would_wait": [o for o in worm["objects"] if o["wait"] is not None]}}
    return {"worm": {"noted": worm["noted"], "deleted": len(worm["deleted"]),
                     "deleted_objects": [d["object"] for d in worm["deleted"]], "pending": worm["pending"]}}


def _propose(services: Services, review: list[dict[str, Any]]) -> list[str]:
    made = []
    with services.sessions.begin() as session:
        for item in review:
            bid = "disp-" + secrets.token_hex(6)
            session.add(DispositionBatch(id=bid, retention_class=item["class"], key_ids=item["keys"],
                                         seqs=item["seqs"], records=item["records"], state="pending"))
            made.append(bid)
    return made


def finish_pending(services: Services) -> int:
    """Seal and apply every disposition journaled and not applied yet (oldest first); return how many."""
    from archiver import sealer

    with services.sessions() as session:
        rows = list(session.scalars(select(Disposition).where(Disposition.applied_at.is_(None))
                                    .order_by(Disposition.id)))
    done = 0
    for row in rows:
        deadline = time.monotonic() + LOCK_WAIT
        while (seq := _sealed_seq(services, row.journal_id)) is None and time.monotonic() < deadline:
            if not sealer.seal_pending(services):
                time.sleep(0.2)  # another process is sealing: it seals this decision too
        if seq is None:  # not sealed in time: the next run applies it
            continue
        if _apply(services, row, seq):
            done += 1
    return done


def _sealed_seq(services: Services, journal_id: int) -> int | None:
    with services.sessions() as session:
        return session.scalar(select(Journal.delivery_seq).where(Journal.id == journal_id, Journal.sealed.is_(True)))


def _apply(services: Services, row: Disposition, seq: int) -> bool:
    """Destroy the decision's keys (under the sealer's lock), drop its records from the index."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        with leader_lock(services.engine) as sealer_free:
            if sealer_free:
                _destroy(services, row, seq)
                break
        if time.monotonic() > deadline:
            log.warning("disposition.apply_deferred id=%d reason=sealer-busy", row.id)
            return False
        time.sleep(0.2)  # the sealer runs a batch now; retry when it lets go
    with services.sessions() as session:
        gone = set(session.scalars(select(DisposedKey.key_id).where(DisposedKey.disposition_id == row.id)))
    seqs = [s for k in row.plan["keys"] if k["key"] in gone for first, last in k["seqs"] for s in range(first, last + 1)]
    for part in chunked(seqs, INDEX_DELETE_BATCH):
        services.search.delete(part)
    with services.sessions.begin() as session:
        session.execute(update(Disposition).where(Disposition.id == row.id).values(applied_at=utcnow()))
    log.info("disposition.applied id=%d seq=%d keys=%d", row.id, seq, len(row.plan["keys"]))
    return True


def _destroy(services: Services, row: Disposition, seq: int) -> None:
    """Wipe the keys (idempotent). A key a hold has come to hold since the decision was sealed
    is kept: a hold always wins (it is logged, and the key is not noted as disposed)."""
    from archiver import holds

    at = utcnow()
    with services.sessions.begin() as session:
        held = holds.held_seqs(session)
        kids = []
        for k in row.plan["keys"]:
            if any(s in held for first, last in k["seqs"] for s in range(first, last + 1)):
                log.warning("disposition.kept_for_hold id=%d key=%s", row.id, k["key"])
                continue
            kids.append(k["key"])
        session.execute(update(Disposition).where(Disposition.id == row.id).values(seq=seq))
        for part in chunked(kids, 500):
            session.execute(update(DataKey).where(DataKey.id.in_(part), DataKey.wrapped.is_not(None))
                            .values(wrapped=None, destroyed_at=at))
            known = set(session.scalars(select(DisposedKey.key_id).where(DisposedKey.key_id.in_(part))))
            insert_rows(session.connection(), DisposedKey.__table__,
                        [{"key_id": kid, "disposition_id": row.id, "disposed_at": at} for kid in part
                         if kid not in known])
        for b in row.plan.get("approved_batches", []):
            session.execute(update(DispositionBatch).where(DispositionBatch.id == b["batch"])
                            .values(state="disposed", disposition_id=row.id))


# --------------------------------------------------------------------------- review batches


def list_batches(services: Services) -> list[dict[str, Any]]:
    """Every review batch, newest first."""
    with services.sessions() as session:
        return [_batch_view(b) for b in session.scalars(
            select(DispositionBatch).order_by(DispositionBatch.created_at.desc(), DispositionBatch.id))]


def _batch_view(b: DispositionBatch) -> dict[str, Any]:
    return {"id": b.id, "class": b.retention_class, "state": b.state, "keys": b.key_ids, "records": b.records,
            "seqs": b.seqs, "first_seq": b.seqs[0][0] if b.seqs else None,
            "last_seq": b.seqs[-1][1] if b.seqs else None, "created_at": b.created_at.isoformat(),
            "decided_at": b.decided_at.isoformat() if b.decided_at else None, "decided_by": b.decided_by,
            "reason": b.reason, "disposition_id": b.disposition_id}


def decide(services: Services, batch_id: Any, actor: str, approve: bool, reason: Any = None) -> dict[str, Any]:
    """Approve or reject a pending batch: sealed as a ``decision`` record first, then noted.

    Raises ValidationError (a rejection needs a reason), NoSuchBatch, BatchDecided.
    """
    from archiver import sealer

    if not isinstance(batch_id, str) or not batch_id.startswith("disp-") or len(batch_id) > 32:
        raise NoSuchBatch(f"no disposition batch {batch_id}", hint="'archiver disposition list' shows them")
    if not approve and (not isinstance(reason, str) or not reason.strip() or "\x00" in reason or len(reason) > 2000):
        raise ValidationError("reason", "is required to reject (at most 2000 characters)")
    event = "disposition_approved" if approve else "disposition_rejected"
    with services.sessions.begin() as session:
        batch = session.get(DispositionBatch, batch_id)
        if batch is None:
            raise NoSuchBatch(f"no disposition batch {batch_id}", hint="'archiver disposition list' shows them")
        if batch.state != "pending":
            raise BatchDecided(f"disposition batch {batch_id} is {batch.state} already")
        body = {"event": event, "actor": actor, "at": utcnow().isoformat(), "batch": batch_id,
                "class": batch.retention_class, "keys": batch.key_ids, "seqs": batch.seqs,
                "reason": reason.strip() if isinstance(reason, str) else None}
        jid = append_delivery(session, "decision", canonical(body), {"event": event})
        batch.decision_journal_id = jid
        batch.reason = reason.strip() if isinstance(reason, str) else None
        batch.decided_by, batch.decided_at = actor, utcnow()
        batch.state = "approving" if approve else "rejecting"  # acts once sealed (below, or the next run)
    sealer.seal_pending(services)
    settle_decisions(services)
    with services.sessions() as session:
        found = session.get(DispositionBatch, batch_id)
        assert found is not None
        return _batch_view(found)


def settle_decisions(services: Services) -> None:
    """Approvals and rejections whose decision record is sealed take effect."""
    with services.sessions.begin() as session:
        for b in session.scalars(select(DispositionBatch).where(DispositionBatch.state.in_(("approving", "rejecting")))):
            sealed = session.scalar(select(Journal.sealed).where(Journal.id == b.decision_journal_id))
            if sealed:
                b.state = "approved" if b.state == "approving" else "rejected"


# --------------------------------------------------------------------------- reading


def disposed(session: Any, key_id: str) -> dict[str, Any] | None:
    """How a record under ``key_id`` was disposed or erased (None: it was not).

    A decision with event ``erasure`` (:mod:`archiver.erasure`) gives status ``erased`` and
    ``erasure_seq``, the sealed erasure record; a disposition gives ``disposed`` and ``disposition_seq``.
    """
    row = session.get(DisposedKey, key_id)
    if row is None:
        return None
    d = session.get(Disposition, row.disposition_id)
    if d is not None and d.plan.get("event") == "erasure":
        return {"status": "erased", "erasure_seq": d.seq, "erased_at": row.disposed_at.isoformat(), "key": key_id}
    return {"status": "disposed", "disposition_seq": d.seq if d else None, "disposed_at": row.disposed_at.isoformat(),
            "key": key_id}
