"""Reading sealed records back: decrypt one record by seq (with the exact bytes of its
delivery), or every record of a segment.

Reads the WORM store (or the outbox copy of a segment still being published); the catalog
only says where to look. A record whose segment disposition deleted (``archiver.worm_disposal``)
is shown from the catalog and the proof kept at the deletion: disposed, no content.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import chain, jsonview, keys
from archiver.canonical import sha256_hex
from archiver.catalog import DataKey, DuplicateHit, Journal, Record, Segment
from archiver.errors import IntegrityError, NotFound, ValidationError
from archiver.params import SEQ_MAX
from archiver.services import Services


def segment_records(services: Services, seg: Segment) -> list[dict[str, Any]]:
    """The sealed records of ``seg`` as stored. Raises NotFound, IntegrityError."""
    blob = _blob(services, seg)
    return _parse(chain.segment_lines(blob, seg.key), blob, seg.key)


class LastSegment:
    """The last segment :func:`payloads` read (its blob and lines), for a caller reading in seq
    order, batch after batch: the segment two batches share is fetched and decompressed once.
    Holds one segment at a time."""

    def __init__(self) -> None:
        self.id: int | None = None
        self.blob = b""
        self.lines: list[bytes] = []


def segment_records_at(services: Services, seg: Segment, seqs: Collection[int],
                       read: tuple[bytes, list[bytes]] | None = None) -> list[dict[str, Any]]:
    """The sealed records of ``seg`` whose seq is in ``seqs``, in seq order; only their lines are parsed.

    A segment holds a contiguous run of seqs, one line each in seq order, so the line of seq
    s is line ``s - first_seq``; each parsed record's seq is checked against it, and a
    segment that does not line up (or a line orjson refuses) is parsed whole and filtered.
    ``read``: the segment's (blob, lines) when the caller has them already.
    Raises NotFound, IntegrityError.
    """
    if not isinstance(seqs, (set, frozenset)):
        seqs = set(seqs)
    blob, lines = read if read is not None else _read(services, seg)
    first, last = seg.first_seq, seg.last_seq
    if len(lines) == last - first + 1:
        # The smaller side is walked: a caller may ask for many more seqs than the segment holds.
        inside = ([s for s in range(first, last + 1) if s in seqs] if len(seqs) > len(lines)
                  else sorted(s for s in seqs if first <= s <= last))
        try:
            picked = [orjson.loads(lines[s - first]) for s in inside]
        except orjson.JSONDecodeError:
            picked = []
        if len(picked) == len(inside) and all(rec.get("seq") == s for rec, s in zip(picked, inside)):
            return picked
    return [rec for rec in _parse(lines, blob, seg.key) if rec["seq"] in seqs]


def _read(services: Services, seg: Segment) -> tuple[bytes, list[bytes]]:
    blob = _blob(services, seg)
    return blob, chain.segment_lines(blob, seg.key)


def _blob(services: Services, seg: Segment) -> bytes:
    return seg.blob if seg.state == "writing" and seg.blob else services.store.get(seg.key)


def _parse(lines: list[bytes], blob: bytes, where: str) -> list[dict[str, Any]]:
    # orjson reads a segment several times faster than json (the indexer reads them all).
    # It is exact here: the clear part of a record holds only strings and small integers.
    # Should a lone surrogate ever get there, orjson refuses it and json reads it.
    try:
        return [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError:
        return chain.decode_segment(blob, where)


def readable_records(services: Services, session: Session, seg: Segment) -> list[dict[str, Any]]:
    """:func:`segment_records`, or none for a segment disposition deleted (every record in it is
    disposed: nothing left to read). Raises NotFound for a segment missing otherwise, IntegrityError."""
    try:
        return segment_records(services, seg)
    except NotFound:
        from archiver.worm_disposal import deletion_of

        if deletion_of(session, seg) is not None:
            return []
        raise


def decrypt(services: Services, session: Session, rec: dict[str, Any], cache: dict[str, bytes | None]) -> bytes | None:
    """The plaintext of a sealed record, or None once its data key was destroyed."""
    kid = rec["kid"]
    if kid not in cache:
        row = session.get(DataKey, kid)
        cache[kid] = services.kek.unwrap(row.wrapped, kid) if row and row.wrapped else None
    data_key = cache[kid]
    if data_key is None:
        return None
    _, plain = keys.open_payload(data_key, base64.b64decode(rec["ct"]), str(rec["seq"]).encode(), f"seq {rec['seq']}")
    return plain


def iter_decrypted(services: Services, session: Session, after_seq: int,
                   kinds: Collection[str] | None = None) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """Every sealed record after ``after_seq`` in seq order, with its plaintext.

    With ``kinds``, only records of those kinds are decrypted; the others come with None.
    """
    cache: dict[str, bytes | None] = {}
    segs = session.scalars(select(Segment).where(Segment.last_seq > after_seq).order_by(Segment.first_seq)).all()
    for seg in segs:
        for rec in readable_records(services, session, seg):
            if rec["seq"] <= after_seq:
                continue
            wanted = kinds is None or rec["kind"] in kinds
            yield rec, decrypt(services, session, rec, cache) if wanted else None


def payloads(services: Services, session: Session, wanted: Collection[tuple[int, int]],
             last: LastSegment | None = None) -> dict[int, bytes | None]:
    """The plaintexts of sealed records given as (seq, segment id): each segment read once
    (None for a record whose data key was destroyed; none at all for the records of a segment
    disposition deleted). With ``last``, the last segment read is kept there and not read again
    by the next call that needs it. Raises NotFound (a segment missing otherwise), IntegrityError."""
    by_segment: dict[int, set[int]] = {}
    for seq, segment_id in wanted:
        by_segment.setdefault(segment_id, set()).add(seq)
    found: list[dict[str, Any]] = []
    for segment_id, seqs in sorted(by_segment.items()):
        seg = session.get(Segment, segment_id)
        if seg is None:
            raise IntegrityError(f"segment id {segment_id}", "the catalog names a segment it lacks")
        try:
            if last is not None and last.id == segment_id:
                read = (last.blob, last.lines)
            else:
                read = _read(services, seg)
                if last is not None and seg.state != "writing":  # one still being written may grow
                    last.id, last.blob, last.lines = segment_id, read[0], read[1]
            found.extend(segment_records_at(services, seg, seqs, read))
        except NotFound:
            from archiver.worm_disposal import deletion_of

            if deletion_of(session, seg) is None:
                raise  # missing, not deleted by disposition: every record in one that is, is disposed
    cache: dict[str, bytes | None] = {}
    kids = sorted({rec["kid"] for rec in found})
    for start in range(0, len(kids), 500):  # the data keys in a few queries, not one each
        for row in session.scalars(select(DataKey).where(DataKey.id.in_(kids[start:start + 500]))):
            cache[row.id] = services.kek.unwrap(row.wrapped, row.id) if row.wrapped else None
    return {rec["seq"]: decrypt(services, session, rec, cache) for rec in found}


def check_seq(seq: int, field: str = "seq") -> int:
    """``seq`` if a record could have it. Raises ValidationError naming ``field``."""
    if not 1 <= seq <= SEQ_MAX:
        raise ValidationError(field, f"must be a record seq between 1 and {SEQ_MAX}")
    return seq


@dataclass(frozen=True)
class Raw:
    """The exact bytes a record's delivery came in as: ``data`` is None once its key was destroyed."""

    seq: int  # the record holding them: the delivery (or audit/media record) itself
    data: bytes | None
    body_sha256: str | None  # as the journal took it at intake

    def as_dict(self) -> dict[str, Any]:
        digest = sha256_hex(self.data) if self.data is not None else None
        return {"raw_seq": self.seq, "raw": base64.b64encode(self.data).decode() if self.data is not None else None,
                "raw_sha256": digest, "raw_size": len(self.data) if self.data is not None else None}

    @property
    def matches(self) -> bool:
        """The bytes hash to the journal's ``body_sha256``."""
        return self.data is not None and sha256_hex(self.data) == self.body_sha256


