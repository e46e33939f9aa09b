"""The sealer: journal rows -> records -> hash chain -> locked WORM segments + checkpoints.

One writer at a time (``catalog.leader_lock``). Each batch runs in three steps whose order
is the crash-safety argument:

1. *plan* (one transaction): parse the journal rows, de-duplicate items, assign seqs, encrypt,
   chain, frame the segment(s) and checkpoint(s); insert records, mark the journal rows
   sealed and move the chain head, keeping the segment bytes in the catalog (outbox).
   New data keys are committed in that same transaction, so no ciphertext under a key is
   ever stored (outbox or WORM) without it. The journal
   bodies are dropped in the same transaction: from then on the outbox holds them, sealed.
2. *publish*: put each "writing" segment, then its checkpoint, to the WORM store.
3. *confirm* (one transaction): mark the segment "stored" and drop its outbox bytes.

A crash before 1 commits loses nothing (the journal still holds the rows); after 1, the next
run re-puts the identical bytes (idempotent), so nothing is sealed twice. While the store is
down, step 2 fails, no new batch is planned, and the journal grows until it returns.

How the stages run (threads, or a forked writer process for a large backlog, and the
malloc and GC settings that keep that fast and flat) is ``pipeline``'s business: this
module says only what each stage does. Batches are committed strictly in order, each in
its own transaction; the planner carries the chain tip and the item keys of batches not
yet committed, so de-duplication sees them. Any error stops every stage; batches planned
but not committed are dropped and planned again next run.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from sqlalchemy import Text, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.orm import Session

from archiver import chain, identity, items, pipeline, policy_records, retention
from archiver.canonical import sha256_hex
from archiver.catalog import (
    DataKey, DuplicateHit, Journal, Media, MessageState, PendingLink, PolicyVersion, Record, RetentionExtension, Segment,
    chain_head, chunked, insert_rows, leader_lock, truncate_wal,
)
from archiver.errors import ArchiverError
from archiver.journal import mark_sealed
from archiver.planner import Batch, Carry, Planner, Run, ensure_data_keys, successor_keys
from archiver.services import Services

log = logging.getLogger(__name__)

MAX_JOURNAL_ROWS = 1000


def seal_pending(services: Services, *, max_batches: int | None = None, pipelined: bool = True) -> int:
    """Seal everything pending, batch by batch; return the number of records sealed.

    Returns 0 without work if another sealer holds the lock. Raises StoreError when the store
    is unreachable (what was planned stays in the outbox and is published on the next run).
    ``pipelined=False`` runs the same stages one after another on the calling thread (for
    profiling and debugging; the result is the same).
    """
    with leader_lock(services.engine) as leader:
        if not leader:
            return 0
        # The file may have changed since the last run: a new version is journaled (and sealed
        # first, below); an invalid one is logged and the last good version stays in force.
        policy_records.register(services, "sealer", strict=False)
        publish_outbox(services)
        # Records sealed before pairings were learned at sealing: re-read a window of them now;
        # the links they prove are journaled and sealed by this run. A window that cannot be
        # read (store down, a segment altered) never stops sealing: it is retried next run, and
        # disposition waits for it (identity.read_through).
        try:
            identity.reread(services)
        except ArchiverError as exc:
            log.error("identity.reread_failed code=%s", exc.code)
        pipeline.steady_allocator()
        runner = pipeline.Pipeline(_Stages(services))
        with pipeline.fewer_collections():
            sealed = runner.run(max_batches) if pipelined else runner.run_inline(max_batches)
            # Identity links journaled by the last commits are sealed in the same run (they hold
            # no pairings themselves: one more pass ends it).
            for _ in range(3):
                with services.sessions() as session:
                    if max_batches is not None or not identity.unsealed_links(session):
                        break
                runner = pipeline.Pipeline(_Stages(services))
                sealed += runner.run(None) if pipelined else runner.run_inline(None)
        identity.catch_up(services)  # links sealed while the table was behind (a catalog just migrated)
        if sealed:
            # Sealed journal bodies would otherwise linger in old WAL frames (SQLite).
            truncate_wal(services.sessions)
        # Retention extensions sealed by now (this run or an earlier one cut short) act now.
        from archiver.retention_extend import apply_pending

        apply_pending(services)
        return sealed


class _Stages:
    """This module's stages for ``pipeline`` (looked up at call time, so tests can wrap them)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.batch_rows = MAX_JOURNAL_ROWS

    def plan(self, carry: Carry, after_id: int, no: int) -> tuple[Batch | None, int]:
        return _plan(self.services, carry, after_id, no)

    def write(self, batch: Batch) -> list[Segment]:
        return _write(self.services, batch)

    def publish(self, segments: list[Segment]) -> None:
        _publish(self.services, segments)


