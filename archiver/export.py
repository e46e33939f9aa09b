"""Provable exports: a folder an auditor checks offline, without trusting the archive.

``write_bundle`` selects records (a search query, a litigation hold, or a contact with an
optional time window), decrypts them and writes the bundle described in
``docs/export-format.md``: ``records.jsonl``, ``threads.json``, ``media/``, ``proofs/``,
``public-key.pem``, ``MANIFEST.json`` (+ ``.sig``) and ``EXPORT.json`` (+ ``.sig``).

Everything but ``EXPORT.json`` and its signature is a function of the selection and the
archive's sealed state: the same selection on the same archive gives the same bytes
(Ed25519 signatures are deterministic). Who exported and when live in ``EXPORT.json``,
which names the manifest's hash. The export itself is audited (an ``export`` audit record:
the selection, the counts and the manifest's hash, never content).

Only records whose segment is stored in WORM with its checkpoint are exported (a record
still in the outbox has no signed checkpoint to prove it yet). A record whose segment
disposition deleted (``archiver.worm_disposal``) is exported as disposed: no content and no
sealed record, but its hash, commitment, the leaf hash kept at the deletion and its inclusion
path to the signed checkpoint.
"""

from __future__ import annotations

import base64
import io
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import chain, holds, jsonview, keys
from archiver.canonical import canonical, sha256_hex
from archiver.catalog import DataKey, HeldRecord, Media, Record, Segment, chunked
from archiver.errors import ArchiverError, IntegrityError, NotFound, ValidationError
from archiver.journal import append_audit
from archiver.records import segment_records
from archiver.services import Services

FORMAT = "archiver-export"
VERSION = 1
#: ``progress(records_done, records_total)``: called as records are rendered (every
#: ``PROGRESS_EVERY`` records and at the end).
Progress = Callable[[int, int], None]
PROGRESS_EVERY = 200
#: ``pages(pages_rendered, pages_total)``: called as ``transcript.pdf`` renders (``(0, None)``
#: when it starts, after each merged part of a chunked rendering, ``(N, N)`` when whole).
Pages = Callable[[int, int | None], None]
#: Files whose bytes depend on who exported and when; the manifest does not list them.
UNLISTED = ("MANIFEST.json", "MANIFEST.json.sig", "EXPORT.json", "EXPORT.json.sig")
#: Formats an export writes: ``bundle`` (always: the evidence), ``pdf`` (``transcript.pdf``),
#: ``rsmf`` (``export.rsmf``, RSMF 2.0.0; deterministic, so listed in the manifest's files).
FORMATS = ("bundle", "pdf", "rsmf")
DEFAULT_FORMATS = ("bundle", "pdf")
TRANSCRIPT = "transcript.pdf"


def parse_formats(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"bundle,pdf"`` (or a list) as a checked tuple; the bundle is always written."""
    if value is None or value == "":
        return DEFAULT_FORMATS
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    for name in names:
        if name not in FORMATS:
            raise ValidationError("format", f"unknown format {name!r} (give a list of: {', '.join(FORMATS)})")
    return tuple(f for f in FORMATS if f in names or f == "bundle")


class ExportExists(ArchiverError):
    code = "export-exists"
    http_status = 409


@dataclass(frozen=True)
class Selection:
    """What to export: exactly one of query, hold, contact (after/before only with contact)."""

    query: str | None = None
    hold: str | None = None
    contact: str | None = None
    after: str | None = None
    before: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.query is not None:
            return {"by": "query", "query": self.query}
        if self.hold is not None:
            return {"by": "hold", "hold": self.hold}
        return {"by": "contact", "contact": self.contact, "after": self.after, "before": self.before}

    def check(self) -> "Selection":
        """Raises ValidationError naming the field when the selection is not exactly one kind."""
        given = [name for name in ("query", "hold", "contact") if getattr(self, name) not in (None, "")]
        if len(given) != 1:
            raise ValidationError("selection", "give exactly one of query, hold, contact")
        if (self.after or self.before) and self.contact is None:
            raise ValidationError("after", "after and before go with contact")
        for name in ("query", "hold", "contact", "after", "before"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) > 2000 or "\x00" in value):
                raise ValidationError(name, "must be a string")
        return self


@dataclass
class Result:
    """What an export wrote: the folder, counts and the manifest's hash."""

    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    manifest_sha256: str = ""
    through_seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "counts": self.counts, "manifest_sha256": self.manifest_sha256,
                "through_seq": self.through_seq}


