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

Pipelining: the Python work of planning batch k+1 (parse, de-duplicate, encrypt, chain) runs
on the calling thread while a writer thread compresses, commits and publishes batch k (work
that mostly releases the GIL: zlib, SQLite, file and network I/O). Batches are still
committed strictly in order, each in its own transaction; the planner carries the chain tip
and the item keys of batches not yet committed, so de-duplication sees them. Any error stops
both; batches planned but not committed are dropped and planned again next run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import queue
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import Text, insert, select, type_coerce, update
from sqlalchemy.orm import Session

from archiver import chain, items, keys
from archiver.catalog import (
    DataKey, DuplicateHit, Journal, Media, MessageState, Record, Segment, chain_head, insert_rows, leader_lock,
)
from archiver.errors import StoreError
from archiver.journal import mark_sealed
from archiver.services import Services

log = logging.getLogger(__name__)

MAX_JOURNAL_ROWS = 1000
SWITCH_INTERVAL = 0.0005  # seconds; see _Pipeline.run


@dataclass
class Pending:
    """A record planned in this batch, before its seq is known."""

    kind: str
    plaintext: bytes = field(repr=False)
    contact: str | None = field(default=None, repr=False)
    type: str | None = None
    item_key: str | None = None
    wamid: str | None = None
    occurred_at: int | None = None
    journal_id: int | None = None
    delivery: "Pending | None" = None
    links: dict[str, Any] = field(default_factory=dict)  # name -> seq, or Pending in this batch
    clear: dict[str, Any] = field(default_factory=dict)  # extra clear fields (media object)
    media: tuple[items.MediaRef, ...] = ()
    state: str | None = None
    seq: int = 0


def key_digest(natural_key: str) -> str:
    """What goes in the clear for a de-duplication key: its SHA-256."""
    return hashlib.sha256(natural_key.encode("utf-8")).hexdigest()


def retention_class(kind: str) -> str:
    """Retention class of a record kind (the service's own records form their own stream)."""
    return "audit" if kind in ("audit",) else "default"


# --- entry points ---------------------------------------------------------------------------


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
        pipeline = _Pipeline(services)
        return pipeline.run(max_batches) if pipelined else pipeline.run_inline(max_batches)


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