def publish_outbox(services: Services) -> None:
    """Put every planned segment and checkpoint to WORM, then confirm. Raises StoreError."""
    with services.sessions() as session:
        pending = session.scalars(select(Segment).where(Segment.state == "writing").order_by(Segment.first_seq)).all()
    _publish(services, pending)


def _publish(services: Services, segments: Iterable[Segment]) -> None:
    """Steps 2 and 3 for planned segments, in seq order. Raises StoreError."""
    for seg in segments:
        assert seg.blob is not None and seg.checkpoint_blob is not None
        # A segment whose records' retention has already passed (old history, a short class)
        # still gets a lock the store accepts; the catalog keeps the lock actually set.
        until = retention.at_least_soon(seg.retain_until)
        services.store.put_locked(seg.key, seg.blob, until)
        services.store.put_locked(seg.checkpoint_key, seg.checkpoint_blob, until)
        _confirm(services, seg.id, until)
        log.info("segment.stored key=%s first=%d last=%d", seg.key, seg.first_seq, seg.last_seq)


def _confirm(services: Services, segment_id: int, until: datetime) -> None:
    """Step 3: the segment is in WORM, locked until ``until``; drop the outbox bytes."""
    with services.sessions.begin() as session:
        session.execute(update(Segment).where(Segment.id == segment_id, Segment.retain_until < until)
                        .values(retain_until=until))
        session.execute(update(Segment).where(Segment.id == segment_id)
                        .values(state="stored", blob=None, checkpoint_blob=None))


def _plan(services: Services, carry: Carry, after_id: int, no: int,
          limit: int | None = None) -> tuple[Batch | None, int]:
    """Plan the next batch of journal rows after ``after_id`` (no catalog writes)."""
    carry.forget_committed()
    columns = (Journal.id, Journal.source, Journal.body, type_coerce(Journal.meta, Text).label("meta"),
               Journal.received_at)
    with services.sessions() as session:
        # A new policy version heads the next batch: it gets the batch's first seq, every record
        # planned with it or after it is classed with it, and it commits with them (decisions
        # 11, 13: sealed before it acts). Journal ids order the rest.
        # Only rows journaled since the last look are read (``Carry.policy_scan``): the journal has
        # no index on source, so looking at every unsealed row again for each batch read the whole
        # backlog per batch (quadratic in the backlog). Journal ids up to max(id) are all visible in
        # this read's snapshot on SQLite; on PostgreSQL a row with a lower id may commit later: like
        # any row journaled after this run started, it is then sealed by the next run.
        top = session.scalar(select(func.max(Journal.id))) or 0
        if top > carry.policy_scan:
            carry.policy_rows += session.execute(
                select(*columns).where(Journal.sealed.is_(False), Journal.source == "policy",
                                       Journal.id > carry.policy_scan, Journal.id <= top).order_by(Journal.id)).all()
            carry.policy_scan = top
        # A retention version first, then the others (consent.yaml) of the same batch: they are
        # journaled in that order (policy_records.NAMES), and a second retention version waits for
        # the next batch, so one batch never holds two.
        policy = _policy_rows(carry.policy_rows[:8])
        del carry.policy_rows[:len(policy)]
        rows = session.execute(  # plain rows, not ORM objects: only these columns are read
            select(*columns).where(Journal.sealed.is_(False), Journal.id > after_id, Journal.source != "policy")
            .order_by(Journal.id).limit(limit or MAX_JOURNAL_ROWS)
        ).all()
    after_id = rows[-1].id if rows else after_id
    planned: list[Any] = [*policy, *rows]  # Rows of the Journal columns the planner reads
    if not planned:
        return None, after_id
    planner = Planner(services, carry.in_force)
    for row in planned:
        planner.add_journal_row(row)
    scopes = planner.scopes()
    planner.successors = successor_keys(services, scopes)
    new_keys: list[dict[str, Any]] = []
    planner.data_keys = ensure_data_keys(services, {planner.successors.get(k, k) for k in scopes}, carry.data_keys,
                                         new_keys)
    with services.sessions() as session:
        batch = planner.plan(session, carry, no)
    batch.data_keys = new_keys
    carry.in_force = planner.in_force
    return batch, after_id


