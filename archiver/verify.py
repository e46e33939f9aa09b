"""Verification: prove the archive is intact by reading the WORM store itself.

Checklist (the step numbers appear in the code):
1. Every checkpoint in the store parses and its Ed25519 signature verifies.
2. Checkpoints form one chain: each names its predecessor's digest, and their seq ranges
   are contiguous from seq 1.
3. Each checkpoint's segment exists and decodes; its records carry exactly the seqs the
   checkpoint names, in order. (3b) Every media record's object exists with its hash.
4. Every record's chain hash recomputes from its predecessor's (architecture.md decision 3).
5. The segment's RFC 6962 Merkle root and its final chain hash match the checkpoint.
6. The catalog agrees with the store: same segments and checkpoints, same hash, kind and
   class for every seq, (6a) one segment row per checkpoint, (6b) no record row outside
   every segment, and (6c) the chain head is the last checkpoint, its seq, hash and digest
   (or an outbox segment still being published follows it).

A segment disposition deleted (``archiver.worm_disposal``: every record in it disposed) is
not missing: with a catalog, its leaf hashes saved before the delete must make the Merkle root
its signed checkpoint names (5), one leaf per seq (3), its catalog rows must end on the
checkpoint's chain hash and all be under destroyed keys (6); it is counted as *disposed*.
The next segment's chain still starts from the checkpoint's signed chain hash (4). A segment
missing without a deletion row is a break, as is a deleted media object no deletion row names.

Errors are IntegrityError naming the first bad seq or object; ``audit`` turns the first one
into a report. See chain.py for the format.

Steps 3-5 of a segment need only its bytes and its checkpoint, so for a large archive they run
in worker processes (:func:`check_segment`, pure). The main process reads the segments, then
takes the findings back strictly in seq order and does what needs the store or the catalog
(3b and 6) segment by segment, so the first error named is the one a single process finds.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.context import BaseContext
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import chain
from archiver.catalog import DisposedKey, Record, Segment, chain_head, positional_marker
from archiver.errors import ArchiverError, IntegrityError, NotFound
from archiver.store import WormStore

_fast_loads: Callable[[bytes], Any] | None
try:
    from orjson import loads as _fast_loads
except ImportError:  # a dependency; without it verification is slower, never different
    _fast_loads = None

log = logging.getLogger(__name__)

_HASH_FIELD = re.compile(rb'"hash":"[0-9a-f]{64}",?')

#: Below this many records, starting worker processes costs more than it saves.
PARALLEL_MIN_RECORDS = 10_000
MAX_WORKERS = 8

#: (seq, hash, kind, retention class) of one sealed record.
Sealed = tuple[int, str, str, str]


@dataclass
class Report:
    """What ``archiver verify --json`` prints."""

    ok: bool
    records: int = 0
    segments: int = 0
    checkpoints: int = 0
    first_error: str | None = None
    pending_segments: int = 0
    disposed_segments: int = 0  # deleted by disposition, checked by their saved leaf hashes
    disposed_records: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def audit(store: WormStore, public_key: Ed25519PublicKey, session: Session | None, *,
          workers: int | None = None) -> Report:
    """Run every step; return a report whose ``first_error`` names the first break.

    Steps 3-5 may run in ``workers`` processes (None: one per CPU for a large archive, when
    this process can fork safely). Findings are still reported in seq order, so the report
    is the same for any number of workers. Raises StoreError when the store cannot be read.
    """
    from archiver import worm_disposal

    report = Report(ok=True)
    skeletons = worm_disposal.segment_skeletons(session) if session is not None else {}
    media_gone = worm_disposal.media_noted(session) if session is not None else set()
    try:
        checkpoints = load_checkpoints(store, public_key)
        report.checkpoints = len(checkpoints)
        with _segment_checks(store, checkpoints, workers, skeletons) as checks:
            for cp, check in zip(checkpoints, checks):
                sealed = settle(store, check, media_gone)
                if check.disposed:
                    assert session is not None  # skeletons come from the catalog
                    verify_disposed(session, cp)
                    report.disposed_segments += 1
                    report.disposed_records += cp.last_seq - cp.first_seq + 1
                    continue
                if session is not None:
                    verify_records(session, cp, sealed)
                report.records += len(sealed)
                report.segments += 1
        if session is not None:
            report.pending_segments = verify_catalog(session, checkpoints)
    except IntegrityError as exc:
        report.ok, report.first_error = False, str(exc)
    return report


def load_checkpoints(store: WormStore, public_key: Ed25519PublicKey) -> list[chain.Checkpoint]:
    """Steps 1-2: every checkpoint, signature-checked, as one contiguous chain."""
    out: list[chain.Checkpoint] = []
    prev_digest, next_seq = "", 1
    for key in store.list("checkpoints/"):
        cp = chain.Checkpoint.from_bytes(store.get(key), key)
        cp.verify(public_key, key)  # 1
        if key != chain.checkpoint_key(cp.last_seq):
            raise IntegrityError(key, f"checkpoint for seq {cp.last_seq} stored under the wrong key")
        if cp.first_seq != next_seq:  # 2
            raise IntegrityError(f"seq {next_seq}", f"no checkpoint covers it ({key} starts at {cp.first_seq})")
        if cp.prev_checkpoint != prev_digest:
            raise IntegrityError(key, "checkpoint does not name the previous checkpoint")
        out.append(cp)
        prev_digest, next_seq = cp.digest(), cp.last_seq + 1
    return out


def verify_segment(store: WormStore, cp: chain.Checkpoint, prev_hash: str) -> list[Sealed]:
    """Steps 3-5 for one segment; return (seq, hash, kind, class) per record. Raises IntegrityError."""
    return settle(store, check_segment(read_segment(store, cp), cp, prev_hash))


def read_segment(store: WormStore, cp: chain.Checkpoint) -> bytes | None:
    """The bytes of the checkpoint's segment, or None when the store has no such object. Raises StoreError."""
    try:
        return store.get(cp.segment)
    except NotFound:
        return None


