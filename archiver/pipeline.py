"""The sealer's performance plumbing: how the plan -> write -> publish stages of
``sealer`` run, not what they do.

- ``Pipeline``: planning on the calling thread, the writer (commit) and the publisher (put
  to WORM) on two threads, queues of one between them. Planning is Python work and holds
  the GIL; the other two mostly wait in C (zlib, SQLite, file and network I/O), so on
  threads they overlap with it.
- ``ForkedWriter``: with a backlog of several batches, the local store and an SQLite
  catalog (``forkable``), the writer and publisher run in a forked child process instead,
  so the planner no longer shares its interpreter's GIL with their Python work: batches go
  over a pipe (stored lines and catalog rows, a few MB each), the child reports each commit.
- ``steady_allocator`` and ``fewer_collections``: malloc and garbage-collector settings
  that keep the sealer's memory flat and its time in planning.

Order and crash safety are the stages' (see ``sealer``): batches commit strictly in order,
any error stops every stage, and batches planned but not committed are planned again by
the next run. The stages come in as a ``Stages`` object, so this module knows nothing of
the catalog tables they write.
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
from typing import Callable, Iterator, Protocol

from archiver import processes
from archiver.catalog import Segment, chain_head, unsealed_count
from archiver.planner import Batch, Carry
from archiver.services import Services

log = logging.getLogger(__name__)

FORK_BACKLOG = 4000  # journal rows (four batches): from this backlog on, the writer gets its own process


class Stages(Protocol):
    """The sealer's stages for one run (``sealer`` implements them)."""

    services: Services
    batch_rows: int  # journal rows per batch

    def plan(self, carry: Carry, after_id: int, no: int) -> tuple[Batch | None, int]:
        """The next batch after journal id ``after_id`` (None when done) and the new ``after_id``."""

    def write(self, batch: Batch) -> list[Segment]:
        """Commit ``batch``; return its outbox segments. Raises what the commit raised."""

    def publish(self, segments: list[Segment]) -> None:
        """Put ``segments`` to WORM and confirm them. Raises StoreError."""


def steady_allocator() -> None:
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


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
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


class Pipeline:
    """Three stages in order: plan (caller) -> commit (writer) -> put to WORM (publisher).

    Planning is Python work and holds the GIL; the other two mostly wait in C (zlib, SQLite,
    file and network I/O), so on threads they overlap with it. For a large backlog the
    writer and publisher move to a child process (``ForkedWriter``), where their Python
    work no longer takes the planner's GIL. Queues of one keep memory bounded.
    """

    def __init__(self, stages: Stages) -> None:
        self.stages = stages
        self.to_writer: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self.to_publisher: queue.Queue[tuple[int, int, list[Segment]] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.sealed = 0

    def run(self, max_batches: int | None) -> int:
        """Plan here, commit and publish on two threads (or in a writer process); raise the
        first error of any stage."""
        if forkable(self.stages, max_batches):
            return ForkedWriter(self.stages).run(max_batches)
        carry = _carry(self.stages.services)

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
                batch, after_id = self.stages.plan(carry, after_id, n)
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
        carry = _carry(self.stages.services)
        after_id, n = 0, 0
        while max_batches is None or n < max_batches:
            batch, after_id = self.stages.plan(carry, after_id, n)
            if batch is None:
                break
            segments = self.stages.write(batch)
            carry.committed.add(batch.no)
            self.stages.publish(segments)
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
                segments = self.stages.write(batch)
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
                self.stages.publish(segments)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the planner's thread
                self.error = exc
                continue
            self.sealed += records
            log.info("seal.stored journal_rows=%d records=%d", journal_rows, records)


class ForkedWriter:
    """The pipeline with its writer and publisher in a forked child process.

    The parent plans and sends each batch down a pipe; the child commits and publishes
    them in order on its own interpreter (the same ``Pipeline`` stages) and reports each
    commit (the planner's ``Carry`` then forgets that batch's keys), an early error, and
    at the end the number of records sealed and the first error of any stage.
    """

    def __init__(self, stages: Stages) -> None:
        self.stages = stages
        self.done: tuple[int, BaseException | None] | None = None
        self.failed = False

    def run(self, max_batches: int | None) -> int:
        ctx = multiprocessing.get_context("fork")
        reports, child_out = ctx.Pipe(duplex=False)
        child_in, batches = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_writer_process, args=(self.stages, child_in, child_out),
                            name="sealer-writer", daemon=True)
        carry = _carry(self.stages.services)
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
            batch, after_id = self.stages.plan(carry, after_id, n)
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
    from archiver.policy_records import in_force

    with services.sessions() as session:
        head = chain_head(session)
        return Carry(seq=head.seq, hash=head.hash, in_force=in_force(session))


def forkable(stages: Stages, max_batches: int | None) -> bool:
    """A writer process pays off for a backlog of several batches, where ``fork`` exists, with a
    store the child may use (``process_safe``: the local folder) and an SQLite file catalog.

    Not PostgreSQL: the child would inherit the parent's pooled libpq connections, and
    freeing them there sends the server a terminate for sessions the parent still uses.
    SQLite connections freed in the child release nothing of the parent's (POSIX locks
    belong to the process). That pairing is also the GIL-bound one: with S3, threads wait
    on the network.
    """
    services = stages.services
    if not hasattr(os, "fork") or not services.store.process_safe:
        return False
    if max_batches is not None and max_batches * stages.batch_rows < FORK_BACKLOG:
        return False
    if services.engine.dialect.name != "sqlite" or (services.engine.url.database or ":memory:") == ":memory:":
        return False
    with services.sessions() as session:
        return unsealed_count(session) >= FORK_BACKLOG


def _writer_process(stages: Stages, batches: Connection, reports: Connection) -> None:
    """The child of ``ForkedWriter``: commit and publish what arrives, report back, exit."""
    # Not needed for safety (each batch commits atomically, in order, checked against the
    # chain head), but an orphan would keep the sealer's lock file and finish its batches alone.
    processes.die_with_parent()
    stages.services.after_fork()
    pipeline = Pipeline(stages)
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