class SegmentDeleted(NotFound):
    """The record's segment was deleted by disposition: every record in it is disposed."""

    code = "disposed"


class Reader:
    """Reads sealed records by seq in one session; each segment and data key is read once."""

    def __init__(self, services: Services, session: Session) -> None:
        self.services = services
        self.session = session
        self._segments: dict[int, tuple[Segment, list[dict[str, Any]]]] = {}
        self._keys: dict[str, bytes | None] = {}
        self._entries: dict[int, Journal | None] = {}

    def row(self, seq: int) -> Record:
        """The catalog row of ``seq``. Raises ValidationError (no such seq can exist), NotFound."""
        row = self.session.get(Record, check_seq(seq))
        if row is None:
            raise NotFound(f"no record with seq {seq}")
        return row

    def sealed(self, row: Record) -> tuple[Segment, list[dict[str, Any]], int]:
        """(segment, its sealed records, index of ``row`` in them). Raises IntegrityError."""
        if row.segment_id not in self._segments:
            seg = self.session.get(Segment, row.segment_id)
            if seg is None:
                raise IntegrityError(f"seq {row.seq}", f"catalog names segment id {row.segment_id}, which it lacks")
            try:
                self._segments[row.segment_id] = (seg, segment_records(self.services, seg))
            except NotFound as exc:
                from archiver.worm_disposal import deletion_of

                if deletion_of(self.session, seg) is not None:
                    raise SegmentDeleted(f"segment {seg.key} of seq {row.seq} was deleted by disposition") from exc
                raise
        seg, sealed = self._segments[row.segment_id]
        index = row.seq - seg.first_seq
        if not 0 <= index < len(sealed) or sealed[index]["seq"] != row.seq:
            raise IntegrityError(f"seq {row.seq}", f"segment {seg.key} does not hold it where expected")
        return seg, sealed, index

    def plaintext(self, rec: dict[str, Any]) -> bytes | None:
        """The decrypted payload of a sealed record; None once its data key was destroyed."""
        return decrypt(self.services, self.session, rec, self._keys)

    def entry(self, seq: int) -> Journal | None:
        """The journal entry of delivery ``seq`` (it keeps ``body_sha256`` once sealed)."""
        if seq not in self._entries:
            self._entries[seq] = self.session.scalar(select(Journal).where(Journal.delivery_seq == seq))
        return self._entries[seq]

    def raw(self, row: Record) -> Raw:
        """The bytes of the delivery ``row`` came from (its own, for deliveries, audit and media)."""
        seq = delivery_seq(row)
        source = row if seq == row.seq else self.row(seq)
        entry = self.entry(seq)
        try:
            _, sealed, index = self.sealed(source)
        except SegmentDeleted:  # disposed with its segment: the bytes are gone
            return Raw(seq, None, entry.body_sha256 if entry else None)
        return Raw(seq, self.plaintext(sealed[index]), entry.body_sha256 if entry else None)


