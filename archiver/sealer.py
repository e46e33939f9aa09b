"""The sealer: journal rows -> records -> hash chain -> locked WORM segments + checkpoints.

One writer at a time (``catalog.leader_lock``). Each batch runs in three steps whose order
is the crash-safety argument:

1. *plan* (one transaction): parse the journal rows, de-duplicate items, assign seqs, encrypt,
   chain, frame the segment(s) and checkpoint(s); insert records, mark the journal rows
   sealed and move the chain head, keeping the segment bytes in the catalog (outbox).
   Data keys are committed before any ciphertext under them leaves the process. The journal
   bodies are dropped in the same transaction: from then on the outbox holds them, sealed.
2. *publish*: put each "writing" segment, then its checkpoint, to the WORM store.
3. *confirm* (one transaction): mark the segment "stored" and drop its outbox bytes.

A crash before 1 commits loses nothing (the journal still holds the rows); after 1, the next
run re-puts the identical bytes (idempotent), so nothing is sealed twice. While the store is
down, step 2 fails, no new batch is planned, and the journal grows until it returns.

Pipelining: ``planner`` does the Python work of batch k+1 (parse, de-duplicate, encrypt,
chain, sign) on the calling thread while a writer thread compresses and commits batch k and
a publisher thread puts batch k-1 to WORM (work that mostly releases the GIL: zlib, SQLite,
file and network I/O). Batches are still committed strictly in order, each in its own
transaction; the planner carries the chain tip and the item keys of batches not yet
committed, so de-duplication sees them. Any error stops all three; batches planned but not
committed are dropped and planned again next run.

With a backlog of several batches, the local store and an SQLite catalog (``_forkable``),
the writer and publisher run in a forked child process instead of threads, so the planner
no longer shares its interpreter's GIL with their Python work: the batches go over a pipe
(stored lines and catalog rows, a few MB each) and the child reports each commit back.
Everything else, order and crash safety included, is the same.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import queue
import threading
from multiprocessing.connection import Connection
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import Text, bindparam, insert, select, type_coerce, update
from sqlalchemy.orm import Session

from archiver import chain, items, processes
from archiver.catalog import (
    DuplicateHit, Journal, Media, MessageState, PendingLink, Record, Segment, chain_head, chunked, insert_rows,
    leader_lock, unsealed_count,
)
from archiver.journal import mark_sealed
from archiver.planner import Batch, Carry, Planner, Run, ensure_data_keys
from archiver.services import Services

log = logging.getLogger(__name__)

MAX_JOURNAL_ROWS = 1000
FORK_BACKLOG = 4 * MAX_JOURNAL_ROWS  # from this many journal rows on, the writer gets its own process


# --- entry points ---------------------------------------------------------------------------


def _steady_allocator() -> None:
    """Keep big buffers (segments, blobs: megabytes each) out of the malloc heap.

    glibc raises its mmap threshold after a large block is freed, so later segment buffers
    come from the heap of whichever thread made them and fragment it: the sealer's memory
    then creeps up with the size of the backlog. A fixed threshold gives each such buffer
    its own mapping, returned to the system when freed. Elsewhere (not glibc): nothing.
    """
    global _ALLOCATOR_SET
    if _ALLOCATOR_SET:
        return
    _ALLOCATOR_SET = True
    try:
        processes.libc().mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


M_MMAP_THRESHOLD = -3  # glibc malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value, kept fixed
_ALLOCATOR_SET = False


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
        publish_outbox(services)
        _steady_allocator()
        pipeline = _Pipeline(services)
        with _fewer_collections():
            return pipeline.run(max_batches) if pipelined else pipeline.run_inline(max_batches)


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while sealing.

    Planning makes about ten container objects per record, all alive until their batch is
    committed; at the default threshold (a collection every 700 new containers) the
    collector scans them again and again, about a seventh of the sealer's time. Batches
    hold no reference cycles, so reference counting frees them; collections still run,
    every 10,000 new containers. The threshold is process-wide: restored afterwards.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


GC_THRESHOLD = 10_000


def publish_outbox(services: Services) -> None:
    """Put every planned segment and checkpoint to WORM, then confirm. Raises StoreError."""
    with services.sessions() as session:
        pending = session.scalars(select(Segment).where(Segment.state == "writing").order_by(Segment.first_seq)).all()
    _publish(services, pending)


def _publish(services: Services, segments: Iterable[Segment]) -> None:
    """Steps 2 and 3 for planned segments, in seq order. Raises StoreError."""
    for seg in segments:
        assert seg.blob is not None and seg.checkpoint_blob is not None
        services.store.put_locked(seg.key, seg.blob, seg.retain_until)
        services.store.put_locked(seg.checkpoint_key, seg.checkpoint_blob, seg.retain_until)
        _confirm(services, seg.id)
        log.info("segment.stored key=%s first=%d last=%d", seg.key, seg.first_seq, seg.last_seq)


def _confirm(services: Services, segment_id: int) -> None:
    """Step 3: the segment is in WORM; drop the outbox bytes."""
    with services.sessions.begin() as session:
        session.execute(update(Segment).where(Segment.id == segment_id)
                        .values(state="stored", blob=None, checkpoint_blob=None))


# --- the pipeline -----------------------------------------------------------------------------


class _Pipeline:
    """Three stages in order: plan (caller) -> commit (writer) -> put to WORM (publisher).

    Planning is Python work and holds the GIL; the other two mostly wait in C (zlib, SQLite,
    file and network I/O), so on threads they overlap with it. For a large backlog the
    writer and publisher move to a child process (``_ForkedWriter``), where their Python
    work no longer takes the planner's GIL. Queues of one keep memory bounded.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.to_writer: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self.to_publisher: queue.Queue[tuple[int, int, list[Segment]] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.sealed = 0

    def run(self, max_batches: int | None) -> int:
        """Plan here, commit and publish on two threads (or in a writer process); raise the
        first error of any stage."""
        if _forkable(self.services, max_batches):
            return _ForkedWriter(self.services).run(max_batches)
        carry = _carry(self.services)

        def committed(no: int) -> None:
            with carry.lock:
                carry.committed.add(no)

        threads = [threading.Thread(target=self._writer, args=(self.to_writer.get, committed), name="sealer-writer",
                                    daemon=True),
                   threading.Thread(target=self._publisher, name="sealer-publisher", daemon=True)]
        for t in threads:
            t.start()
        try:
            after_id, n = 0, 0
            while (max_batches is None or n < max_batches) and self.error is None:
                batch, after_id = _plan(self.services, carry, after_id, n)
                if batch is None:
                    break
                self.to_writer.put(batch)  # never blocks for good: the writer drains to the end
                n += 1
        finally:
            self.to_writer.put(None)
            for t in threads:
                t.join()
        if self.error is not None:
            raise self.error
        return self.sealed

    def run_inline(self, max_batches: int | None) -> int:
        """The same stages, one after another on this thread."""
        carry = _carry(self.services)
        after_id, n = 0, 0
        while max_batches is None or n < max_batches:
            batch, after_id = _plan(self.services, carry, after_id, n)
            if batch is None:
                break
            segments = _write(self.services, batch)
            carry.committed.add(batch.no)
            _publish(self.services, segments)
            self.sealed += batch.record_count
            n += 1
        return self.sealed

    # After a failure each stage keeps draining its queue (skipping the work) until the end
    # marker, so no thread ever blocks on a queue nobody reads.

    def _writer(self, batches: Callable[[], Batch | None], committed: Callable[[int], None]) -> None:
        """Commit batches in order, telling ``committed`` each batch number once it is committed."""
        while (batch := batches()) is not None:
            if self.error is not None:
                continue
            try:
                segments = _write(self.services, batch)
                committed(batch.no)
                self.to_publisher.put((batch.parsed_rows, batch.record_count, segments))
                del batch  # let the records go before waiting for the next one
            except BaseException as exc:  # noqa: BLE001 - re-raised on the planner's thread
                self.error = exc
        self.to_publisher.put(None)

    def _publisher(self) -> None:
        """Put committed segments to WORM with the bytes in hand (not re-read from the outbox)."""
        while (item := self.to_publisher.get()) is not None:
            if self.error is not None:
                continue
            journal_rows, records, segments = item
            try:
                _publish(self.services, segments)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the planner's thread
                self.error = exc
                continue
            self.sealed += records
            log.info("seal.stored journal_rows=%d records=%d", journal_rows, records)