def sealed_through(session: Session) -> int:
    """The last seq of the last stored segment (every record up to it has a signed checkpoint)."""
    seqs = session.scalars(select(Segment.last_seq).where(Segment.state == "stored")
                           .order_by(Segment.first_seq)).all()
    writing = session.scalar(select(Segment.first_seq).where(Segment.state == "writing").order_by(Segment.first_seq).limit(1))
    stored = [s for s in seqs if writing is None or s < writing]
    return stored[-1] if stored else 0


def selected_seqs(services: Services, session: Session, sel: Selection, through: int) -> list[int]:
    """The seqs ``sel`` selects up to ``through``, ascending. Raises ValidationError, NoSuchHold, QuerySyntaxError."""
    if sel.hold is not None:
        holds.show(services, sel.hold)  # NoSuchHold
        seqs = set(session.scalars(select(HeldRecord.seq).where(HeldRecord.hold_id == sel.hold)))
        return sorted(s for s in seqs if s <= through)
    if sel.query is not None:
        crit = holds.parse_criteria(query=sel.query)
    else:
        crit = holds.parse_criteria(custodians=[str(sel.contact)], after=sel.after, before=sel.before)
    return sorted(holds.matching(services, session, crit, 0, through))


def write_bundle(services: Services, sel: Selection, out: Path, actor: str, *, progress: Progress | None = None,
                 export_id: str | None = None, formats: tuple[str, ...] = DEFAULT_FORMATS,
                 tz: str | None = None, pages: Pages | None = None) -> Result:
    """Write the bundle of ``sel`` into ``out`` (absent or empty) and audit it (the ``export``
    record names ``export_id`` when given: the export job's id); with ``pdf`` in ``formats``
    also the signed ``transcript.pdf`` (times in ``tz``, default UTC). ``progress`` hears how
    far the rendering is (records done, records selected), ``pages`` how far the transcript is.

    Raises ValidationError, ExportExists, NoSuchHold, QuerySyntaxError, SearchUnavailable,
    StoreError, IntegrityError.
    """
    sel.check()
    from archiver import transcript

    zone = transcript.zone(tz)
    signer = None
    if "pdf" in formats:
        from archiver.pdf import sign

        signer = sign.load_signer(services.settings.home)  # a bad signer is refused before any work
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportExists(f"{out} exists and is not an empty folder", hint="give a new folder to --out")
    with services.sessions() as session:
        through = sealed_through(session)
        seqs = selected_seqs(services, session, sel, through)
        if progress is not None:
            progress(0, len(seqs))
        files, counts, ranges = _render(services, session, seqs, progress)
    import json

    lines = [json.loads(line) for line in files["records.jsonl"].splitlines() if line]
    if "rsmf" in formats:
        from archiver import rsmf, transcript as _t

        files[rsmf.NAME] = rsmf.build(lines, {k: v for k, v in files.items() if k.startswith("media/")},
                                      _t.describe(sel.as_dict()))
    pdf: dict[str, Any] | None = None
    if signer is not None:
        unsigned = transcript.render(lines, cover={"selection": sel.as_dict(), "counts": counts,
                                                   "through_seq": through},
                                     tz=zone, media={k: v for k, v in files.items() if k.startswith("media/")},
                                     on_pages=pages)
        from archiver.pdf import sign

        pdf = {"bytes": sign.sign_pdf(unsigned, signer, reason="whatsapp-archiver: export transcript"),
               "entry": {"file": TRANSCRIPT, "tz": zone.key, "unsigned_length": len(unsigned),
                         "unsigned_sha256": sha256_hex(unsigned)}}
    # Written beside ``out`` and moved into place once audited: no bundle exists unaudited.
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    try:
        digest = _write_files(services, work, sel, through, files, counts, ranges, actor, pdf)
        with services.sessions.begin() as session:
            extra = {"export": export_id} if export_id is not None else {}
            append_audit(session, "export", actor, selection=sel.as_dict(), through_seq=through, counts=counts,
                         manifest_sha256=digest, **extra)
        if out.exists():
            out.rmdir()  # empty, checked above
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Result(out, counts, digest, through)


