"""``archiver verify-export DIR``: check an export bundle with the archive's own integrity code.

The same checks as the standalone ``scripts/verify-export`` (docs/export-format.md, "How to
verify"), written on ``archiver.chain`` (its Merkle paths and checkpoints) instead of apart
from it; the tests run both on every tampered bundle. Needs no archive, catalog or key: only
the folder (and, optionally, the public key the bundle must carry).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from archiver import chain
from archiver.canonical import canonical, sha256_hex
from archiver.errors import IntegrityError
from archiver.export import FORMAT, UNLISTED, VERSION


class NotABundle(ValueError):
    """The folder lacks the manifest or key every bundle has, or they are unreadable."""


def verify_bundle(folder: Path, public_key: Path | None = None) -> tuple[list[str], dict[str, Any]]:
    """(problems, summary): each problem is ``FILE: [seq N: ]reason``; none means intact. Raises NotABundle."""
    out: list[str] = []

    def bad(where: str, reason: str, seq: int | None = None) -> None:
        out.append(f"{where}: seq {seq}: {reason}" if seq is not None else f"{where}: {reason}")

    try:
        manifest_bytes = (folder / "MANIFEST.json").read_bytes()
        manifest = json.loads(manifest_bytes)
        key = serialization.load_pem_public_key((folder / "public-key.pem").read_bytes())
    except (OSError, ValueError) as exc:
        raise NotABundle(f"{folder} is not an export bundle ({exc.__class__.__name__})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise NotABundle(f"{folder}/MANIFEST.json is not an {FORMAT} of version {VERSION}")
    if not isinstance(key, Ed25519PublicKey):
        raise NotABundle("public-key.pem is not an Ed25519 key")
    key_id = chain.key_id_of(key)
    if public_key is not None and chain.key_id_of(_pem_key(public_key)) != key_id:
        bad("public-key.pem", f"is not the key given by --public-key ({public_key})")
    if (manifest.get("archive") or {}).get("key_id") != key_id:
        bad("MANIFEST.json", "archive.key_id is not the id of public-key.pem")
    _signature(key, manifest_bytes, folder / "MANIFEST.json.sig", "MANIFEST.json", bad)
    try:
        export_bytes = (folder / "EXPORT.json").read_bytes()
        _signature(key, export_bytes, folder / "EXPORT.json.sig", "EXPORT.json", bad)
        if json.loads(export_bytes).get("manifest_sha256") != sha256_hex(manifest_bytes):
            bad("EXPORT.json", "manifest_sha256 is not the hash of MANIFEST.json")
    except (OSError, ValueError, AttributeError):
        bad("EXPORT.json", "missing or not JSON")

    listed: dict[str, str] = manifest.get("files") or {}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for name in sorted(listed):
        if name.startswith("/") or ".." in Path(name).parts:
            bad(name, "a path outside the bundle")
        elif name not in present:
            bad(name, "listed in MANIFEST.json but missing")
        elif sha256_hex((folder / name).read_bytes()) != listed[name]:
            bad(name, "SHA-256 differs from MANIFEST.json")
    for name in sorted(present - set(listed) - set(UNLISTED)):
        bad(name, "not listed in MANIFEST.json")

    checkpoints: dict[str, chain.Checkpoint] = {}
    prev: chain.Checkpoint | None = None
    for obj in _lines(folder, "proofs/checkpoints.jsonl", bad):
        try:
            cp = chain.Checkpoint(**obj)
        except TypeError:
            bad("proofs/checkpoints.jsonl", f"malformed checkpoint of {obj.get('segment')}")
            continue
        where = f"proofs/checkpoints.jsonl: checkpoint of {cp.segment}"
        try:
            cp.verify(key, where)
        except IntegrityError:
            bad(where, "signature does not verify")
        if cp.key_id != key_id:
            bad(where, "key_id is not the id of public-key.pem")
        if prev is not None and cp.prev_checkpoint != prev.digest():
            bad(where, "prev_checkpoint is not the digest of the checkpoint before it")
        if prev is not None and cp.first_seq != prev.last_seq + 1:
            bad(where, "first_seq does not follow the checkpoint before it")
        if prev is None and cp.first_seq == 1 and cp.prev_checkpoint != "":
            bad(where, "the archive's first checkpoint names a predecessor")
        checkpoints[cp.segment] = cp
        prev = cp

    proofs: dict[Any, dict[str, Any]] = {p.get("seq"): p for p in _lines(folder, "proofs/inclusion.jsonl", bad)}
    records = _lines(folder, "records.jsonl", bad)
    seen: list[int] = [r["seq"] if isinstance(r.get("seq"), int) else -1 for r in records]
    for rec in records:
        _record(folder, rec, proofs.get(rec.get("seq")), checkpoints, listed, bad)
    wanted: set[int] = {s for first, last in manifest.get("seqs") or [] for s in range(int(first), int(last) + 1)}
    if seen != sorted(set(seen)):
        bad("records.jsonl", "records are not in strictly ascending seq order")
    for seq in sorted(wanted - set(seen)):
        bad("records.jsonl", "listed in MANIFEST.json but missing", seq)
    for seq in sorted(set(seen) - wanted):
        bad("records.jsonl", "not listed in MANIFEST.json", seq)
    held = set(seen)
    for stray in sorted((s for s in proofs if s not in held), key=str):
        bad("proofs/inclusion.jsonl", "proof of a record the bundle does not hold", stray)
    if (manifest.get("counts") or {}).get("records") != len(records):
        bad("MANIFEST.json", f"counts.records differs from the {len(records)} records in records.jsonl")
    summary = {"records": len(records), "shredded": sum(1 for r in records if r.get("shredded")),
               "disposed": sum(1 for r in records if r.get("disposed")),
               "checkpoints": len(checkpoints), "key_id": key_id, "selection": manifest.get("selection")}
    return out, summary


def _pem_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise NotABundle(f"{path} is not an Ed25519 public key")
    return key


def _signature(key: Ed25519PublicKey, data: bytes, sig: Path, name: str, bad: Any) -> None:
    try:
        key.verify(base64.b64decode(sig.read_bytes().strip(), validate=True), data)
    except OSError:
        bad(sig.name, "missing")
    except (InvalidSignature, ValueError):
        bad(name, f"signature in {sig.name} does not verify")


def _lines(folder: Path, name: str, bad: Any) -> list[dict[str, Any]]:
    try:
        data = (folder / name).read_bytes()
    except OSError:
        bad(name, "missing")
        return []
    out = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad(name, f"line {number} is not JSON")
            continue
        if isinstance(obj, dict):
            out.append(obj)
        else:
            bad(name, f"line {number} is not an object")
    return out


def _record(folder: Path, rec: dict[str, Any], proof: dict[str, Any] | None,
            checkpoints: dict[str, chain.Checkpoint], listed: dict[str, str], bad: Any) -> None:
    seq = rec.get("seq")
    sealed = rec.get("sealed")
    if isinstance(seq, int) and sealed is None and isinstance(rec.get("disposed"), dict):
        _disposed(rec, proof, checkpoints, bad)  # its segment was deleted by disposition
        return
    if not isinstance(seq, int) or not isinstance(sealed, dict) or sealed.get("seq") != seq:
        bad("records.jsonl", "sealed record missing or of another seq", seq)
        return
    if rec.get("commitment") != sealed.get("commit") or rec.get("kind") != sealed.get("kind"):
        bad("records.jsonl", "commitment or kind differs from the sealed record", seq)
    body = chain.record_bytes(sealed)
    try:
        if chain.chain_hash(str(rec.get("prev_hash")), body) != rec.get("hash"):
            bad("records.jsonl", "hash does not recompute from prev_hash and the sealed record", seq)
    except ValueError:
        bad("records.jsonl", "prev_hash is not hex", seq)
    if rec.get("shredded"):
        if rec.get("plaintext") is not None or rec.get("salt") is not None:
            bad("records.jsonl", "a shredded record carries content", seq)
    else:
        try:
            salt, plain = bytes.fromhex(str(rec.get("salt"))), base64.b64decode(str(rec.get("plaintext")), validate=True)
        except ValueError:
            bad("records.jsonl", "salt or plaintext is not decodable", seq)
        else:
            if sha256_hex(salt + plain) != sealed.get("commit"):
                bad("records.jsonl", "plaintext and salt do not match the commitment", seq)
    for media in rec.get("media") or []:
        name = media.get("file")
        if name is None:
            continue
        if name not in listed:
            bad("records.jsonl", f"names {name}, which MANIFEST.json does not list", seq)
        elif not (folder / name).is_file():
            bad(str(name), "missing", seq)
        elif sha256_hex((folder / name).read_bytes()) != media.get("sha256") or Path(name).name != media.get("sha256"):
            bad(str(name), "bytes do not hash to the name and sha256 the record gives", seq)
    _included(rec, chain.leaf_hash(body), proof, checkpoints, bad)


def _disposed(rec: dict[str, Any], proof: dict[str, Any] | None, checkpoints: dict[str, chain.Checkpoint],
              bad: Any) -> None:
    """A disposed record whose segment is deleted: no content, its kept leaf hash proven included."""
    seq = rec.get("seq")
    if any(rec.get(k) is not None for k in ("plaintext", "salt", "content")) or not rec.get("shredded"):
        bad("records.jsonl", "a disposed record carries content", seq)
    try:
        leaf = bytes.fromhex(str(rec.get("leaf_hash")))
    except ValueError:
        leaf = b""
    if len(leaf) != 32:
        bad("records.jsonl", "a disposed record without its leaf_hash", seq)
        return
    _included(rec, leaf, proof, checkpoints, bad)


def _included(rec: dict[str, Any], leaf: bytes, proof: dict[str, Any] | None,
              checkpoints: dict[str, chain.Checkpoint], bad: Any) -> None:
    """The record's leaf is in its segment's tree, whose root the signed checkpoint names."""
    seq = rec.get("seq")
    assert isinstance(seq, int)
    if proof is None:
        bad("proofs/inclusion.jsonl", "no inclusion proof", seq)
        return
    cp = checkpoints.get(str(proof.get("segment")))
    if cp is None:
        bad("proofs/checkpoints.jsonl", f"no checkpoint for segment {proof.get('segment')}", seq)
        return
    if not cp.first_seq <= seq <= cp.last_seq:
        bad("proofs/inclusion.jsonl", "the checkpoint of its segment does not cover it", seq)
        return
    index, size = seq - cp.first_seq, cp.last_seq - cp.first_seq + 1
    if proof.get("leaf_index") != index or proof.get("tree_size") != size:
        bad("proofs/inclusion.jsonl", "leaf_index or tree_size disagree with the checkpoint", seq)
    try:
        chain.verify_inclusion(leaf, index, size, [str(p) for p in proof.get("path") or []],
                               cp.merkle_root)
    except (IntegrityError, ValueError):
        bad("proofs/inclusion.jsonl", "inclusion path does not lead to the checkpoint's Merkle root", seq)
    if seq == cp.last_seq and rec.get("hash") != cp.chain_hash:
        bad("records.jsonl", "hash of the segment's last record differs from the checkpoint's chain_hash", seq)


def canonical_line(obj: Any) -> bytes:
    """One line of a ``.jsonl`` file of the bundle (for tests that rewrite one)."""
    return canonical(obj) + b"\n"