def _write(services: Services, batch: Batch) -> list[Segment]:
    """Step 1's catalog half for one planned batch: frame, insert, move the head, in one commit.

    Returns the committed outbox segments (detached, bytes loaded) for publishing.
    """
    framed = [_frame(run) for run in batch.runs]  # outside the write lock; zlib runs without the GIL
    with services.sessions.begin() as session:
        head = chain_head(session)
        if head.seq != batch.first_seq - 1 or head.hash != batch.prev_hash:
            raise RuntimeError(f"chain head moved under the sealer (at {head.seq}, planned from {batch.first_seq - 1})")
        # The batch's new data keys commit with the first ciphertext under them (see planner.ensure_data_keys).
        insert_rows(session.connection(), DataKey.__table__, batch.data_keys)
        segments = [_add_segment(services, session, run, blob, root, head) for run, (blob, root) in zip(batch.runs, framed)]
        # The bodies go now: from this commit on the outbox segment holds them (encrypted).
        mark_sealed(session.connection(), batch.journal)
        _decisions(session, batch)
        # Contact identities (decision 12): links sealed now act now; new pairings are journaled
        # as link decisions in this same commit, to be sealed next.
        identity.apply_sealed(session, batch.identity_links)
        identity.learn(session, batch.pairings)
        _side_tables(session, batch)
        _late_links(session, batch)
    return segments


def _frame(run: Run) -> tuple[bytes, str]:
    """The segment blob (framed lines) and Merkle root of a run; frees the run's record bytes."""
    blob = chain.encode_segment(run.lines)
    root = chain.merkle_root(run.leaves)
    run.lines, run.leaves = [], []
    return blob, root


def _add_segment(services: Services, session: Session, run: Run, blob: bytes, root: str, head: Any) -> Segment:
    """Sign the run's checkpoint, put segment and checkpoint in the outbox, insert its records."""
    key = services.signing_key
    cp = chain.Checkpoint(
        segment=chain.segment_key(run.cls, run.first, run.last), retention_class=run.cls, first_seq=run.first,
        last_seq=run.last, merkle_root=root, chain_hash=run.last_hash, prev_checkpoint=head.checkpoint,
        created_at=datetime.now(timezone.utc).isoformat(), key_id=chain.key_id_of(key.public_key()),
    ).signed(key)
    seg = Segment(
        key=cp.segment, retention_class=run.cls, first_seq=run.first, last_seq=run.last, records=len(run.rows),
        merkle_root=root, last_hash=run.last_hash, sha256=sha256_hex(blob), size=len(blob),
        retain_until=run.retain_until, checkpoint_key=chain.checkpoint_key(run.last), checkpoint_digest=cp.digest(),
        state="writing", blob=blob, checkpoint_blob=cp.to_bytes(),
    )
    session.add(seg)
    session.flush()
    for row in run.rows:
        row["segment_id"] = seg.id
    insert_rows(session.connection(), Record.__table__, run.rows)
    head.seq, head.hash, head.checkpoint = run.last, run.last_hash, cp.digest()
    session.flush()
    return seg


