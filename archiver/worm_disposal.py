"""Deleting WORM objects whose records are all disposed (issue 9, point 3).

A disposition run (``archiver.disposition.run``) calls :func:`sweep` once its keys are shredded:

1. *note*: every stored segment each record of which is under a destroyed key
   (``disposed_keys``), and every media object whose data key is destroyed (a media object's
   key names its data key scope, so every record naming it is under that key), gets a
   ``worm_deletions`` row, ``pending``, naming the disposition that destroyed its last key.
   A segment's RFC 6962 leaf hashes and its records' commitments are read from the store and
   kept in that row first, so ``archiver verify`` still checks the segment's Merkle root against
   its signed checkpoint and ``archiver show`` still gives each record's proof once the bytes
   are gone. A segment whose bytes cannot be read now (store down) is noted by a later run.
2. *delete*: every pending row is tried. The catalog is checked first: an object an active
   hold names (``hold_objects``) or whose lock has not passed (a segment's ``retain_until``)
   stays pending without a call. Then ``store.delete_expired``, which checks the store's own
   legal hold and retention before deleting, and which the store enforces again (SeaweedFS
   refuses a locked or held version itself). A refusal or an unreachable store leaves the row
   pending with its reason and is retried by the next run; nothing here raises.

Checkpoints are never deleted: they are the signed proof skeleton of the chain. The delete is
idempotent: an object already gone (a run killed between the delete and its commit) is noted
deleted by the next run, so nothing is deleted twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update

from archiver import chain
from archiver.catalog import DisposedKey, Hold, HoldObject, Media, Record, Segment, WormDeletion, chunked, utcnow
from archiver.errors import Held, Locked, NotFound, StoreError
from archiver.services import Services

log = logging.getLogger(__name__)


def deletable_segments(session: Any) -> list[tuple[Segment, int]]:
    """(segment, disposition id of its last destroyed key) for each stored segment every record
    of which is disposed, not yet noted for deletion; in seq order. One grouped pass over the records."""
    counts = (select(Record.segment_id, func.count().label("n"), func.count(DisposedKey.key_id).label("gone"),
                     func.max(DisposedKey.disposition_id).label("by"))
              .outerjoin(DisposedKey, DisposedKey.key_id == Record.key_id).group_by(Record.segment_id).subquery())
    noted = select(WormDeletion.object_key).where(WormDeletion.kind == "segment")
    rows = session.execute(select(Segment, counts.c.by).join(counts, counts.c.segment_id == Segment.id)
                           .where(Segment.state == "stored", counts.c.n == counts.c.gone, Segment.key.not_in(noted))
                           .order_by(Segment.first_seq)).all()
    return [(seg, int(by)) for seg, by in rows]


def deletable_media(session: Any) -> list[tuple[str, int]]:
    """(object key, disposition id) of each stored media object whose data key is destroyed, not yet noted."""
    noted = select(WormDeletion.object_key).where(WormDeletion.kind == "media")
    rows = session.execute(select(Media.object_key, func.max(DisposedKey.disposition_id), func.count(),
                                  func.count(DisposedKey.key_id))
                           .outerjoin(DisposedKey, DisposedKey.key_id == Media.key_id)
                           .where(Media.state == "stored", Media.object_key.is_not(None), Media.object_key.not_in(noted))
                           .group_by(Media.object_key).order_by(Media.object_key)).all()
    return [(str(key), int(by)) for key, by, n, gone in rows if n == gone]


def skeleton(blob: bytes, where: str) -> tuple[list[str], list[str]]:
    """The segment's leaf hashes (hex, as verify computes them) and its records' commitments."""
    from archiver.verify import _HASH_FIELD, _record  # the verifier's own reading of a record line

    leaves, commits = [], []
    for line in chain.segment_lines(blob, where):
        leaves.append(chain.leaf_hash(_HASH_FIELD.sub(b"", line, count=1)).hex())
        commits.append(str(_record(line).get("commit")))
    return leaves, commits


def note(services: Services) -> tuple[int, list[dict[str, Any]]]:
    """Step 1: a pending row for every object that may now go. Returns how many were noted, and
    the segments that could not be read to be noted (``{"object", "kind", "error"}``: a later
    run notes them)."""
    with services.sessions() as session:
        segments = deletable_segments(session)
        media = deletable_media(session)
    noted = 0
    deferred: list[dict[str, Any]] = []
    for seg, by in segments:
        try:
            leaves, commits = skeleton(services.store.get(seg.key), seg.key)
        except Exception as exc:  # noqa: BLE001 - store down, object unreadable: a later run notes it
            log.warning("worm.note_deferred object=%s reason=%s", seg.key, type(exc).__name__)
            deferred.append({"object": seg.key, "kind": "segment", "error": f"store: {type(exc).__name__}"})
            continue
        if len(leaves) != seg.records:
            log.error("worm.note_refused object=%s reason=record-count", seg.key)  # verify names it
            deferred.append({"object": seg.key, "kind": "segment", "error": "record-count"})
            continue
        with services.sessions.begin() as session:
            session.add(WormDeletion(object_key=seg.key, kind="segment", segment_id=seg.id, disposition_id=by,
                                     state="pending", leaf_hashes=leaves, commitments=commits, attempts=0))
        noted += 1
    if media:
        with services.sessions.begin() as session:
            for key, by in media:
                session.add(WormDeletion(object_key=key, kind="media", disposition_id=by, state="pending",
                                         leaf_hashes=[], commitments=[], attempts=0))
        noted += len(media)
    return noted, deferred


def _held_objects(session: Any, keys: list[str]) -> set[str]:
    out: set[str] = set()
    for part in chunked(keys, 500):
        out.update(session.scalars(select(HoldObject.object_key).join(Hold, Hold.id == HoldObject.hold_id)
                                   .where(HoldObject.object_key.in_(part), Hold.status == "active")))
    return out


def sweep(services: Services, run_id: int | None, now: datetime | None = None) -> dict[str, Any]:
    """Note the objects that may go, then try every pending delete (``run_id``: the disposition
    of this run, if it had one). Never raises.

    Returns ``{"noted", "deleted": [{"object", "kind", "disposition_id"}...], "pending":
    [{"object", "kind", "error"}...]}``; ``error`` is ``legal-hold``, ``retained`` or ``store:
    <ErrorClass>`` (the store refused or could not be reached, also while noting a segment).
    """
    now = now or datetime.now(timezone.utc)
    deleted: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    try:
        noted, pending = note(services)
    except Exception as exc:  # noqa: BLE001 - a deletion is never an error that stops the job
        log.error("worm.note_failed reason=%s", type(exc).__name__)
        noted = 0
    with services.sessions() as session:
        rows = session.execute(select(WormDeletion.object_key, WormDeletion.kind, WormDeletion.disposition_id,
                                      Segment.retain_until)
                               .outerjoin(Segment, Segment.id == WormDeletion.segment_id)
                               .where(WormDeletion.state == "pending").order_by(WormDeletion.object_key)).all()
        held = _held_objects(session, [r[0] for r in rows])
    for key, kind, by, retain_until in rows:
        error: str | None = None
        if key in held:
            error = "legal-hold"  # the archiver's own check; the store would refuse too
        elif retain_until is not None and retain_until > now:
            error = "retained"
        else:
            error = _delete(services, key)
        try:
            _record_attempt(services, key, run_id, error)
        except Exception as exc:  # noqa: BLE001 - the catalog is down: the next run sees the row pending
            log.error("worm.record_failed object=%s reason=%s", key, type(exc).__name__)
            error = f"catalog: {type(exc).__name__}"
        if error is None:
            deleted.append({"object": key, "kind": kind, "disposition_id": by})
        else:
            pending.append({"object": key, "kind": kind, "error": error})
        log.info("worm.delete object=%s kind=%s outcome=%s", key, kind, error or "deleted")
    return {"noted": noted, "deleted": deleted, "pending": pending}


def _delete(services: Services, key: str) -> str | None:
    """Delete one object through the store; the reason it stays, or None once it is gone."""
    try:
        services.store.delete_expired(key)
    except NotFound:
        return None  # deleted by an earlier run that died before noting it
    except Held:
        return "legal-hold"
    except Locked:
        return "retained"
    except StoreError as exc:
        return f"store: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - e.g. a connection error the driver did not translate
        return f"store: {type(exc).__name__}"
    return None


def _record_attempt(services: Services, key: str, run_id: int | None, error: str | None) -> None:
    with services.sessions.begin() as session:
        values: dict[str, Any] = {"attempts": WormDeletion.attempts + 1, "last_error": error}
        if error is None:
            values.update(state="deleted", deleted_at=utcnow(), deleted_by_run=run_id)
        session.execute(update(WormDeletion).where(WormDeletion.object_key == key, WormDeletion.state == "pending")
                        .values(**values))


# --------------------------------------------------------------------------- dry run


def preview(services: Services, planned: list[str], now: datetime | None = None) -> dict[str, Any]:
    """What :func:`sweep` would try after destroying the ``planned`` keys; changes nothing.

    Returns ``{"objects": [{"object", "kind", "wait"}...]}``, ``wait`` None (it would be deleted
    now, unless the store itself refuses), ``legal-hold`` or ``retained`` (it would stay pending):
    the objects pending from earlier runs, those every record of which is under a destroyed key,
    and those every record of which would be once ``planned`` are destroyed.
    """
    now = now or datetime.now(timezone.utc)
    with services.sessions() as session:
        destroyed = set(session.scalars(select(DisposedKey.key_id))) | set(planned)
        found: dict[str, tuple[str, datetime | None]] = {
            key: (kind, until) for key, kind, until in session.execute(
                select(WormDeletion.object_key, WormDeletion.kind, Segment.retain_until)
                .outerjoin(Segment, Segment.id == WormDeletion.segment_id).where(WormDeletion.state == "pending"))}
        found.update((seg.key, ("segment", seg.retain_until)) for seg, _ in deletable_segments(session))
        found.update((key, ("media", None)) for key, _ in deletable_media(session))
        noted = set(session.scalars(select(WormDeletion.object_key)))
        segment_ids: set[int] = set()
        media_keys: set[str] = set()
        for part in chunked(sorted(planned), 500):
            segment_ids.update(session.scalars(select(Record.segment_id).where(Record.key_id.in_(part)).distinct()))
            media_keys.update(k for k in session.scalars(select(Media.object_key).where(
                Media.key_id.in_(part), Media.state == "stored", Media.object_key.is_not(None)).distinct()) if k)
        for part in chunked(sorted(segment_ids), 500):
            kids: dict[int, set[str]] = {}
            for sid, kid in session.execute(select(Record.segment_id, Record.key_id)
                                            .where(Record.segment_id.in_(part)).distinct()):
                kids.setdefault(sid, set()).add(kid)
            for seg in session.scalars(select(Segment).where(Segment.id.in_(part), Segment.state == "stored")):
                if seg.key not in noted and kids.get(seg.id, set()) <= destroyed:
                    found[seg.key] = ("segment", seg.retain_until)
        for part in chunked(sorted(media_keys), 500):
            kids_of: dict[str, set[str]] = {}
            for key, kid in session.execute(select(Media.object_key, Media.key_id).where(Media.object_key.in_(part))):
                kids_of.setdefault(str(key), set()).add(kid)
            found.update((key, ("media", None)) for key, kids_of_key in kids_of.items()
                         if key not in noted and kids_of_key <= destroyed)
        held = _held_objects(session, sorted(found))
    objects = []
    for key in sorted(found):
        kind, until = found[key]
        wait = "legal-hold" if key in held else "retained" if until is not None and until > now else None
        objects.append({"object": key, "kind": kind, "wait": wait})
    return {"objects": objects}


# --------------------------------------------------------------------------- reading


def gone(session: Any, keys: list[str]) -> set[str]:
    """Which of ``keys`` disposition has deleted. An object only noted (pending) is not gone: a
    hold or a retention extension reaching it first keeps it (the sweep checks both)."""
    out: set[str] = set()
    for part in chunked(keys, 500):
        out.update(session.scalars(select(WormDeletion.object_key).where(WormDeletion.object_key.in_(part),
                                                                          WormDeletion.state == "deleted")))
    return out


def segment_skeletons(session: Any) -> dict[str, list[str]]:
    """Segment key -> leaf hashes, for every segment noted for deletion (its bytes may be gone)."""
    return {k: list(leaves) for k, leaves in session.execute(
        select(WormDeletion.object_key, WormDeletion.leaf_hashes).where(WormDeletion.kind == "segment"))}


def media_noted(session: Any) -> set[str]:
    """Media object keys noted for deletion."""
    return set(session.scalars(select(WormDeletion.object_key).where(WormDeletion.kind == "media")))


def deletion_of(session: Any, seg: Segment) -> WormDeletion | None:
    """The deletion row of ``seg`` (None: disposition never noted it)."""
    row = session.get(WormDeletion, seg.key)
    return row if row is not None and row.kind == "segment" else None


def view(row: WormDeletion) -> dict[str, Any]:
    """What ``show`` and ``export`` say of a deleted object."""
    return {"object": row.object_key, "state": row.state, "deleted_at": row.deleted_at.isoformat() if row.deleted_at else None,
            "disposition_id": row.disposition_id}