def delivery_seq(row: Record) -> int:
    """The seq of the record holding the bytes ``row`` came in as."""
    return row.delivery_seq if row.delivery_seq else row.seq


def read_raw(services: Services, session: Session, seq: int) -> Raw:
    """The exact bytes behind record ``seq`` (see ``Reader.raw``). Raises ValidationError, NotFound."""
    reader = Reader(services, session)
    return reader.raw(reader.row(seq))


def read_record(services: Services, session: Session, seq: int) -> dict[str, Any]:
    """One record, decrypted, with its raw bytes, delivery, links and proof.

    ``content`` is the strict-JSON view of the payload (``jsonview``; None once shredded or
    when it is not JSON) and ``content_view`` says how it was read. ``raw`` is the base64 of
    the exact bytes of the delivery the record came from (``raw_seq``), with ``raw_sha256``
    (equal to ``delivery.body_sha256``) and ``raw_size``. Raises ValidationError, NotFound.
    """
    reader = Reader(services, session)
    row = reader.row(seq)
    try:
        seg, sealed, index = reader.sealed(row)
    except SegmentDeleted:
        return _deleted_record(reader, row)
    rec = sealed[index]
    content, content_view = _content(reader.plaintext(rec))
    return {
        "seq": seq, "kind": rec["kind"], "type": rec.get("type"), "sealed_at": rec["sealed_at"],
        "retention_class": rec["class"], "retain_until": rec["retain_until"],
        # The policy record whose class assigned the retention (none before policies were applied).
        "policy_seq": rec.get("policy"),
        **_extended(row, rec),
        "content": content, "content_view": content_view, **reader.raw(row).as_dict(),
        "delivery": _delivery(reader, row), "links": rec.get("links", {}),
        "duplicates": _duplicates(session, seq),
        "proof": _proof(sealed, index, seg, rec),
        **_disposition(session, row),
    }


def verify_inclusion(services: Services, session: Session, seq: int) -> dict[str, Any]:
    """Prove record ``seq`` from WORM alone: its leaf is in its segment's Merkle tree, whose
    root the checkpoint names, whose Ed25519 signature verifies, and its hash is the catalog's.

    Returns what was checked. Raises IntegrityError at the first break, ValidationError, NotFound.
    """
    reader = Reader(services, session)
    row = reader.row(seq)
    seg, sealed, index = reader.sealed(row)
    cp = chain.Checkpoint.from_bytes(services.store.get(seg.checkpoint_key), seg.checkpoint_key)
    cp.verify(services.signing_key.public_key(), seg.checkpoint_key)
    if cp.segment != seg.key or not cp.first_seq <= seq <= cp.last_seq:
        raise IntegrityError(f"seq {seq}", f"checkpoint {seg.checkpoint_key} does not cover it")
    leaf = chain.leaf_hash(chain.record_bytes(sealed[index]))
    leaves = [chain.leaf_hash(chain.record_bytes(r)) for r in sealed]
    chain.verify_inclusion(leaf, index, len(sealed), chain.inclusion_proof(leaves, index), cp.merkle_root)
    if sealed[index]["hash"] != row.hash:
        raise IntegrityError(f"seq {seq}", f"sealed hash {sealed[index]['hash']}, catalog has {row.hash}")
    return {"seq": seq, "segment": seg.key, "checkpoint": seg.checkpoint_key, "merkle_root": cp.merkle_root,
            "leaf_index": index, "tree_size": len(sealed), "hash": row.hash}