def _write_files(services: Services, work: Path, sel: Selection, through: int, files: dict[str, bytes],
                 counts: dict[str, int], ranges: list[list[int]], actor: str,
                 pdf: dict[str, Any] | None = None) -> str:
    """Write the bundle into ``work``; return the manifest's SHA-256.

    The transcript (``pdf``) is signed with a signing time, so the manifest lists the
    length and SHA-256 of its unsigned revision (a prefix of the file: the signature is an
    incremental update) and ``EXPORT.json`` the hash of the whole signed file."""
    work.mkdir(mode=0o700)
    listed: dict[str, str] = {}
    for name in sorted(files):
        _write(work / name, files[name])
        listed[name] = sha256_hex(files[name])
    public = services.signing_key.public_key()
    body: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "selection": sel.as_dict(), "through_seq": through,
        "archive": {"key_id": chain.key_id_of(public)}, "counts": counts, "seqs": ranges, "files": listed,
    }
    signed: dict[str, str] = {}
    if pdf is not None:
        _write(work / TRANSCRIPT, pdf["bytes"])
        body["transcript"] = pdf["entry"]
        signed[TRANSCRIPT] = sha256_hex(pdf["bytes"])
    manifest = canonical(body) + b"\n"
    digest = sha256_hex(manifest)
    _write(work / "MANIFEST.json", manifest)
    _write(work / "MANIFEST.json.sig", _signature(services, manifest))
    stamp: dict[str, Any] = {"manifest_sha256": digest, "exported_by": actor,
                             "exported_at": datetime.now(timezone.utc).isoformat()}
    if signed:
        stamp["signed_files"] = signed
    export = canonical(stamp) + b"\n"
    _write(work / "EXPORT.json", export)
    _write(work / "EXPORT.json.sig", _signature(services, export))
    return digest