@dataclass(frozen=True)
class SegmentCheck:
    """What steps 3-5 found in one segment, before anything is reported (see :func:`settle`)."""

    sealed: list[Sealed]
    media: list[dict[str, Any]]  # media records met before the first break: step 3b needs the store
    error: tuple[str, str] | None = None  # (where, reason) of the first break
    disposed: bool = False  # deleted by disposition; checked by its saved leaf hashes


def check_segment(blob: bytes | None, cp: chain.Checkpoint, prev_hash: str,
                  leaves: list[str] | None = None) -> SegmentCheck:
    """Steps 3-5 over a segment's bytes (None: missing). Pure, so it can run in a worker process.

    ``leaves``: the leaf hashes saved when disposition deleted the segment; used only when the
    bytes are missing. Never raises IntegrityError: the first break is returned, with what was
    read before it.
    """
    sealed: list[Sealed] = []
    media: list[dict[str, Any]] = []
    if blob is None and leaves is not None:
        return _check_deleted(leaves, cp)
    try:
        _check_records(blob, cp, prev_hash, sealed, media)
    except IntegrityError as exc:
        return SegmentCheck(sealed, media, (exc.where, str(exc).removeprefix(f"{exc.where}: ")))
    return SegmentCheck(sealed, media)


def _check_deleted(leaves: list[str], cp: chain.Checkpoint) -> SegmentCheck:
    """Steps 3 and 5 for a segment disposition deleted: one saved leaf per seq, making the signed root."""
    if len(leaves) != cp.last_seq - cp.first_seq + 1:
        return SegmentCheck([], [], (cp.segment, "deleted segment's saved leaf hashes do not match its checkpoint's seqs"),
                            disposed=True)
    try:
        root = chain.merkle_root([bytes.fromhex(h) for h in leaves])
    except (ValueError, TypeError):
        root = ""
    if root != cp.merkle_root:
        return SegmentCheck([], [], (cp.segment, "deleted segment's saved leaf hashes do not make its checkpoint's "
                                                 "Merkle root"), disposed=True)
    return SegmentCheck([], [], disposed=True)


def check_stored_segment(store: WormStore, cp: chain.Checkpoint, prev_hash: str,
                         leaves: list[str] | None = None) -> SegmentCheck:
    """:func:`check_segment` reading the segment itself (in a worker, for stores that allow it).

    Raises StoreError when the store cannot be read; it reaches the report in its turn."""
    return check_segment(read_segment(store, cp), cp, prev_hash, leaves)


