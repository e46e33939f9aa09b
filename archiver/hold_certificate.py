"""The hold certificate: a signed statement of what a litigation hold preserves.

``archiver hold certificate ID`` (and ``GET /api/v1/holds/<id>/certificate``) writes::

    {"certificate": {...}, "signature": base64, "public_key": PEM, "algorithm": "Ed25519"}

``signature`` is Ed25519, by the archive's checkpoint key, over the canonical JSON bytes
(:func:`archiver.canonical.canonical`) of ``certificate``, which holds:

- ``v`` (1), ``type`` ("hold_certificate"), ``archive_id``, ``generated_at``, ``generated_by``;
- ``hold``: id, matter, name, status, criteria, reason, who created it and when, the seq of
  its ``hold_created`` decision, how far it was evaluated, and the release if released;
- ``records``: ``[[seq, leaf_hash], ...]`` for every record the hold holds, in seq order.
  ``leaf_hash`` is the record's RFC 6962 leaf hash exactly as in its segment's Merkle tree:
  hex SHA-256(0x00 || the record's canonical bytes without its ``hash`` field);
- ``merkle_root``: the RFC 6962 (section 2.1) Merkle Tree Hash over those leaf hashes in seq
  order: MTH of one leaf is the leaf hash; of n > 1 leaves, SHA-256(0x01 || MTH(first k) ||
  MTH(rest)) with k the largest power of two below n; of no leaf, SHA-256 of the empty string;
- ``segments``: each WORM segment holding a held record (key, seq range, Merkle root,
  checkpoint key and digest), so a verifier with the store can check each leaf's inclusion;
- ``checkpoint``: the newest checkpoint in WORM (its whole signed body), whose chain hash
  covers every held record (its ``last_seq`` is at or after the last held seq).

A released hold holds nothing (its certificate lists no records, status ``released``).
Generating a certificate journals a ``hold_certificate_generated`` audit event (sealed like
every audit event) naming the hold, the record count, the root and the certificate's SHA-256.
:func:`verify` checks a certificate with only the public key, and against the archive.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from archiver import chain, holds, records
from archiver.canonical import canonical, sha256_hex
from archiver.catalog import HeldRecord, Record, Segment, archive_id, chunked
from archiver.errors import ArchiverError, IntegrityError, ValidationError
from archiver.journal import append_audit
from archiver.services import Services

ALGORITHM = "Ed25519"
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def merkle_root(leaves: list[bytes]) -> str:
    """RFC 6962 Merkle Tree Hash (hex) of already-hashed leaves; SHA-256("") when there are none."""
    return chain.merkle_root(leaves) if leaves else EMPTY_ROOT


def public_pem(services: Services) -> str:
    return services.signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def generate(services: Services, hold_id: str, actor: str) -> dict[str, Any]:
    """The signed certificate of ``hold_id`` (the file's JSON), journaling its audit event.

    Raises NoSuchHold; StoreError/NotFound/IntegrityError when a segment cannot be read.
    """
    with services.sessions() as session:
        hold = holds.describe(session, holds._get(session, hold_id), history=False)
        archive = archive_id(session)
        seqs = list(session.scalars(select(HeldRecord.seq).where(HeldRecord.hold_id == hold_id)
                                    .order_by(HeldRecord.seq)))
        segments: dict[int, Segment] = {}
        for part in chunked(seqs, 500):
            for seg in session.scalars(select(Segment).join(Record, Record.segment_id == Segment.id)
                                       .where(Record.seq.in_(part)).distinct()):
                segments[seg.id] = seg
        latest = session.scalars(select(Segment).where(Segment.state != "writing")
                                 .order_by(Segment.last_seq.desc()).limit(1)).first()
        wanted = set(seqs)
        leaves: dict[int, str] = {}
        for seg in sorted(segments.values(), key=lambda s: s.first_seq):
            for rec in records.segment_records_at(services, seg, wanted):
                leaves[rec["seq"]] = chain.leaf_hash(chain.record_bytes(rec)).hex()
        seg_rows = [{"key": s.key, "first_seq": s.first_seq, "last_seq": s.last_seq, "merkle_root": s.merkle_root,
                     "checkpoint_key": s.checkpoint_key, "checkpoint_digest": s.checkpoint_digest}
                    for s in sorted(segments.values(), key=lambda s: s.first_seq)]
        checkpoint_key = latest.checkpoint_key if latest is not None else None
    missing = [s for s in seqs if s not in leaves]
    if missing:
        raise IntegrityError(f"seq {missing[0]}", "held, but not in its segment")
    checkpoint = (json.loads(services.store.get(checkpoint_key)) if checkpoint_key else None)
    listed: list[tuple[int, str]] = [(s, leaves[s]) for s in seqs]
    hold.pop("counts", None)
    cert: dict[str, Any] = {
        "v": 1, "type": "hold_certificate", "archive_id": archive,
        "generated_at": datetime.now(timezone.utc).isoformat(), "generated_by": actor,
        "hold": hold, "record_count": len(listed), "records": [list(r) for r in listed],
        "merkle_root": merkle_root([bytes.fromhex(h) for _, h in listed]),
        "merkle_tree": "RFC 6962 2.1 over records[].leaf_hash in seq order; leaf_hash = SHA-256(0x00 || canonical "
                       "record without hash), as in the segment trees; no records: SHA-256('')",
        "segments": seg_rows, "checkpoint": checkpoint,
    }
    body = canonical(cert)
    signature = base64.b64encode(services.signing_key.sign(body)).decode()
    out = {"certificate": cert, "signature": signature, "public_key": public_pem(services), "algorithm": ALGORITHM}
    with services.sessions.begin() as session:
        append_audit(session, "hold_certificate_generated", actor, hold=hold_id, records=len(listed),
                     merkle_root=cert["merkle_root"], certificate_sha256=sha256_hex(body))
    return out


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM. Raises ValidationError."""
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError) as exc:
        raise ValidationError("public_key", "is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValidationError("public_key", "is not an Ed25519 key")
    return key


def verify(doc: Any, public_key: Ed25519PublicKey | None = None, services: Services | None = None) -> list[str]:
    """Every problem found with certificate file ``doc`` (empty: it verifies).

    Checks the structure, the signature (with ``public_key``, else the key in the file:
    that proves only that the file is self-consistent), the Merkle root recomputed from the
    listed leaves, the embedded checkpoint's signature and that it covers the last held seq;
    with ``services``, that the file's key is the archive's and that every listed record
    is still in the chain with that leaf hash (each mismatch names its seq).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("certificate"), dict):
        return ["not a hold certificate file (no 'certificate' object)"]
    problems: list[str] = []
    cert = doc["certificate"]
    if doc.get("algorithm") != ALGORITHM:
        problems.append(f"algorithm {doc.get('algorithm')!r} is not {ALGORITHM}")
    if public_key is None:
        try:
            public_key = load_public_key(str(doc.get("public_key") or ""))
        except ValidationError:
            return problems + ["no usable public key (give --public-key)"]
    if services is not None and public_pem(services).strip() != str(doc.get("public_key") or "").strip():
        problems.append("the certificate's public key is not this archive's checkpoint key")
    try:
        public_key.verify(base64.b64decode(str(doc.get("signature") or ""), validate=True), canonical(cert))
    except (InvalidSignature, ValueError):
        problems.append("signature does not verify: the certificate was altered or signed by another key")
    listed = cert.get("records")
    if not isinstance(listed, list) or not all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and isinstance(r[1], str) for r in listed):
        return problems + ["records is not a list of [seq, leaf_hash]"]
    leaves: list[bytes] = []
    prev = 0
    for seq, leaf in listed:
        if seq <= prev:
            problems.append(f"seq {seq}: records are not in increasing seq order")
        prev = seq
        try:
            raw = bytes.fromhex(leaf)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            problems.append(f"seq {seq}: leaf hash is not 32 bytes of hex")
        leaves.append(raw)
    if cert.get("record_count") != len(listed):
        problems.append(f"record_count {cert.get('record_count')} but {len(listed)} records are listed")
    root = merkle_root(leaves)
    if root != cert.get("merkle_root"):
        problems.append(f"Merkle root does not recompute from the listed leaves (got {root})")
    problems += _check_checkpoint(cert.get("checkpoint"), public_key, listed)
    if services is not None:
        problems += _check_archive(services, cert, listed)
    return problems


def _check_checkpoint(body: Any, public_key: Ed25519PublicKey, listed: list[list[Any]]) -> list[str]:
    if body is None:
        return ["no checkpoint, yet records are listed"] if listed else []
    try:
        cp = chain.Checkpoint.from_bytes(canonical(body), "checkpoint")
        cp.verify(public_key, "checkpoint")
    except ArchiverError as exc:
        return [f"checkpoint: {exc}"]
    if listed and cp.last_seq < listed[-1][0]:
        return [f"checkpoint ends at seq {cp.last_seq}, before the last held seq {listed[-1][0]}"]
    return []


def _check_archive(services: Services, cert: dict[str, Any], listed: list[list[Any]]) -> list[str]:
    """Each listed record still in the chain with that leaf hash."""
    problems: list[str] = []
    with services.sessions() as session:
        if cert.get("archive_id") != archive_id(session):
            problems.append(f"archive id {cert.get('archive_id')} is not this archive's")
        stated = {seq: leaf for seq, leaf in listed}
        found: dict[int, str] = {}
        by_segment: dict[int, Segment] = {}
        for part in chunked(sorted(stated), 500):
            for seg in session.scalars(select(Segment).join(Record, Record.segment_id == Segment.id)
                                       .where(Record.seq.in_(part)).distinct()):
                by_segment[seg.id] = seg
        for seg in sorted(by_segment.values(), key=lambda s: s.first_seq):
            try:
                sealed = records.segment_records(services, seg)
            except ArchiverError as exc:
                problems.append(f"segment {seg.key}: {exc}")
                continue
            for rec in sealed:
                if rec["seq"] in stated:
                    found[rec["seq"]] = chain.leaf_hash(chain.record_bytes(rec)).hex()
    for seq, leaf in listed:
        if seq not in found:
            problems.append(f"seq {seq}: not in the chain")
        elif found[seq] != leaf:
            problems.append(f"seq {seq}: leaf hash {leaf[:16]}... differs from the chain's {found[seq][:16]}...")
    return problems