def zip_bundle(folder: Path) -> bytes:
    """The bundle as one zip: files in name order, a fixed time, so equal folders zip equally."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def _signature(services: Services, data: bytes) -> bytes:
    return base64.b64encode(services.signing_key.sign(data)) + b"\n"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _render(services: Services, session: Session, seqs: list[int],
            progress: Progress | None = None) -> tuple[dict[str, bytes], dict[str, int], list[list[int]]]:
    """Every file the manifest lists, by relative path, with the counts and the seq ranges."""
    rows: dict[int, Record] = {}
    for part in chunked(seqs, 500):
        rows.update((r.seq, r) for r in session.scalars(select(Record).where(Record.seq.in_(part))))
    attachments: dict[int, list[Media]] = {}  # one query per 500 seqs, not one per record
    for part in chunked(seqs, 500):
        for m in session.scalars(select(Media).where(Media.record_seq.in_(part)).order_by(Media.id)):
            attachments.setdefault(m.record_seq, []).append(m)
    segments: dict[int, tuple[Segment, list[dict[str, Any]] | None, list[bytes], list[list[str]]]] = {}
    deleted: dict[int, dict[str, Any]] = {}
    keys_cache: dict[str, bytes | None] = {}
    selected = set(seqs)
    items_of: dict[int, list[int]] = {}
    for seq in seqs:
        d = rows[seq].delivery_seq
        if d is not None and d in selected and d != seq:
            items_of.setdefault(d, []).append(seq)
    lines, proofs = [], []
    threads: dict[str, list[tuple[int, int]]] = {}
    media_files: dict[str, bytes] = {}
    counts = {"records": 0, "shredded": 0, "disposed": 0, "media_files": 0, "media_missing": 0, "checkpoints": 0,
              "threads": 0}
    first_cp = last_cp = None
    for seq in seqs:
        row = rows[seq]
        if row.segment_id not in segments:
            seg = session.get(Segment, row.segment_id)
            if seg is None:
                raise IntegrityError(f"seq {seq}", "its segment is not in the catalog")
            got, sealed_or_none, leaves = _segment(services, session, seg, deleted)
            segments[row.segment_id] = (got, sealed_or_none, leaves, chain.inclusion_proofs(leaves))
        seg, sealed_or_none, leaves, paths = segments[row.segment_id]
        index = seq - seg.first_seq
        if sealed_or_none is None:  # deleted by disposition: the proof kept at the deletion
            lines.append(canonical(_disposed_line(session, row, index, leaves, deleted[seg.id], items_of)))
            proofs.append(canonical({"seq": seq, "segment": seg.key, "checkpoint": seg.checkpoint_key,
                                     "leaf_index": index, "tree_size": len(leaves), "path": paths[index]}))
            counts["records"] += 1
            counts["shredded"] += 1
            counts["disposed"] += 1
            first_cp = seg.first_seq if first_cp is None else min(first_cp, seg.first_seq)
            last_cp = seg.last_seq if last_cp is None else max(last_cp, seg.last_seq)
            continue
        sealed = sealed_or_none
        rec = sealed[index]
        if rec["seq"] != seq or rec["hash"] != row.hash:
            raise IntegrityError(f"seq {seq}", f"segment {seg.key} does not hold it as the catalog says")
        salt, plain = _open(services, session, rec, keys_cache)
        line: dict[str, Any] = {
            "seq": seq, "hash": rec["hash"], "prev_hash": _prev_hash(session, seq, sealed, index),
            "kind": rec["kind"], "type": rec.get("type"), "contact": row.contact, "thread": row.contact,
            "occurred_at": _iso(row.occurred_at), "delivery_seq": row.delivery_seq if row.delivery_seq != seq else None,
            "items": items_of.get(seq, []), "links": row.links or {}, "commitment": rec["commit"],
            "shredded": plain is None, "salt": salt.hex() if salt is not None else None,
            "plaintext": base64.b64encode(plain).decode() if plain is not None else None,
            "content": jsonview.view(plain).get("value") if plain is not None else None,
            "media": _media(services, session, rec, attachments.get(seq, []), plain is not None, keys_cache,
                            media_files, counts),
            "sealed": {k: v for k, v in rec.items() if k != "hash"},
        }
        lines.append(canonical(line))
        proofs.append(canonical({"seq": seq, "segment": seg.key, "checkpoint": seg.checkpoint_key,
                                 "leaf_index": index, "tree_size": len(paths), "path": paths[index]}))
        counts["records"] += 1
        counts["shredded"] += plain is None
        if progress is not None and counts["records"] % PROGRESS_EVERY == 0:
            progress(counts["records"], len(seqs))
        if row.contact and rec["kind"] != "delivery":
            threads.setdefault(row.contact, []).append((row.occurred_at or 0, seq))
        first_cp = seg.first_seq if first_cp is None else min(first_cp, seg.first_seq)
        last_cp = seg.last_seq if last_cp is None else max(last_cp, seg.last_seq)
    checkpoints = _checkpoints(services, session, first_cp, last_cp) if first_cp is not None and last_cp is not None else []
    counts["checkpoints"] = len(checkpoints)
    counts["threads"] = len(threads)
    if progress is not None:
        progress(counts["records"], len(seqs))
    public = services.signing_key.public_key()
    files = {
        "records.jsonl": b"".join(line + b"\n" for line in lines),
        "threads.json": canonical({c: [s for _, s in sorted(v)] for c, v in sorted(threads.items())}) + b"\n",
        "proofs/inclusion.jsonl": b"".join(p + b"\n" for p in proofs),
        "proofs/checkpoints.jsonl": b"".join(cp + b"\n" for cp in checkpoints),
        "public-key.pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        **media_files,
    }
    return files, counts, holds.ranges(seqs)


def _segment(services: Services, session: Session, seg: Segment,
             deleted: dict[int, dict[str, Any]]) -> tuple[Segment, list[dict[str, Any]] | None, list[bytes]]:
    """(segment, its sealed records or None once disposition deleted it, its leaf hashes)."""
    from archiver import worm_disposal

    try:
        sealed = segment_records(services, seg)
    except NotFound:
        row = worm_disposal.deletion_of(session, seg)
        if row is None:
            raise
        deleted[seg.id] = {"view": worm_disposal.view(row), "commitments": list(row.commitments or [])}
        return seg, None, [bytes.fromhex(h) for h in row.leaf_hashes]
    return seg, sealed, [chain.leaf_hash(chain.record_bytes(r)) for r in sealed]


def _disposed_line(session: Session, row: Record, index: int, leaves: list[bytes], deletion: dict[str, Any],
                   items_of: dict[int, list[int]]) -> dict[str, Any]:
    """The records.jsonl line of a record whose segment disposition deleted: proof, no content."""
    from archiver.disposition import disposed

    if not 0 <= index < len(leaves):
        raise IntegrityError(f"seq {row.seq}", "its deleted segment's proof does not cover it")
    commitments = deletion["commitments"]
    prev = session.get(Record, row.seq - 1) if row.seq > 1 else None
    return {
        "seq": row.seq, "hash": row.hash, "prev_hash": prev.hash if prev is not None else chain.GENESIS,
        "kind": row.kind, "type": row.type, "contact": row.contact, "thread": row.contact,
        "occurred_at": _iso(row.occurred_at), "delivery_seq": row.delivery_seq if row.delivery_seq != row.seq else None,
        "items": items_of.get(row.seq, []), "links": row.links or {},
        "commitment": commitments[index] if index < len(commitments) else None,
        "shredded": True, "salt": None, "plaintext": None, "content": None, "media": [], "sealed": None,
        "leaf_hash": leaves[index].hex(),
        "disposed": {**(disposed(session, row.key_id) or {"status": "disposed"}), "segment_deleted": deletion["view"]},
    }


def _iso(epoch: int | None) -> str | None:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat() if epoch is not None else None


def _prev_hash(session: Session, seq: int, sealed: list[dict[str, Any]], index: int) -> str:
    if index > 0:
        return str(sealed[index - 1]["hash"])
    if seq == 1:
        return chain.GENESIS
    prev = session.get(Record, seq - 1)
    if prev is None:
        raise IntegrityError(f"seq {seq - 1}", "the record before an exported one is not in the catalog")
    return prev.hash


def _key(session: Session, services: Services, kid: str, cache: dict[str, bytes | None]) -> bytes | None:
    if kid not in cache:
        row = session.get(DataKey, kid)
        cache[kid] = services.kek.unwrap(row.wrapped, kid) if row and row.wrapped else None
    return cache[kid]


def _open(services: Services, session: Session, rec: dict[str, Any],
          cache: dict[str, bytes | None]) -> tuple[bytes | None, bytes | None]:
    """(salt, plaintext) of a sealed record, (None, None) once its data key was destroyed."""
    data_key = _key(session, services, rec["kid"], cache)
    if data_key is None:
        return None, None
    return keys.open_payload(data_key, base64.b64decode(rec["ct"]), str(rec["seq"]).encode(), f"seq {rec['seq']}")


def _media(services: Services, session: Session, rec: dict[str, Any], named: list[Media], readable: bool,
           cache: dict[str, bytes | None], media_files: dict[str, bytes], counts: dict[str, int]) -> list[dict[str, Any]]:
    """The attachments of a record: a media record's file (written to ``media/<sha256>``), or the
    fetch state of each attachment a message named (stored, pending or failed: never silently absent)."""
    if rec["kind"] == "media":
        found = session.scalar(select(Media).where(Media.object_key == rec.get("object")).limit(1))
        entry: dict[str, Any] = {"object": rec.get("object"), "sha256": found.sha256 if found else None,
                                 "file": None, "state": "stored"}
        data_key = _key(session, services, found.key_id, cache) if found and readable else None
        if found is None or found.sha256 is None or data_key is None:
            entry["state"] = "shredded" if found is not None and data_key is None else "unreadable"
            counts["media_missing"] += 1
            return [entry]
        name = f"media/{found.sha256}"
        if name not in media_files:
            blob = services.store.get(str(rec["object"]))
            _, data = keys.open_payload(data_key, blob, str(rec["object"]).encode(), str(rec["object"]))
            if sha256_hex(data) != found.sha256:
                raise IntegrityError(str(rec["object"]), "media object holds other content than its record names")
            media_files[name] = data
            counts["media_files"] += 1
        entry["file"] = name
        return [entry]
    out = []
    for m in named:
        out.append({"media_id": m.media_id, "state": m.state, "sha256": m.sha256, "mime_type": m.mime_type,
                    "error": m.last_error if m.state != "stored" else None})
        counts["media_missing"] += m.state != "stored"
    return out


def _checkpoints(services: Services, session: Session, first: int, last: int) -> list[bytes]:
    """The stored checkpoints of the segments from the one starting at ``first`` to the one ending at
    ``last``: the chain between the first and the last exported record's checkpoints."""
    out = []
    for seg in session.scalars(select(Segment).where(Segment.first_seq >= first, Segment.last_seq <= last,
                                                      Segment.state == "stored").order_by(Segment.first_seq)):
        blob = services.store.get(seg.checkpoint_key)
        cp = chain.Checkpoint.from_bytes(blob, seg.checkpoint_key)
        out.append(cp.to_bytes())
    return out