class _ForkedWriter:
    """The pipeline with its writer and publisher in a forked child process.

    The parent plans and sends each batch down a pipe; the child commits and publishes
    them in order on its own interpreter (the same ``_Pipeline`` stages) and reports each
    commit (the planner's ``Carry`` then forgets that batch's keys), an early error, and
    at the end the number of records sealed and the first error of any stage.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.done: tuple[int, BaseException | None] | None = None
        self.failed = False

    def run(self, max_batches: int | None) -> int:
        ctx = multiprocessing.get_context("fork")
        reports, child_out = ctx.Pipe(duplex=False)
        child_in, batches = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_writer_process, args=(self.services, child_in, child_out),
                            name="sealer-writer", daemon=True)
        carry = _carry(self.services)
        child.start()
        child_in.close()
        child_out.close()
        try:
            self._feed(batches, reports, carry, max_batches)
        finally:
            try:
                batches.send(None)
            except OSError:  # the child is gone; its end report (or EOF) says why
                pass
            batches.close()
            self._collect(reports, carry, block=True)
            child.join()
            reports.close()
        assert self.done is not None
        sealed, error = self.done
        if error is not None:
            raise error
        return sealed

    def _feed(self, batches: Connection, reports: Connection, carry: Carry, max_batches: int | None) -> None:
        """Plan batches and send them to the child until the journal is done or the child fails."""
        after_id, n = 0, 0
        while (max_batches is None or n < max_batches) and not self.failed:
            self._collect(reports, carry, block=False)
            if self.failed:
                return
            batch, after_id = _plan(self.services, carry, after_id, n)
            if batch is None:
                return
            try:
                batches.send(batch)  # blocks while the child is busy: at most one batch in the pipe
            except OSError:  # the child is gone; its end report (or EOF) says why
                return
            n += 1

    def _collect(self, reports: Connection, carry: Carry, *, block: bool) -> None:
        """Take the child's reports: commits now, and (blocking) until its end report."""
        while self.done is None and (block or reports.poll()):
            try:
                what, *rest = reports.recv()
            except EOFError:
                self.done = (0, RuntimeError("the sealer's writer process exited without reporting"))
                return
            if what == "committed":
                with carry.lock:
                    carry.committed.add(rest[0])
            elif what == "failed":
                self.failed = True
            else:
                self.done = (rest[0], rest[1])


