"""``archiver retention extend``: lengthen the retention of sealed records of one class; never shorten.

Decision 11: the decision is sealed before it acts.

1. ``decide`` refuses a date not in the future, a class neither in the policy in force nor
   on any sealed record, and a date earlier than one already decided for the class (that
   would shorten what the earlier extension granted); otherwise it journals a ``decision``
   record (event ``retention_extended``: class, date, reason, who, when) and notes it in
   ``retention_extensions``, in one transaction.
2. The sealer seals it (``sealer.seal_pending``, called by ``extend``).
3. ``apply_pending`` then applies every sealed, unapplied extension in order: records of the
   class sealed before the decision (``seq`` below its seq) whose ``retain_until`` is
   earlier get the date in the catalog; the WORM objects holding them (their segments and
   checkpoints, and their media objects) are locked until the date at least
   (``WormStore.extend_retention``: S3 PutObjectRetention on every version, the local lock
   record); segment rows follow. A record or object already kept longer is left as it is.
   The sealer runs ``apply_pending`` after each run, so a crash between seal and apply is
   finished by the next run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select, update

from archiver.canonical import canonical
from archiver.catalog import Media, Record, RetentionExtension, Segment, chunked, utcnow
from archiver.errors import RetentionRefused
from archiver.journal import append_delivery
from archiver.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What one extension changed."""

    decision_seq: int
    retention_class: str
    retain_until: datetime
    records: int
    segments: int


def decide(services: Services, cls: str, until: datetime, reason: str | None, actor: str,
           now: datetime | None = None) -> int:
    """Journal the extension decision; return its journal id. Raises RetentionRefused."""
    from archiver.policy_records import in_force

    now = now or datetime.now(timezone.utc)
    if until.tzinfo is None:
        raise RetentionRefused(f"{until.isoformat()} has no time zone: give a date or a UTC time")
    until = until.astimezone(timezone.utc)
    if until <= now:
        raise RetentionRefused(f"{until.isoformat()} is not in the future: retention is extended to a later date")
    with services.sessions.begin() as session:
        known = session.scalar(select(func.count()).select_from(Record).where(Record.retention_class == cls))
        policy = in_force(session)
        if not known and (policy is None or cls not in {c.name for c in policy.policy.classes}):
            raise RetentionRefused(f"unknown retention class {cls!r}: no sealed record has it and the "
                                   "policy in force does not define it")
        before = session.scalar(select(func.max(RetentionExtension.retain_until))
                                .where(RetentionExtension.retention_class == cls))
        if before is not None and until < before:
            raise RetentionRefused(f"{until.isoformat()} is earlier than {before.isoformat()}, to which class "
                                   f"{cls!r} was already extended: retention is never shortened")
        body = {"event": "retention_extended", "class": cls, "retain_until": until.isoformat(),
                "reason": reason, "actor": actor, "at": now.isoformat()}
        jid = append_delivery(session, "decision", canonical(body), {"event": "retention_extended"})
        session.add(RetentionExtension(retention_class=cls, retain_until=until, journal_id=jid))
    log.info("retention.extend.decided class=%s until=%s journal=%d", cls, until.isoformat(), jid)
    return jid


def apply_pending(services: Services) -> list[Applied]:
    """Apply every sealed extension not applied yet, oldest first. Raises StoreError (retried next run)."""
    with services.sessions() as session:
        due = session.scalars(select(RetentionExtension).where(
            RetentionExtension.seq.is_not(None), RetentionExtension.applied_at.is_(None))
            .order_by(RetentionExtension.id)).all()
    return [_apply(services, ext) for ext in due]


def _apply(services: Services, ext: RetentionExtension) -> Applied:
    assert ext.seq is not None
    until, cls = ext.retain_until, ext.retention_class
    with services.sessions() as session:
        rows = session.execute(select(Record.seq, Record.segment_id).where(
            Record.retention_class == cls, Record.seq < ext.seq, Record.retain_until < until)).all()
        seqs = [seq for seq, _ in rows]
        segment_ids = sorted({sid for _, sid in rows})
        segments = [session.get(Segment, sid) for sid in segment_ids]
        media: list[str] = []
        for part in chunked(seqs, 500):
            media += [k for k in session.scalars(select(Media.object_key).where(
                Media.record_seq.in_(part), Media.state == "stored", Media.object_key.is_not(None))) if k]
        from archiver.worm_disposal import gone

        deleted = gone(session, [s.key for s in segments if s is not None] + media)  # disposed and deleted
    objects = 0
    media = [k for k in media if k not in deleted]
    for seg in segments:  # an outbox segment ("writing") is put with its row's date, raised below
        if seg is not None and seg.state == "stored" and seg.key not in deleted:
            services.store.extend_retention(seg.key, until)
            services.store.extend_retention(seg.checkpoint_key, until)
            objects += 2
    for key in sorted(set(media)):
        services.store.extend_retention(key, until)
        objects += 1
    with services.sessions.begin() as session:
        for part in chunked(seqs, 500):
            session.execute(update(Record).where(Record.seq.in_(part), Record.retain_until < until)
                            .values(retain_until=until))
        for part in chunked(segment_ids, 500):
            session.execute(update(Segment).where(Segment.id.in_(part), Segment.retain_until < until)
                            .values(retain_until=until))
        session.execute(update(RetentionExtension).where(RetentionExtension.id == ext.id)
                        .values(applied_at=utcnow(), records=len(seqs), segments=len(segment_ids)))
    log.info("retention.extend.applied class=%s records=%d segments=%d objects=%d", cls, len(seqs),
             len(segment_ids), objects)
    return Applied(ext.seq, cls, until, len(seqs), len(segment_ids))


def extend(services: Services, cls: str, until: datetime, reason: str | None, actor: str) -> Applied | None:
    """Decide, seal, apply. Returns None when another sealer holds the lock (it seals and applies
    the decision on its next run). Raises RetentionRefused, StoreError."""
    from archiver import sealer

    jid = decide(services, cls, until, reason, actor)
    sealer.seal_pending(services)  # seals the decision, then applies it (see seal_pending)
    with services.sessions() as session:
        ext = session.scalars(select(RetentionExtension).where(RetentionExtension.journal_id == jid)).one()
        if ext.applied_at is None or ext.seq is None:
            return None
        return Applied(ext.seq, cls, ext.retain_until, ext.records or 0, ext.segments or 0)