@dataclass
class _Carry:
    """What the planner knows that the catalog may not show yet (batches not committed)."""

    seq: int
    hash: str
    checkpoint: str  # digest of the last checkpoint planned
    keys: dict[int, dict[str, int]] = field(default_factory=dict)  # batch no -> item digest -> seq
    committed: set[int] = field(default_factory=set)  # batch nos the writer has committed
    data_keys: dict[str, bytes] = field(default_factory=dict, repr=False)  # unwrapped, this run only
    lock: threading.Lock = field(default_factory=threading.Lock)

    def forget_committed(self) -> None:
        """Drop keys of committed batches (call *before* reading the catalog, never after)."""
        with self.lock:
            for n in self.committed:
                self.keys.pop(n, None)
            self.committed.clear()

    def known(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for batch in self.keys.values():
            out.update(batch)
        return out


@dataclass
class _Run:
    """One segment's worth of chained records, its signed checkpoint and catalog rows."""

    cls: str
    first: int
    last: int
    lines: list[bytes]
    rows: list[dict[str, Any]]
    retain_until: datetime
    last_hash: str
    checkpoint: chain.Checkpoint
    prev_checkpoint: str


@dataclass
class _Batch:
    """One planned batch, handed from the planner to the writer."""

    no: int
    parsed_rows: int
    journal: dict[int, int]  # journal id -> delivery seq
    runs: list[_Run]
    records: list[Pending]
    dups: list[tuple["Pending | int", Pending, str]]
    first_seq: int
    prev_hash: str


class _Pipeline:
    """Three threads in order: plan (caller) -> commit (writer) -> put to WORM (publisher).

    Planning is Python work and holds the GIL; the other two mostly wait in C (zlib, SQLite,
    file and network I/O), so they overlap with it. Queues of one keep memory bounded.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.to_writer: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)
        self.to_publisher: queue.Queue[tuple[int, int, list[Segment]] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.sealed = 0

    def run(self, max_batches: int | None) -> int:
        """Plan here, commit and publish on two threads; raise the first error of any stage."""
        carry = self._carry()
        threads = [threading.Thread(target=self._writer, args=(carry,), name="sealer-writer", daemon=True),
                   threading.Thread(target=self._publisher, name="sealer-publisher", daemon=True)]
        # The other stages come back from C and need the GIL from the planner; a short switch
        # interval keeps each from idling up to 5 ms per call.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
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
            sys.setswitchinterval(switch)
        if self.error is not None:
            raise self.error
        return self.sealed

    def run_inline(self, max_batches: int | None) -> int:
        """The same stages, one after another on this thread."""
        carry = self._carry()
        after_id, n = 0, 0
        while max_batches is None or n < max_batches:
            batch, after_id = _plan(self.services, carry, after_id, n)
            if batch is None:
                break
            segments = _write(self.services, batch)
            carry.committed.add(batch.no)
            _publish(self.services, segments)
            self.sealed += len(batch.records)
            n += 1
        return self.sealed

    def _carry(self) -> _Carry:
        with self.services.sessions() as session:
            head = chain_head(session)
            return _Carry(seq=head.seq, hash=head.hash, checkpoint=head.checkpoint)

    # After a failure each stage keeps draining its queue (skipping the work) until the end
    # marker, so no thread ever blocks on a queue nobody reads.

    def _writer(self, carry: _Carry) -> None:
        """Commit batches in order."""
        while (batch := self.to_writer.get()) is not None:
            if self.error is not None:
                continue
            try:
                segments = _write(self.services, batch)
                with carry.lock:
                    carry.committed.add(batch.no)
                self.to_publisher.put((batch.parsed_rows, len(batch.records), segments))
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


def _plan(services: Services, carry: _Carry, after_id: int, no: int,
          limit: int | None = None) -> tuple[_Batch | None, int]:
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
    planner = _Planner(services)
    for row in rows:
        planner.add_journal_row(row)
    planner.data_keys = ensure_data_keys(services, planner.scopes(), carry.data_keys)
    with services.sessions() as session:
        batch = planner.plan(session, carry, no)
    return batch, rows[-1].id


def _write(services: Services, batch: _Batch) -> list[Segment]:
    """Step 1's catalog half for one planned batch: frame, insert, move the head, in one commit.

    Returns the committed outbox segments (detached, bytes loaded) for publishing.
    """
    blobs = [chain.encode_segment(run.lines) for run in batch.runs]  # zlib runs without the GIL
    for run in batch.runs:
        run.lines = []
    with services.sessions.begin() as session:
        head = chain_head(session)
        if head.seq != batch.first_seq - 1 or head.hash != batch.prev_hash:
            raise RuntimeError(f"chain head moved under the sealer (at {head.seq}, planned from {batch.first_seq - 1})")
        segments = [_add_segment(session, run, blob, head) for run, blob in zip(batch.runs, blobs)]
        # The bodies go now: from this commit on the outbox segment holds them (encrypted).
        mark_sealed(session.connection(), batch.journal)
        _side_tables(session, batch.records, batch.dups)
    return segments


def _add_segment(session: Session, run: _Run, blob: bytes, head: Any) -> Segment:
    """Put one framed segment and its checkpoint in the outbox and insert its records."""
    if head.checkpoint != run.prev_checkpoint:
        raise RuntimeError(f"checkpoint chain moved under the sealer (before seq {run.first})")
    cp = run.checkpoint
    seg = Segment(
        key=cp.segment, retention_class=run.cls, first_seq=run.first, last_seq=run.last, records=len(run.rows),
        merkle_root=cp.merkle_root, last_hash=run.last_hash, sha256=chain.sha256_hex(blob), size=len(blob),
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


def _side_tables(session: Session, records: list[Pending], dups: list[tuple[Pending | int, Pending, str]]) -> None:
    """Duplicate hits, highest status per wamid, and the media fetch queue."""
    if dups:
        session.connection().execute(insert(DuplicateHit.__table__), [
            {"record_seq": prior if isinstance(prior, int) else prior.seq, "delivery_seq": delivery.seq, "kind": kind}
            for prior, delivery, kind in dups])
    statuses = [r for r in records if r.kind == "status" and r.wamid and r.state]
    known = {m.wamid: m for m in session.scalars(
        select(MessageState).where(MessageState.wamid.in_(sorted({r.wamid for r in statuses if r.wamid}))))}
    for r in statuses:
        _raise_state(session, known, r)
    media = [{"record_seq": r.seq, "media_id": m.media_id, "expected_sha256": m.sha256, "mime_type": m.mime_type,
              "key_id": r.clear["kid"]} for r in records for m in r.media]
    if media:
        session.connection().execute(insert(Media.__table__), media)


class _Planner:
    """Builds one batch: parse, de-duplicate, assign seqs, encrypt, chain, frame."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.now = datetime.now(timezone.utc)
        self.period = self.now.strftime("%Y-%m")
        self.parsed: list[tuple[Journal, Pending, list[items.Item]]] = []
        self.data_keys: dict[str, bytes] = {}
        self.session: Session
        self.carried: dict[str, int] = {}
        self._kids: dict[tuple[str | None, str], str] = {}
        self._stamps = {"sealed_at": self.now.isoformat()}

    def add_journal_row(self, row: Journal) -> None:
        """1a. Parse one journal row into its own record and the items it carries."""
        body = row.body or b""
        if row.source == "audit":
            own = Pending(kind="audit", plaintext=body, journal_id=row.id, type=_meta(row).get("event"))
            found: list[items.Item] = []
        elif row.source == "media":
            own, found = _media_record(row, body), []
        else:
            found = EXTRACT[row.source](body)
            contact = next((i.contact for i in found if i.contact), None)
            own = Pending(kind="delivery", plaintext=body, contact=contact, journal_id=row.id, type=row.source)
        self.parsed.append((row, own, found))

    def scopes(self) -> set[str]:
        """Data key ids every parsed record may need (duplicates included: a superset)."""
        out = set()
        for _, own, found in self.parsed:
            out.add(self.kid(own.contact, own.kind))
            out.update(self.kid(it.contact or own.contact, it.kind) for it in found)
        return out

    def kid(self, contact: str | None, kind: str) -> str:
        """Data key scope of a record: (contact, retention class, period)."""
        scope = (contact, retention_class(kind))
        if (kid := self._kids.get(scope)) is None:
            kid = self._kids[scope] = keys.scope_id(contact, scope[1], self.period)
        return kid

    def plan(self, session: Session, carry: _Carry, no: int) -> _Batch:
        """1b-1e. De-duplicate, assign seqs, encrypt and chain; advance ``carry``."""
        self.session = session
        self.carried = carry.known()
        first_seq, prev_hash = carry.seq + 1, carry.hash
        records, dups = self._dedupe()
        by_class = _assign_seqs(records, carry.seq)
        self._resolve_links(records)
        for r in records:
            r.clear["kid"] = self.kid(r.contact, r.kind)
        runs = []
        for cls in sorted(by_class):
            for run in _runs(by_class[cls], self.services.settings.segment_max_records):
                runs.append(self._seal_run(cls, run, carry))
        with carry.lock:
            carry.keys[no] = {r.item_key: r.seq for r in records if r.item_key}
        return _Batch(no=no, parsed_rows=len(self.parsed),
                      journal={row.id: own.seq for row, own, _ in self.parsed},
                      runs=runs, records=records, dups=dups, first_seq=first_seq, prev_hash=prev_hash)

    # 1b. de-duplicate ------------------------------------------------------------------------
    def _known(self, digests: set[str]) -> dict[str, int]:
        """Item keys sealed earlier: committed (catalog) or planned in a batch not yet committed."""
        known = _existing_keys(self.session, digests)
        known.update({d: self.carried[d] for d in digests if d in self.carried})
        return known

    def _dedupe(self) -> tuple[list[Pending], list[tuple[Pending | int, Pending, str]]]:
        """Keep the first copy of each item key; later copies become duplicate hits."""
        digests = {key_digest(it.key) for _, _, found in self.parsed for it in found}
        known = self._known(digests)
        first: dict[str, Pending] = {}
        records: list[Pending] = []
        dups: list[tuple[Pending | int, Pending, str]] = []
        for _, own, found in self.parsed:
            records.append(own)
            for it in found:
                d = key_digest(it.key)
                prior = first.get(d) or known.get(d)
                if prior:
                    dups.append((prior, own, it.kind))
                    continue
                first[d] = rec = _item_record(it, d, own)
                records.append(rec)
        return records, dups

    # 1c. links ---------------------------------------------------------------------------------
    def _resolve_links(self, records: list[Pending]) -> None:
        """Turn wamid references into seqs where the referenced message is archived.

        Unresolved references stay only inside the encrypted payload (wamids are personal).
        """
        wanted = {key_digest(f"msg:{w}") for r in records for k, w in r.links.items() if isinstance(w, str)}
        known = self._known(wanted)
        in_batch = {r.item_key: r.seq for r in records if r.item_key}
        for r in records:
            resolved: dict[str, Any] = {}
            for name, ref in r.links.items():
                if isinstance(ref, int):
                    resolved[name] = ref
                    continue
                d = key_digest(f"msg:{ref}")
                seq = in_batch.get(d) or known.get(d)
                if seq:
                    resolved[name] = seq if isinstance(seq, int) else seq.seq
            r.links = resolved

    # 1e. encrypt and chain ---------------------------------------------------------------------
    def _seal_run(self, cls: str, run: list[Pending], carry: _Carry) -> _Run:
        """Encrypt and chain one contiguous run of seqs and sign its checkpoint (the writer frames it)."""
        retain_until = _retain_until(self.now, self.services.settings.retention_days)
        lines, leaves, rows = [], [], []
        h = carry.hash
        for r in run:
            rec = self._record_dict(r, cls, retain_until, self.data_keys)
            r.plaintext = b""  # sealed into rec; don't carry it down the pipeline
            body = chain.canonical(rec)
            h = chain.chain_hash(h, body)
            rec["hash"] = h
            lines.append(chain.canonical(rec))
            leaves.append(chain.leaf_hash(body))
            rows.append(_catalog_row(r, cls, retain_until, h))
        first, last = run[0].seq, run[-1].seq
        key = self.services.signing_key
        cp = chain.Checkpoint(
            segment=chain.segment_key(cls, first, last), retention_class=cls, first_seq=first, last_seq=last,
            merkle_root=chain.merkle_root(leaves), chain_hash=h, prev_checkpoint=carry.checkpoint,
            created_at=datetime.now(timezone.utc).isoformat(), key_id=chain.key_id_of(key.public_key()),
        ).signed(key)
        out = _Run(cls=cls, first=first, last=last, lines=lines, rows=rows, retain_until=retain_until,
                   last_hash=h, checkpoint=cp, prev_checkpoint=carry.checkpoint)
        carry.seq, carry.hash, carry.checkpoint = last, h, cp.digest()
        return out

    def _iso(self, when: datetime) -> str:
        if (text := self._stamps.get(when)) is None:  # type: ignore[call-overload]
            text = self._stamps[when] = when.isoformat()  # type: ignore[index]
        return text

    def _record_dict(self, r: Pending, cls: str, retain_until: datetime, data_keys: dict[str, bytes]) -> dict[str, Any]:
        kid = r.clear.pop("kid")
        blob, commit = keys.seal_payload(data_keys[kid], r.plaintext, str(r.seq).encode())
        rec: dict[str, Any] = {
            "v": chain.FORMAT, "seq": r.seq, "kind": r.kind, "class": cls, "kid": kid,
            "sealed_at": self._stamps["sealed_at"], "retain_until": self._iso(retain_until),
            "ct": base64.b64encode(blob).decode(), "commit": commit, **r.clear,
        }
        r.clear["kid"] = kid
        if r.type:
            rec["type"] = r.type
        if r.item_key:
            rec["key"] = r.item_key
        if r.delivery is not None:
            rec["delivery"] = r.delivery.seq
        if r.journal_id is not None:
            rec["journal"] = r.journal_id
        if r.links:
            rec["links"] = r.links
        return rec


EXTRACT = {
    "webhook": items.extract_webhook,
    "capture_message": items.extract_capture_message,
    "consent": items.extract_consent,
}


def _item_record(it: items.Item, digest: str, delivery: Pending) -> Pending:
    """The Pending record of a first-seen item."""
    return Pending(
        kind=it.kind, plaintext=items.canonical_json(it.payload), contact=it.contact or delivery.contact,
        type=it.type, item_key=digest, wamid=it.wamid, occurred_at=it.occurred_at, delivery=delivery,
        media=it.media, state=it.state, links=dict(it.refs),
    )


def _meta(row: Any) -> dict[str, Any]:
    """A journal row's meta, read as text by the planner (only audit rows need it parsed).

    Some drivers (psycopg) decode JSON columns themselves and hand over a dict anyway.
    """
    if isinstance(row.meta, dict):
        return row.meta
    return json.loads(row.meta) if row.meta else {}


def _media_record(row: Journal, body: bytes) -> Pending:
    """A stored attachment, linked to the record that named it."""
    notice = json.loads(body)
    return Pending(
        kind="media", plaintext=body, contact=notice.get("contact"), journal_id=row.id,
        type=notice.get("mime_type"), links={"message": int(notice["record_seq"])},
        clear={"object": notice["object_key"], "object_sha256": notice["object_sha256"]},
    )


def _existing_keys(session: Session, digests: set[str]) -> dict[str, int]:
    """Item keys already sealed in earlier batches: digest -> seq."""
    found: dict[str, int] = {}
    ordered = sorted(digests)
    for i in range(0, len(ordered), 500):
        chunk = ordered[i:i + 500]
        found.update({k: s for k, s in session.execute(select(Record.item_key, Record.seq).where(Record.item_key.in_(chunk)))})
    return found


def _assign_seqs(records: list[Pending], last_seq: int) -> dict[str, list[Pending]]:
    """Group by retention class and number each class contiguously (one segment run each)."""
    by_class: dict[str, list[Pending]] = defaultdict(list)
    for r in records:
        by_class[retention_class(r.kind)].append(r)
    seq = last_seq
    for cls in sorted(by_class):
        for r in by_class[cls]:
            seq += 1
            r.seq = seq
    return by_class


def _runs(records: list[Pending], size: int) -> Iterable[list[Pending]]:
    """Split a class's records into segments of at most ``size``."""
    for i in range(0, len(records), size):
        yield records[i:i + size]


def _retain_until(now: datetime, days: int) -> datetime:
    """Retention end, rounded up to the next midnight UTC (whole days lock cleanly on S3)."""
    end = now + timedelta(days=days + 1)
    return end.replace(hour=0, minute=0, second=0, microsecond=0)


def _catalog_row(r: Pending, cls: str, retain_until: datetime, hash_hex: str) -> dict[str, Any]:
    return dict(
        seq=r.seq, kind=r.kind, type=r.type, item_key=r.item_key, wamid=r.wamid, contact=r.contact,
        delivery_seq=r.delivery.seq if r.delivery else None, hash=hash_hex, retention_class=cls,
        retain_until=retain_until, key_id=r.clear["kid"], occurred_at=r.occurred_at, links=r.links,
    )


def _raise_state(session: Session, known: dict[str, MessageState], r: Pending) -> None:
    """Record a status, never downgrading the highest state reached (``known`` is preloaded)."""
    assert r.wamid is not None and r.state is not None
    row = known.get(r.wamid)
    if row is None:
        known[r.wamid] = MessageState(wamid=r.wamid, state=r.state, status_seq=r.seq)
        session.add(known[r.wamid])
    elif items.status_supersedes(r.state, row.state):
        row.state, row.status_seq = r.state, r.seq


def ensure_data_keys(services: Services, ids: set[str], cache: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Return unwrapped data keys for ``ids``, creating (and committing) missing ones.

    Reads first and takes the write lock only to create keys, so planning does not queue
    behind the writer in the common case; ``cache`` carries unwrapped keys across batches.
    """
    cache = {} if cache is None else cache
    wanted = ids - cache.keys()
    if wanted:
        with services.sessions() as session:
            found = _wrapped_keys(session, wanted)
        if missing := wanted - found.keys():
            with services.sessions.begin() as session:
                created = _wrapped_keys(session, missing)  # again, under the write lock
                for kid in sorted(missing - created.keys()):
                    created[kid] = services.kek.wrap(keys.new_data_key(), kid)
                    session.add(DataKey(id=kid, wrapped=created[kid]))
            found.update(created)
        cache.update({kid: services.kek.unwrap(w, kid) for kid, w in found.items() if w})
    return {kid: cache[kid] for kid in ids if kid in cache}


def _wrapped_keys(session: Session, ids: set[str]) -> dict[str, bytes | None]:
    ordered = sorted(ids)
    out: dict[str, bytes | None] = {}
    for i in range(0, len(ordered), 500):
        rows = session.execute(select(DataKey.id, DataKey.wrapped).where(DataKey.id.in_(ordered[i:i + 500])))
        out.update((kid, wrapped) for kid, wrapped in rows)
    return out