def _carry(services: Services) -> Carry:
    """What the planner carries across batches, starting from the chain head."""
    with services.sessions() as session:
        head = chain_head(session)
        return Carry(seq=head.seq, hash=head.hash)


def _forkable(services: Services, max_batches: int | None) -> bool:
    """A writer process pays off for a backlog of several batches, where ``fork`` exists, with a
    store the child may use (``process_safe``: the local folder) and an SQLite file catalog.

    Not PostgreSQL: the child would inherit the parent's pooled libpq connections, and
    freeing them there sends the server a terminate for sessions the parent still uses.
    SQLite connections freed in the child release nothing of the parent's (POSIX locks
    belong to the process). That pairing is also the GIL-bound one: with S3, threads wait
    on the network.
    """
    if not hasattr(os, "fork") or not getattr(services.store, "process_safe", False):
        return False
    if max_batches is not None and max_batches * MAX_JOURNAL_ROWS < FORK_BACKLOG:
        return False
    if services.engine.dialect.name != "sqlite" or (services.engine.url.database or ":memory:") == ":memory:":
        return False
    with services.sessions() as session:
        return unsealed_count(session) >= FORK_BACKLOG


def _writer_process(services: Services, batches: Connection, reports: Connection) -> None:
    """The child of ``_ForkedWriter``: commit and publish what arrives, report back, exit."""
    # Not needed for safety (each batch commits atomically, in order, checked against the
    # chain head), but an orphan would keep the sealer's lock file and finish its batches alone.
    processes.die_with_parent()
    services.after_fork()
    pipeline = _Pipeline(services)
    publisher = threading.Thread(target=pipeline._publisher, name="sealer-publisher", daemon=True)
    publisher.start()
    told = False

    def receive() -> Batch | None:
        nonlocal told
        if pipeline.error is not None and not told:
            reports.send(("failed",))  # the planner stops; this side drains what is in the pipe
            told = True
        try:
            return batches.recv()  # type: ignore[no-any-return]  # the planner sends Batch objects
        except EOFError:  # the planner went away without its end marker: commit nothing more
            pipeline.error = pipeline.error or RuntimeError("the sealer's planner went away")
            return None

    pipeline._writer(receive, lambda no: reports.send(("committed", no)))
    publisher.join()
    reports.send(("done", pipeline.sealed, _portable(pipeline.error)))