def settle(store: WormStore, check: SegmentCheck, media_gone: set[str] | frozenset[str] = frozenset()) -> list[Sealed]:
    """Step 3b for the segment's media records, then its first break, in seq order. Raises IntegrityError."""
    for rec in check.media:
        verify_media_object(store, rec, media_gone)
    if check.error is not None:
        raise IntegrityError(*check.error)
    return check.sealed


def _check_records(blob: bytes | None, cp: chain.Checkpoint, prev_hash: str,
                   sealed: list[Sealed], media: list[dict[str, Any]]) -> None:
    """Steps 3-5, filling ``sealed`` and ``media`` as it goes. Raises IntegrityError."""
    if blob is None:
        raise IntegrityError(cp.segment, "segment named by a checkpoint is missing")
    leaves, h = [], prev_hash
    for expected, line in enumerate(chain.segment_lines(blob, cp.segment), cp.first_seq):  # 3
        seq, stated, kind, cls, rec = _fields(line, expected, cp.segment)
        sealed.append((seq, stated, kind, cls))
        if kind == "media":
            media.append({k: rec.get(k) for k in ("seq", "object", "object_sha256")})
        body = _HASH_FIELD.sub(b"", line, count=1)  # canonical bytes minus "hash" (sorted keys)
        h = chain.chain_hash(h, body)  # 4
        if h != stated:
            raise IntegrityError(f"seq {seq}", f"hash {stated[:16]}... does not recompute (expected {h[:16]}...)")
        leaves.append(chain.leaf_hash(body))
    end = cp.first_seq + len(leaves)
    if end - 1 != cp.last_seq:
        raise IntegrityError(f"seq {end}", f"segment {cp.segment} ends before the checkpoint's last seq")
    if chain.merkle_root(leaves) != cp.merkle_root:  # 5
        raise IntegrityError(cp.segment, "Merkle root differs from the checkpoint")
    if h != cp.chain_hash:
        raise IntegrityError(f"seq {cp.last_seq}", "chain hash differs from the checkpoint")


def _fields(line: bytes, expected: int, where: str) -> tuple[int, str, str, str, dict[str, Any]]:
    try:
        rec = _record(line)
        seq, stated, kind, cls = int(rec["seq"]), str(rec["hash"]), str(rec["kind"]), str(rec["class"])
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # Overflow: "seq": Infinity
        raise IntegrityError(f"seq {expected}", f"record in {where} is malformed") from exc
    if seq != expected:
        raise IntegrityError(f"seq {expected}", f"found seq {seq} where {expected} belongs in {where}")
    return seq, stated, kind, cls, rec


def _record(line: bytes) -> Any:
    """``json.loads(line)`` as far as verification reads it, parsed by orjson where that is the same.

    orjson parses about twice as fast, but it refuses some JSON the json module accepts (NaN,
    lone surrogates, a BOM) and reads integers beyond 64 bits as floats. So json.loads decides
    any line orjson refuses, any record whose seq, hash, kind or class is not of its plain type,
    and media records, whose other fields are read too.
    """
    try:
        rec = _fast_loads(line) if _fast_loads is not None else None
    except ValueError:
        rec = None
    if (type(rec) is dict and type(rec.get("seq")) is int and type(rec.get("hash")) is str
            and type(rec.get("class")) is str and type(rec.get("kind")) is str and rec["kind"] != "media"):
        return rec
    return json.loads(line)


# --- segments in worker processes -----------------------------------------------------


@contextmanager
def _segment_checks(store: WormStore, checkpoints: list[chain.Checkpoint], workers: int | None,
                    skeletons: dict[str, list[str]]) -> Iterator[Iterator[SegmentCheck]]:
    """The checks of every checkpoint's segment, in checkpoint order, from ``workers`` processes."""
    jobs = [(cp, prev, skeletons.get(cp.segment))
            for cp, prev in zip(checkpoints, [chain.GENESIS] + [cp.chain_hash for cp in checkpoints[:-1]])]
    count = _worker_count(workers, checkpoints)
    pool = _pool(count) if count > 1 else None
    if pool is None:
        yield (check_segment(read_segment(store, cp), cp, prev, leaves) for cp, prev, leaves in jobs)
        return
    try:
        yield _in_order(pool, store, jobs, ahead=2 * count)
    finally:
        pool.shutdown(cancel_futures=True)