def _deleted_record(reader: Reader, row: Record) -> dict[str, Any]:
    """A record whose segment disposition deleted: the catalog's fields and the proof kept at the
    deletion (leaf hashes and commitments), disposed, no content. Raises IntegrityError."""
    from archiver import worm_disposal

    session = reader.session
    seg = session.get(Segment, row.segment_id)
    deletion = worm_disposal.deletion_of(session, seg) if seg is not None else None
    index = row.seq - seg.first_seq if seg is not None else -1
    if seg is None or deletion is None or not 0 <= index < len(deletion.leaf_hashes):
        raise IntegrityError(f"seq {row.seq}", "its deleted segment's proof is not in the catalog")
    leaves = [bytes.fromhex(h) for h in deletion.leaf_hashes]
    content, content_view = _content(None)
    commitments = deletion.commitments or []
    found = _disposition(session, row).get("disposition") or {"status": "disposed"}
    return {
        "seq": row.seq, "kind": row.kind, "type": row.type, "sealed_at": seg.sealed_at.isoformat(),
        "retention_class": row.retention_class, "retain_until": row.retain_until.isoformat(),
        "policy_seq": row.policy_seq,
        "content": content, "content_view": content_view, **reader.raw(row).as_dict(),
        "delivery": _delivery(reader, row), "links": row.links or {},
        "duplicates": _duplicates(session, row.seq),
        "proof": {"hash": row.hash, "commitment": commitments[index] if index < len(commitments) else None,
                  "segment": seg.key, "leaf_index": index, "leaf_hash": deletion.leaf_hashes[index],
                  "tree_size": len(leaves), "merkle_root": seg.merkle_root,
                  "inclusion_path": chain.inclusion_proof(leaves, index), "checkpoint": seg.checkpoint_key},
        "disposition": {**found, "segment_deleted": worm_disposal.view(deletion)},
    }


def _disposition(session: Session, row: Record) -> dict[str, Any]:
    """``disposition``: once disposed, by which sealed disposition record (``archiver.disposition``)."""
    from archiver.disposition import disposed

    found = disposed(session, row.key_id)
    return {"disposition": found} if found else {}


def _extended(row: Record, rec: dict[str, Any]) -> dict[str, Any]:
    """``retention_extended_to``: the catalog's later date once ``archiver retention extend`` applied."""
    sealed = datetime.fromisoformat(rec["retain_until"])
    return {"retention_extended_to": row.retain_until.isoformat()} if row.retain_until > sealed else {}


def _content(plain: bytes | None) -> tuple[Any, dict[str, Any]]:
    """(strict-JSON view of the payload, how it was read); (None, shredded) once the key is gone."""
    if plain is None:
        return None, {"format": "shredded", "rfc8259": False, "numbers_as_text": [], "duplicate_keys": [],
                      "note": "the data key was destroyed; the content cannot be read"}
    shown = jsonview.view(plain)
    return shown.pop("value"), shown


def _delivery(reader: Reader, row: Record) -> dict[str, Any] | None:
    """Where the record came from: its delivery record and journal entry."""
    seq = delivery_seq(row)
    entry = reader.entry(seq)
    if entry is None:
        return None
    return {"seq": seq, "journal_id": entry.id, "source": entry.source,
            "received_at": entry.received_at.isoformat(), "body_sha256": entry.body_sha256}


def _duplicates(session: Session, seq: int) -> list[dict[str, Any]]:
    """Later copies of this item (each in its own sealed delivery)."""
    hits = session.scalars(select(DuplicateHit).where(DuplicateHit.record_seq == seq)).all()
    return [{"delivery_seq": h.delivery_seq, "kind": h.kind} for h in hits]


def _proof(sealed: list[dict[str, Any]], index: int, seg: Segment, rec: dict[str, Any]) -> dict[str, Any]:
    """Hash, commitment and RFC 6962 inclusion path of the record in its segment."""
    leaves = [chain.leaf_hash(chain.record_bytes(r)) for r in sealed]
    return {
        "hash": rec["hash"], "commitment": rec["commit"], "segment": seg.key, "leaf_index": index,
        "tree_size": len(leaves), "merkle_root": seg.merkle_root, "inclusion_path": chain.inclusion_proof(leaves, index),
        "checkpoint": seg.checkpoint_key,
    }