def _portable(exc: BaseException | None) -> BaseException | None:
    """``exc`` if it survives pickling (to be raised in the parent), else a RuntimeError naming it."""
    if exc is None:
        return None
    try:
        return pickle.loads(pickle.dumps(exc))  # type: ignore[no-any-return]  # noqa: S301 - our own exception, not input
    except Exception:  # noqa: BLE001 - any unpicklable exception becomes a plain one
        return RuntimeError(f"{exc.__class__.__name__} in the sealer's writer process")


def _plan(services: Services, carry: Carry, after_id: int, no: int,
          limit: int | None = None) -> tuple[Batch | None, int]:
    """Plan the next batch of journal rows after ``after_id`` (no catalog writes but data keys)."""
    carry.forget_committed()
    with services.sessions() as session:
        rows = session.execute(  # plain rows, not ORM objects: only these columns are read
            select(Journal.id, Journal.source, Journal.body, type_coerce(Journal.meta, Text).label("meta"))
            .where(Journal.sealed.is_(False), Journal.id > after_id)
            .order_by(Journal.id).limit(limit or MAX_JOURNAL_ROWS)
        ).all()
    if not rows:
        return None, after_id
    planner = Planner(services)
    for row in rows:
        planner.add_journal_row(row)  # type: ignore[arg-type]  # a Row of the Journal columns it reads
    planner.data_keys = ensure_data_keys(services, planner.scopes(), carry.data_keys)
    with services.sessions() as session:
        batch = planner.plan(session, carry, no)
    return batch, rows[-1].id


def _write(services: Services, batch: Batch) -> list[Segment]:
    """Step 1's catalog half for one planned batch: frame, insert, move the head, in one commit.

    Returns the committed outbox segments (detached, bytes loaded) for publishing.
    """
    framed = [_frame(run) for run in batch.runs]  # outside the write lock; zlib runs without the GIL
    with services.sessions.begin() as session:
        head = chain_head(session)
        if head.seq != batch.first_seq - 1 or head.hash != batch.prev_hash:
            raise RuntimeError(f"chain head moved under the sealer (at {head.seq}, planned from {batch.first_seq - 1})")
        segments = [_add_segment(services, session, run, blob, root, head) for run, (blob, root) in zip(batch.runs, framed)]
        # The bodies go now: from this commit on the outbox segment holds them (encrypted).
        mark_sealed(session.connection(), batch.journal)
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
        merkle_root=root, last_hash=run.last_hash, sha256=chain.sha256_hex(blob), size=len(blob),
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
