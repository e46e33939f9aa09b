"""The sealer: journal rows -> records -> hash chain -> locked WORM segments + checkpoints.

One writer at a time (``catalog.leader_lock``). Each batch runs in three steps whose order
is the crash-safety argument:

1. *plan* (one transaction): parse the journal rows, de-duplicate items, assign seqs, encrypt,
   chain, frame the segment(s) and checkpoint(s); insert records, mark the journal rows
   sealed and move the chain head, keeping the segment bytes in the catalog (outbox).
   Data keys are committed before any ciphertext under them leaves the process.
2. *publish*: put each "writing" segment, then its checkpoint, to the WORM store.
3. *confirm* (one transaction): mark the segment "stored", drop its bytes and the journal
   bodies it covers.

A crash before 1 commits loses nothing (the journal still holds the rows); after 1, the next
run re-puts the identical bytes (idempotent), so nothing is sealed twice. While the store is
down, step 2 fails, no new batch is planned, and the journal grows until it returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from archiver import chain, items, keys
from archiver.catalog import (
    DataKey, DuplicateHit, Journal, Media, MessageState, Record, Segment, chain_head, leader_lock,
)
from archiver.errors import StoreError
from archiver.services import Services

log = logging.getLogger(__name__)

MAX_JOURNAL_ROWS = 2000


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


def seal_pending(services: Services, *, max_batches: int | None = None) -> int:
    """Seal everything pending, batch by batch; return the number of records sealed.

    Returns 0 without work if another sealer holds the lock. Raises StoreError when the store
    is unreachable (what was planned stays in the outbox and is published on the next run).
    """
    total = 0
    with leader_lock(services.engine) as leader:
        if not leader:
            return 0
        publish_outbox(services)
        batches = 0
        while max_batches is None or batches < max_batches:
            planned = plan_batch(services)
            if not planned:
                break
            publish_outbox(services)
            total += planned
            batches += 1
    return total


def publish_outbox(services: Services) -> None:
    """Put every planned segment and checkpoint to WORM, then confirm. Raises StoreError."""
    with services.sessions() as session:
        pending = session.scalars(select(Segment).where(Segment.state == "writing").order_by(Segment.first_seq)).all()
    for seg in pending:
        assert seg.blob is not None and seg.checkpoint_blob is not None
        services.store.put_locked(seg.key, seg.blob, seg.retain_until)
        services.store.put_locked(seg.checkpoint_key, seg.checkpoint_blob, seg.retain_until)
        _confirm(services, seg.id)
        log.info("segment.stored key=%s first=%d last=%d", seg.key, seg.first_seq, seg.last_seq)


def _confirm(services: Services, segment_id: int) -> None:
    """Step 3: the segment is in WORM; drop the outbox bytes and the journal bodies."""
    with services.sessions.begin() as session:
        seg = session.get(Segment, segment_id)
        assert seg is not None
        seg.state, seg.blob, seg.checkpoint_blob = "stored", None, None
        session.execute(
            update(Journal)
            .where(Journal.sealed.is_(True), Journal.delivery_seq.between(seg.first_seq, seg.last_seq))
            .values(body=None)
        )


# --- planning ---------------------------------------------------------------------------------


def plan_batch(services: Services, limit: int = MAX_JOURNAL_ROWS) -> int:
    """Step 1 for up to ``limit`` journal rows; return the number of records planned."""
    with services.sessions() as session:
        rows = session.scalars(
            select(Journal).where(Journal.sealed.is_(False)).order_by(Journal.id).limit(limit)
        ).all()
    if not rows:
        return 0
    planner = _Planner(services)
    for row in rows:
        planner.add_journal_row(row)
    planner.data_keys = ensure_data_keys(services, planner.scopes())
    with services.sessions.begin() as session:
        count = planner.finish(session)
    log.info("seal.planned journal_rows=%d records=%d", len(rows), count)
    return count


class _Planner:
    """Builds one batch: parse, de-duplicate, assign seqs, encrypt, chain, frame."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.now = datetime.now(timezone.utc)
        self.period = self.now.strftime("%Y-%m")
        self.parsed: list[tuple[Journal, Pending, list[items.Item]]] = []
        self.data_keys: dict[str, bytes] = {}
        self.session: Session

    def add_journal_row(self, row: Journal) -> None:
        """1a. Parse one journal row into its own record and the items it carries."""
        body = row.body or b""
        if row.source == "audit":
            own = Pending(kind="audit", plaintext=body, journal_id=row.id, type=row.meta.get("event"))
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
        return keys.scope_id(contact, retention_class(kind), self.period)

    def finish(self, session: Session) -> int:
        """1b-1f. De-duplicate, assign seqs, encrypt and chain, frame, write the catalog."""
        self.session = session
        head = chain_head(session)
        records, dups = self._dedupe()
        by_class = _assign_seqs(records, head.seq)
        self._resolve_links(records)
        for r in records:
            r.clear["kid"] = self.kid(r.contact, r.kind)
        for cls in sorted(by_class):
            for run in _runs(by_class[cls], self.services.settings.segment_max_records):
                self._seal_run(cls, run, self.data_keys, head)
        # One executemany, not a statement per row (ORM bulk UPDATE by primary key).
        session.execute(update(Journal), [{"id": row.id, "sealed": True, "delivery_seq": own.seq}
                                          for row, own, _ in self.parsed])
        self._side_tables(records, dups)
        return len(records)

    # 1b. de-duplicate ------------------------------------------------------------------------
    def _dedupe(self) -> tuple[list[Pending], list[tuple[Pending | int, Pending, str]]]:
        """Keep the first copy of each item key; later copies become duplicate hits."""
        digests = {key_digest(it.key) for _, _, found in self.parsed for it in found}
        known = _existing_keys(self.session, digests)
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
        known = _existing_keys(self.session, wanted)
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

    # 1e. chain and frame -----------------------------------------------------------------------
    def _seal_run(self, cls: str, run: list[Pending], data_keys: dict[str, bytes], head: Any) -> None:
        """Encrypt and chain one contiguous run of seqs; add its segment to the outbox."""
        retain_until = _retain_until(self.now, self.services.settings.retention_days)
        lines, leaves, rows = [], [], []
        for r in run:
            rec = self._record_dict(r, cls, retain_until, data_keys)
            body = chain.canonical(rec)
            head.hash = chain.chain_hash(head.hash, body)
            rec["hash"] = head.hash
            lines.append(chain.canonical(rec))
            leaves.append(chain.leaf_hash(body))
            rows.append(_catalog_row(r, cls, retain_until, head.hash))
        self._add_segment(cls, run, lines, leaves, rows, retain_until, head)

    def _record_dict(self, r: Pending, cls: str, retain_until: datetime, data_keys: dict[str, bytes]) -> dict[str, Any]:
        kid = r.clear.pop("kid")
        blob, commit = keys.seal_payload(data_keys[kid], r.plaintext, str(r.seq).encode())
        rec: dict[str, Any] = {
            "v": chain.FORMAT, "seq": r.seq, "kind": r.kind, "class": cls, "kid": kid,
            "sealed_at": self.now.isoformat(), "retain_until": retain_until.isoformat(),
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

    def _add_segment(self, cls: str, run: list[Pending], lines: list[bytes], leaves: list[bytes],
                     rows: list[dict[str, Any]], retain_until: datetime, head: Any) -> None:
        first, last = run[0].seq, run[-1].seq
        blob = chain.encode_segment(lines)
        key = chain.segment_key(cls, first, last)
        cp = chain.Checkpoint(
            segment=key, retention_class=cls, first_seq=first, last_seq=last,
            merkle_root=chain.merkle_root(leaves), chain_hash=head.hash, prev_checkpoint=head.checkpoint,
            created_at=self.now.isoformat(), key_id=chain.key_id_of(self.services.signing_key.public_key()),
        ).signed(self.services.signing_key)
        seg = Segment(
            key=key, retention_class=cls, first_seq=first, last_seq=last, records=len(run),
            merkle_root=cp.merkle_root, last_hash=head.hash, sha256=chain.sha256_hex(blob), size=len(blob),
            retain_until=retain_until, checkpoint_key=chain.checkpoint_key(last), checkpoint_digest=cp.digest(),
            state="writing", blob=blob, checkpoint_blob=cp.to_bytes(),
        )
        self.session.add(seg)
        self.session.flush()
        for row in rows:
            row["segment_id"] = seg.id
        self.session.execute(insert(Record), rows)  # bulk: records are never read back here
        head.seq, head.checkpoint = last, cp.digest()
        self.session.flush()

    # 1f. derived tables ------------------------------------------------------------------------
    def _side_tables(self, records: list[Pending], dups: list[tuple[Pending | int, Pending, str]]) -> None:
        """Duplicate hits, highest status per wamid, and the media fetch queue."""
        for prior, delivery, kind in dups:
            seq = prior if isinstance(prior, int) else prior.seq
            self.session.add(DuplicateHit(record_seq=seq, delivery_seq=delivery.seq, kind=kind))
        statuses = [r for r in records if r.kind == "status" and r.wamid and r.state]
        known = {m.wamid: m for m in self.session.scalars(
            select(MessageState).where(MessageState.wamid.in_(sorted({r.wamid for r in statuses if r.wamid}))))}
        for r in statuses:
            _raise_state(self.session, known, r)
        for r in records:
            for m in r.media:
                self.session.add(Media(record_seq=r.seq, media_id=m.media_id, expected_sha256=m.sha256,
                                       mime_type=m.mime_type, key_id=r.clear["kid"]))


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


def ensure_data_keys(services: Services, ids: set[str]) -> dict[str, bytes]:
    """Return unwrapped data keys for ``ids``, creating (and committing) missing ones."""
    with services.sessions.begin() as session:
        rows = {k.id: k for k in session.scalars(select(DataKey).where(DataKey.id.in_(sorted(ids))))}
        for kid in ids - rows.keys():
            rows[kid] = DataKey(id=kid, wrapped=services.kek.wrap(keys.new_data_key(), kid))
            session.add(rows[kid])
    return {kid: services.kek.unwrap(row.wrapped, kid) for kid, row in rows.items() if row.wrapped}