def _pool(count: int) -> Executor | None:
    """``count`` worker processes, or None where this platform cannot run them (then: one process)."""
    try:
        return ProcessPoolExecutor(count, mp_context=_mp_context())
    except (ImportError, NotImplementedError, OSError) as exc:  # e.g. no POSIX semaphores in a sandbox
        log.warning("verify.no_workers workers=%d reason=%s", count, exc.__class__.__name__)
        return None


def _in_order(pool: Executor, store: WormStore, jobs: list[tuple[chain.Checkpoint, str, list[str] | None]],
              ahead: int) -> Iterator[SegmentCheck]:
    """Read segments here and check them in ``pool``, at most ``ahead`` in flight; yield in order."""
    queued: deque[Future[SegmentCheck]] = deque()
    for cp, prev, leaves in jobs:
        queued.append(_submit(pool, store, cp, prev, leaves))
        if len(queued) >= ahead:
            yield queued.popleft().result()
    while queued:
        yield queued.popleft().result()


def _submit(pool: Executor, store: WormStore, cp: chain.Checkpoint, prev: str,
            leaves: list[str] | None) -> Future[SegmentCheck]:
    """Queue one segment's check; a store failure waits in the future until its turn to be reported."""
    if store.process_safe:
        return pool.submit(check_stored_segment, store, cp, prev, leaves)
    try:
        blob = read_segment(store, cp)
    except ArchiverError as exc:
        failed: Future[SegmentCheck] = Future()
        failed.set_exception(exc)
        return failed
    return pool.submit(check_segment, blob, cp, prev, leaves)


def _worker_count(workers: int | None, checkpoints: list[chain.Checkpoint]) -> int:
    """How many processes check segments: as asked, else one per CPU when it pays and forking is safe."""
    if workers is not None:
        return max(1, min(workers, len(checkpoints)))
    records = checkpoints[-1].last_seq if checkpoints else 0
    if records < PARALLEL_MIN_RECORDS or not _can_fork():
        return 1
    return min(_cpus(), len(checkpoints), MAX_WORKERS)


def _cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: the CPUs this process may use
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _can_fork() -> bool:
    # Forking a process with other threads can deadlock the child; spawning costs more than it saves.
    return "fork" in mp.get_all_start_methods() and threading.active_count() == 1


def _mp_context() -> BaseContext:
    return mp.get_context("fork" if _can_fork() else "spawn")


def verify_media_object(store: WormStore, rec: dict[str, Any], media_gone: set[str] | frozenset[str] = frozenset()) -> None:
    """Step 3b: the attachment a media record names exists with the hash it states (or
    disposition deleted it: ``media_gone``)."""
    key, want = rec.get("object"), rec.get("object_sha256")
    try:
        info = store.head(str(key))
    except NotFound as exc:
        if str(key) in media_gone:
            return
        raise IntegrityError(str(key), f"media object named by seq {rec['seq']} is missing") from exc
    if info.sha256 is not None and info.sha256 != want:
        raise IntegrityError(str(key), f"media object hash differs from seq {rec['seq']}")


