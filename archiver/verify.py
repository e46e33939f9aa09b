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
   class for every seq, and the chain head is the last checkpoint (or an outbox segment
   still being published follows it).

Errors are IntegrityError naming the first bad seq or object; ``audit`` turns the first one
into a report. See chain.py for the format.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import chain
from archiver.catalog import Record, Segment, chain_head
from archiver.errors import IntegrityError, NotFound
from archiver.store import WormStore

_HASH_FIELD = re.compile(rb'"hash":"[0-9a-f]{64}",?')


@dataclass
class Report:
    """What ``archiver verify --json`` prints."""

    ok: bool
    records: int = 0
    segments: int = 0
    checkpoints: int = 0
    first_error: str | None = None
    pending_segments: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def audit(store: WormStore, public_key: Ed25519PublicKey, session: Session | None) -> Report:
    """Run every step; return a report whose ``first_error`` names the first break."""
    report = Report(ok=True)
    try:
        checkpoints = load_checkpoints(store, public_key)
        report.checkpoints = len(checkpoints)
        prev = chain.GENESIS
        for cp in checkpoints:
            sealed = verify_segment(store, cp, prev)
            if session is not None:
                verify_records(session, cp, sealed)
            report.records += len(sealed)
            report.segments += 1
            prev = cp.chain_hash
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


def verify_segment(store: WormStore, cp: chain.Checkpoint, prev_hash: str) -> list[tuple[int, str, str, str]]:
    """Steps 3-5 for one segment; return (seq, hash, kind, class) per record. Raises IntegrityError."""
    try:
        blob = store.get(cp.segment)
    except NotFound as exc:
        raise IntegrityError(cp.segment, "segment named by a checkpoint is missing") from exc
    leaves, expected, h, seen = [], cp.first_seq, prev_hash, []
    for line in _lines(blob, cp.segment):
        seq, stated, kind, cls, rec = _fields(line, expected, cp.segment)
        seen.append((seq, stated, kind, cls))
        if kind == "media":
            verify_media_object(store, rec)
        body = _HASH_FIELD.sub(b"", line, count=1)  # canonical bytes minus "hash" (sorted keys)
        h = chain.chain_hash(h, body)  # 4
        if h != stated:
            raise IntegrityError(f"seq {seq}", f"hash {stated[:16]}... does not recompute (expected {h[:16]}...)")
        leaves.append(chain.leaf_hash(body))
        expected += 1
    if expected - 1 != cp.last_seq:
        raise IntegrityError(f"seq {expected}", f"segment {cp.segment} ends before the checkpoint's last seq")
    if chain.merkle_root(leaves) != cp.merkle_root:  # 5
        raise IntegrityError(cp.segment, "Merkle root differs from the checkpoint")
    if h != cp.chain_hash:
        raise IntegrityError(f"seq {cp.last_seq}", "chain hash differs from the checkpoint")
    return seen


def _lines(blob: bytes, where: str) -> Iterator[bytes]:
    """Step 3: the segment's record lines (framing checked by gzip's CRC)."""
    import gzip
    import zlib

    try:
        text = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:
        raise IntegrityError(where, f"segment cannot be decoded ({exc.__class__.__name__})") from exc
    lines = [ln for ln in text.split(b"\n") if ln]
    if not lines:
        raise IntegrityError(where, "segment holds no records")
    return iter(lines)


def _fields(line: bytes, expected: int, where: str) -> tuple[int, str, str, str, dict[str, Any]]:
    try:
        rec = json.loads(line)
        seq, stated, kind, cls = int(rec["seq"]), str(rec["hash"]), str(rec["kind"]), str(rec["class"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"seq {expected}", f"record in {where} is malformed") from exc
    if seq != expected:
        raise IntegrityError(f"seq {expected}", f"found seq {seq} where {expected} belongs in {where}")
    return seq, stated, kind, cls, rec


def verify_media_object(store: WormStore, rec: dict[str, Any]) -> None:
    """Step 3b: the attachment a media record names exists with the hash it states."""
    key, want = rec.get("object"), rec.get("object_sha256")
    try:
        info = store.head(str(key))
    except NotFound as exc:
        raise IntegrityError(str(key), f"media object named by seq {rec['seq']} is missing") from exc
    if info.sha256 is not None and info.sha256 != want:
        raise IntegrityError(str(key), f"media object hash differs from seq {rec['seq']}")
def verify_catalog(session: Session, checkpoints: list[chain.Checkpoint]) -> int:
    """Step 6: the catalog agrees with the store. Returns the number of outbox segments."""
    segs = session.scalars(select(Segment).order_by(Segment.first_seq)).all()
    stored = [s for s in segs if s.state == "stored"]
    if len(stored) != len(checkpoints):
        raise IntegrityError("catalog", f"{len(stored)} stored segments in the catalog, {len(checkpoints)} checkpoints in the store")
    for seg, cp in zip(stored, checkpoints):
        if (seg.key, seg.first_seq, seg.last_seq, seg.merkle_root, seg.checkpoint_digest) != (
                cp.segment, cp.first_seq, cp.last_seq, cp.merkle_root, cp.digest()):
            raise IntegrityError(seg.key, "catalog segment row differs from the store's checkpoint")
    head = chain_head(session)
    last = checkpoints[-1] if checkpoints else None
    if last and len(segs) == len(stored) and (head.seq, head.hash) != (last.last_seq, last.chain_hash):
        raise IntegrityError(f"seq {head.seq}", "catalog chain head differs from the last checkpoint")
    return len(segs) - len(stored)


def verify_records(session: Session, cp: chain.Checkpoint, sealed: list[tuple[int, str, str, str]]) -> None:
    """Step 6, record by record: catalog seq, hash, kind and class equal the sealed record's."""
    rows = session.execute(
        select(Record.seq, Record.hash, Record.kind, Record.retention_class)
        .where(Record.seq.between(cp.first_seq, cp.last_seq)).order_by(Record.seq)
    ).all()
    for row, rec in zip(rows, sealed):
        if tuple(row) != rec:
            raise IntegrityError(f"seq {rec[0]}", "catalog row differs from the sealed record")
    if len(rows) != len(sealed):
        raise IntegrityError(f"seq {cp.first_seq}", f"catalog has {len(rows)} rows for {cp.segment}, store has {len(sealed)}")
