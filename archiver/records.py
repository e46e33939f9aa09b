"""Reading sealed records back: decrypt one record by seq, or every record of a segment.

Reads the WORM store (or the outbox copy of a segment still being published); the catalog
only says where to look.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Iterator
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import chain, keys
from archiver.catalog import DataKey, DuplicateHit, Journal, Record, Segment
from archiver.errors import IntegrityError, NotFound
from archiver.services import Services


def segment_records(services: Services, seg: Segment) -> list[dict[str, Any]]:
    """The sealed records of ``seg`` as stored. Raises NotFound, IntegrityError."""
    blob = seg.blob if seg.state == "writing" and seg.blob else services.store.get(seg.key)
    # orjson reads a segment several times faster than json (the indexer reads them all).
    # It is exact here: the clear part of a record holds only strings and small integers.
    # Should a lone surrogate ever get there, orjson refuses it and json reads it.
    try:
        return [orjson.loads(line) for line in chain.segment_lines(blob, seg.key)]
    except orjson.JSONDecodeError:
        return chain.decode_segment(blob, seg.key)


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
        for rec in segment_records(services, seg):
            if rec["seq"] <= after_seq:
                continue
            wanted = kinds is None or rec["kind"] in kinds
            yield rec, decrypt(services, session, rec, cache) if wanted else None


def read_record(services: Services, session: Session, seq: int) -> dict[str, Any]:
    """One record, decrypted, with its delivery, links and proof. Raises NotFound."""
    row = session.get(Record, seq)
    if row is None:
        raise NotFound(f"no record with seq {seq}")
    seg = session.get(Segment, row.segment_id)
    assert seg is not None
    sealed = segment_records(services, seg)
    rec = sealed[seq - seg.first_seq]
    if rec["seq"] != seq:
        raise IntegrityError(f"seq {seq}", f"segment {seg.key} does not hold it where expected")
    return {
        "seq": seq, "kind": rec["kind"], "type": rec.get("type"), "sealed_at": rec["sealed_at"],
        "retention_class": rec["class"], "retain_until": rec["retain_until"],
        "content": _content(decrypt(services, session, rec, {}), rec["kind"]),
        "delivery": _delivery(session, row), "links": rec.get("links", {}),
        "duplicates": _duplicates(session, seq),
        "proof": _proof(sealed, seq - seg.first_seq, seg, rec),
    }


def _content(plain: bytes | None, kind: str) -> Any:
    """Decrypted content: JSON where it is JSON, else the raw text; None once shredded."""
    if plain is None:
        return None
    try:
        return json.loads(plain)
    except ValueError:
        return {"raw": plain.decode("utf-8", "replace"), "note": f"{kind} body is not valid JSON"}


def _delivery(session: Session, row: Record) -> dict[str, Any] | None:
    """Where the record came from: its delivery record and journal entry."""
    seq = row.delivery_seq if row.delivery_seq else row.seq
    entry = session.scalar(select(Journal).where(Journal.delivery_seq == seq))
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