def verify_catalog(session: Session, checkpoints: list[chain.Checkpoint]) -> int:
    """Step 6: the catalog agrees with the store. Returns the number of outbox segments.

    Raises IntegrityError naming the first segment whose row and checkpoint disagree (or
    that has only one of the two), a catalog record beyond every segment, or the chain head.
    """
    segs = session.scalars(select(Segment).order_by(Segment.first_seq)).all()
    stored = [s for s in segs if s.state == "stored"]
    for seg, cp in zip(stored, checkpoints):  # 6a: one stored segment row per checkpoint
        if (seg.key, seg.first_seq, seg.last_seq, seg.merkle_root, seg.checkpoint_digest) != (
                cp.segment, cp.first_seq, cp.last_seq, cp.merkle_root, cp.digest()):
            raise IntegrityError(seg.key, "catalog segment row differs from the store's checkpoint")
    if len(stored) > len(checkpoints):
        seg = stored[len(checkpoints)]
        raise IntegrityError(seg.checkpoint_key, f"checkpoint of catalog segment {seg.key} is missing from the store")
    if len(checkpoints) > len(stored):
        cp = checkpoints[len(stored)]
        raise IntegrityError(chain.checkpoint_key(cp.last_seq), f"no catalog segment row for {cp.segment}")
    covered = segs[-1].last_seq if segs else 0
    stray = session.scalar(select(Record.seq).where((Record.seq > covered) | (Record.seq < 1))
                           .order_by(Record.seq).limit(1))
    if stray is not None:  # 6b: rows inside a segment's range were compared record by record
        raise IntegrityError(f"seq {stray}", "catalog row has no sealed record (beyond every segment)")
    head = chain_head(session)
    last = checkpoints[-1] if checkpoints else None
    if last and len(segs) == len(stored) and (head.seq, head.hash, head.checkpoint) != (
            last.last_seq, last.chain_hash, last.digest()):  # 6c
        raise IntegrityError(f"seq {head.seq}", "catalog chain head differs from the last checkpoint")
    return len(segs) - len(stored)


def verify_disposed(session: Session, cp: chain.Checkpoint) -> None:
    """Step 6 for a deleted segment: one catalog row per seq, the last one's hash the checkpoint's
    chain hash, every one under a destroyed key. Raises IntegrityError."""
    rows = _catalog_rows(session, cp.first_seq, cp.last_seq)
    if [r[0] for r in rows] != list(range(cp.first_seq, cp.last_seq + 1)):
        raise IntegrityError(cp.segment, "deleted segment's records are not all in the catalog")
    if rows[-1][1] != cp.chain_hash:
        raise IntegrityError(f"seq {cp.last_seq}", "catalog hash differs from the deleted segment's checkpoint")
    live = session.scalar(select(Record.seq).outerjoin(DisposedKey, DisposedKey.key_id == Record.key_id)
                          .where(Record.seq.between(cp.first_seq, cp.last_seq), DisposedKey.key_id.is_(None))
                          .order_by(Record.seq).limit(1))
    if live is not None:
        raise IntegrityError(f"seq {live}", f"segment {cp.segment} was deleted but this record was not disposed")


def verify_records(session: Session, cp: chain.Checkpoint, sealed: list[Sealed]) -> None:
    """Step 6, record by record: catalog seq, hash, kind and class equal the sealed record's.

    Raises IntegrityError naming the first sealed seq whose catalog row differs or is missing.
    """
    rows = _catalog_rows(session, cp.first_seq, cp.last_seq)
    if rows == sealed:
        return
    # Seqs are the catalog's primary key and the sealed ones run first..last without a gap,
    # so a row whose seq is not the sealed record's at the same position means a missing row.
    for row, rec in zip(rows, sealed):
        if row[0] != rec[0]:
            raise IntegrityError(f"seq {rec[0]}", f"sealed record in {cp.segment} has no catalog row")
        if row != rec:
            raise IntegrityError(f"seq {rec[0]}", "catalog row differs from the sealed record")
    if len(rows) < len(sealed):
        raise IntegrityError(f"seq {sealed[len(rows)][0]}", f"sealed record in {cp.segment} has no catalog row")
    if len(rows) > len(sealed):
        raise IntegrityError(f"seq {rows[len(sealed)][0]}", f"catalog row has no sealed record in {cp.segment}")


def _catalog_rows(session: Session, first: int, last: int) -> list[Sealed]:
    """(seq, hash, kind, class) of the catalog's records first..last, in seq order.

    Straight from the DBAPI cursor (tuples, one fetchall): this runs beside the workers and
    row objects cost more than the check itself.
    """
    marker = positional_marker(session.get_bind().dialect)
    if marker is None:
        query = (select(Record.seq, Record.hash, Record.kind, Record.retention_class)
                 .where(Record.seq.between(first, last)).order_by(Record.seq))
        return [tuple(row) for row in session.connection().execute(query)]  # type: ignore[misc]  # the 4 columns
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(f"SELECT seq, hash, kind, retention_class FROM records WHERE seq BETWEEN {marker} AND {marker} "  # noqa: S608 - placeholders only
                       "ORDER BY seq", (first, last))
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()