def _policy_rows(pending: Sequence[Any]) -> list[Any]:
    """The pending policy rows one batch heads with: at most one retention version (the first)."""
    out: list[Any] = []
    retention = 0
    for row in pending:
        is_retention = _policy_name(row) == "retention"
        if is_retention and (retention or out):
            break  # a later retention version classes what comes after it: a batch of its own
        retention += is_retention
        out.append(row)
    return out


def _policy_name(row: Any) -> str:
    meta = row.meta if isinstance(row.meta, dict) else json.loads(row.meta or "{}")
    return str(meta.get("policy") or "retention")


def _decisions(session: Session, batch: Batch) -> None:
    """A policy version or an extension decision now has its sealed record: note its seq."""
    for kind, journal_id, seq in batch.decisions:
        table = PolicyVersion if kind == "policy" else RetentionExtension
        session.execute(update(table).where(table.journal_id == journal_id).values(seq=seq))


def _side_tables(session: Session, batch: Batch) -> None:
    """Duplicate hits, highest status per wamid, and the media fetch queue."""
    conn = session.connection()
    if batch.dup_rows:
        conn.execute(insert(DuplicateHit.__table__), batch.dup_rows)
    _raise_states(session, batch.statuses)
    if batch.media_rows:
        conn.execute(insert(Media.__table__), batch.media_rows)


def _late_links(session: Session, batch: Batch) -> None:
    """Keep unresolved edit/revoke links waiting; point resolved ones at their message.

    The message's sealed record names the edit/revoke (see ``planner``); the catalog row of
    the edit/revoke gets ``links.original`` as if it had been resolved when it was sealed.
    """
    conn = session.connection()
    insert_rows(conn, PendingLink.__table__, [{"target_key": key, "record_seq": seq, "kind": kind}
                                              for key, seq, kind in batch.waiting])
    if not batch.resolved:
        return
    rt, pt = Record.__table__, PendingLink.__table__
    original = {seq: message for message, seq, _ in batch.resolved}
    for seq, links in conn.execute(select(rt.c.seq, rt.c.links).where(rt.c.seq.in_(sorted(original)))).all():
        conn.execute(update(rt).where(rt.c.seq == seq).values(links={**(links or {}), "original": original[seq]}))
    conn.execute(pt.delete().where(pt.c.record_seq.in_(sorted(original))))


def _raise_states(session: Session, statuses: list[tuple[str, str, int]]) -> None:
    """Record the highest state each wamid reached; a later or repeated lower one never downgrades it."""
    if not statuses:
        return
    mt = MessageState.__table__
    conn = session.connection()
    known: dict[str, tuple[str, int]] = {}
    for part in chunked(sorted({wamid for wamid, _, _ in statuses}), 500):
        known.update((w, (st, seq)) for w, st, seq in conn.execute(
            select(mt.c.wamid, mt.c.state, mt.c.status_seq).where(mt.c.wamid.in_(part))))
    best = dict(known)
    for wamid, state, seq in statuses:
        current = best.get(wamid)
        if items.status_supersedes(state, current[0] if current else None):  # unknown names never count
            best[wamid] = (state, seq)
    new = [{"wamid": w, "state": st, "status_seq": seq} for w, (st, seq) in best.items() if w not in known]
    raised = [{"w": w, "st": st, "sq": seq} for w, (st, seq) in best.items() if w in known and known[w] != (st, seq)]
    insert_rows(conn, mt, new)
    if raised:
        conn.execute(update(mt).where(mt.c.wamid == bindparam("w")).values(state=bindparam("st"), status_seq=bindparam("sq")),
                     raised)
