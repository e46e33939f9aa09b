"""``archiver verify-export DIR``: check an export bundle with the archive's own integrity code.

The same checks as the standalone ``scripts/verify-export`` (docs/export-format.md, "How to
verify"), written on ``archiver.chain`` (its Merkle paths and checkpoints) instead of apart
from it; the tests run both on every tampered bundle. Needs no archive, catalog or key: only
the folder (and, optionally, the public key the bundle must carry).
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import os
import pickle
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from archiver import chain
from archiver.canonical import canonical, sha256_hex
from archiver.errors import IntegrityError
from archiver.export import FORMAT, TRANSCRIPT, UNLISTED, VERSION


class NotABundle(ValueError):
    """The folder lacks the manifest or key every bundle has, or they are unreadable."""


def verify_bundle(folder: Path, public_key: Path | None = None) -> tuple[list[str], dict[str, Any]]:
    """(problems, summary): each problem is ``FILE: [seq N: ]reason``; none means intact. Raises NotABundle."""
    gc_was = gc.isenabled()
    gc.disable()  # it makes no cycles; the collector would walk every parsed line again and again
    try:
        return _verify_bundle(folder, public_key)
    finally:
        if gc_was:
            gc.enable()


def _verify_bundle(folder: Path, public_key: Path | None) -> tuple[list[str], dict[str, Any]]:
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
    kept: dict[str, bytes] = {}  # the .jsonl files read again below: read once
    for name in sorted(listed):
        if name.startswith("/") or ".." in Path(name).parts:
            bad(name, "a path outside the bundle")
        elif name not in present:
            bad(name, "listed in MANIFEST.json but missing")
        else:
            blob = (folder / name).read_bytes()
            if name in _READ_AGAIN:
                kept[name] = blob
            if sha256_hex(blob) != listed[name]:
                bad(name, "SHA-256 differs from MANIFEST.json")
    entry = manifest.get("transcript")
    extra: set[str] = set()
    if isinstance(entry, dict):
        name = TRANSCRIPT
        extra.add(name)
        if name not in present:
            bad(name, "named in MANIFEST.json but missing")
        else:
            data = (folder / name).read_bytes()
            length = entry.get("unsigned_length")
            if not isinstance(length, int) or sha256_hex(data[:length]) != entry.get("unsigned_sha256"):
                bad(name, "its unsigned revision differs from MANIFEST.json")
    for name in sorted(present - set(listed) - set(UNLISTED) - extra):
        bad(name, "not listed in MANIFEST.json")

    checkpoints: dict[str, chain.Checkpoint] = {}
    prev: chain.Checkpoint | None = None
    for obj in _lines(folder, "proofs/checkpoints.jsonl", bad, kept):
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

    proofs: dict[Any, dict[str, Any]] = {p.get("seq"): p for p in _lines(folder, "proofs/inclusion.jsonl", bad, kept)}
    trees = {name: chain.ProvenNodes(cp.merkle_root) for name, cp in checkpoints.items()}
    whole: bytes | None = kept.pop("records.jsonl", None)
    if whole is None:
        try:
            whole = (folder / "records.jsonl").read_bytes()
        except OSError:
            bad("records.jsonl", "missing")
            whole = b""
    kept.clear()
    parts = _run_parts(whole, _split(whole, _workers()), _Context(folder, proofs, checkpoints, trees, listed))
    for part in parts:  # every part's unreadable lines first, as reading the file whole names them
        out.extend(part.read)
    seen: list[int] = []
    for part in parts:
        out.extend(part.checked)
        seen += part.seen
    count = len(seen)
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
    if (manifest.get("counts") or {}).get("records") != count:
        bad("MANIFEST.json", f"counts.records differs from the {count} records in records.jsonl")
    summary = {"records": count, "shredded": sum(p.shredded for p in parts), "disposed": sum(p.disposed for p in parts),
               "checkpoints": len(checkpoints), "key_id": key_id, "selection": manifest.get("selection")}
    return out, summary


# --------------------------------------------------------------------------- records.jsonl in parts

PART_MIN = 20_000
"""Lines: below this many per part, one process checks records.jsonl."""


@dataclass(frozen=True)
class _Context:
    folder: Path
    proofs: dict[Any, dict[str, Any]]
    checkpoints: dict[str, chain.Checkpoint]
    trees: dict[str, chain.ProvenNodes]
    listed: dict[str, str]


@dataclass
class _Part:
    read: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    shredded: int = 0
    disposed: int = 0


def _workers() -> int:
    """Processes for records.jsonl: the usable cores (at most 4), 1 where fork is not safe
    (no fork, or other threads alive in this process: a web server, an export runner)."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def _split(data: bytes, parts: int) -> list[tuple[int, int, int]]:
    """``data`` cut at line ends into up to ``parts`` pieces: (start, end, number of its first line)."""
    parts = max(1, min(parts, data.count(b"\n") // PART_MIN))
    out, start, number = [], 0, 1
    for i in range(1, parts):
        cut = data.find(b"\n", max(start, len(data) * i // parts))
        if cut < 0:
            break
        out.append((start, cut + 1, number))
        number += data.count(b"\n", start, cut + 1)
        start = cut + 1
    out.append((start, len(data), number))
    return out


def _check_part(data: bytes, start: int, end: int, number: int, ctx: _Context) -> _Part:
    """Read and check the records of ``data[start:end]`` (its first line ``number``), one line in
    memory at a time."""
    part = _Part()

    def bad(where: str, reason: str, seq: int | None = None) -> None:
        part.checked.append(f"{where}: seq {seq}: {reason}" if seq is not None else f"{where}: {reason}")

    while start < end:
        stop = data.find(b"\n", start, end)
        stop = end if stop < 0 else stop
        line, here = data[start:stop], number
        start, number = stop + 1, number + 1
        if not line:
            continue
        try:
            rec = _loads(line)
        except ValueError:
            part.read.append(f"records.jsonl: line {here} is not JSON")
            continue
        if not isinstance(rec, dict):
            part.read.append(f"records.jsonl: line {here} is not an object")
            continue
        seq = rec.get("seq")
        part.seen.append(seq if isinstance(seq, int) else -1)
        part.shredded += bool(rec.get("shredded"))
        part.disposed += bool(rec.get("disposed"))
        proof = ctx.proofs.get(seq)
        if _fast(rec, proof, ctx.checkpoints, ctx.trees, line):
            _content(ctx.folder, rec, ctx.listed, bad)
        else:
            _record(ctx.folder, rec, proof, ctx.checkpoints, ctx.listed, bad)
    return part


def _run_parts(data: bytes, pieces: list[tuple[int, int, int]], ctx: _Context) -> list[_Part]:
    """``_check_part`` of each piece: the first here, the others in forked children that send
    their result back through a pipe and leave with ``os._exit``; a failed child's piece is
    checked here instead. Results in piece order."""
    children = []
    for start, end, first in pieces[1:]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                with os.fdopen(w, "wb") as sink:
                    pickle.dump(_check_part(data, start, end, first, ctx), sink, protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException:  # noqa: BLE001 - the parent checks this piece itself
                code = 1
            os._exit(code)
        os.close(w)
        children.append((pid, r, start, end, first))
    results = [_check_part(data, *pieces[0], ctx)]
    for pid, r, start, end, first in children:
        with os.fdopen(r, "rb") as source:
            blob = source.read()
        _, status = os.waitpid(pid, 0)
        try:
            part = pickle.loads(blob) if status == 0 else None  # noqa: S301 - our own child's result
        except Exception:  # noqa: BLE001
            part = None
        results.append(part if isinstance(part, _Part) else _check_part(data, start, end, first, ctx))
    return results


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


_READ_AGAIN = ("records.jsonl", "proofs/inclusion.jsonl", "proofs/checkpoints.jsonl")


def _loads(line: bytes) -> Any:
    """``json.loads``'s value of ``line``: orjson's when it takes the line (it refuses a lone
    surrogate's escape, NaN, integers beyond 64 bits, which ``json`` reads), else json's."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def _lines(folder: Path, name: str, bad: Any, kept: dict[str, bytes] | None = None) -> list[dict[str, Any]]:
    """The objects of a .jsonl file of the bundle (its bytes from ``kept`` when read already)."""
    data = (kept or {}).get(name)
    if data is None:
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
            obj = _loads(line)
        except ValueError:
            bad(name, f"line {number} is not JSON")
            continue
        if isinstance(obj, dict):
            out.append(obj)
        else:
            bad(name, f"line {number} is not an object")
    return out


#: How a canonical records.jsonl line ends after its ``sealed`` object: the keys sorting after
#: it, all scalars (docs/export-format.md).
_SEALED_TAIL = re.compile(rb'\},"seq":-?[0-9]+(?:,"shredded":(?:true|false))?(?:,"thread":(?:null|"[^"\\]*"))?'
                          rb'(?:,"type":(?:null|"[^"\\]*"))?\}\Z')


def _sealed_bytes(line: bytes) -> bytes | None:
    """The line's top-level ``sealed`` object as it stands in the line (None: the line does not
    end as a canonical one does). Trusted only once it hashes to the record's chain hash and
    its leaf leads to the signed root: then they are the archive's canonical record bytes, and
    being the last top-level value before scalar keys only, they are what was parsed as ``sealed``."""
    start = line.rfind(b',"sealed":{')
    if start < 0:
        return None
    end = _SEALED_TAIL.search(line, start + 10)
    return line[start + 10:end.start() + 1] if end is not None else None


def _fast(rec: dict[str, Any], proof: dict[str, Any] | None, checkpoints: dict[str, chain.Checkpoint],
          trees: dict[str, chain.ProvenNodes], line: bytes) -> bool:
    """True when the record's structural checks (its sealed seq, commitment and kind, chain
    hash, audit path, last chain hash) all pass on its sealed bytes as they stand in the line;
    False sends it through :func:`_record`, which checks (and reports) it from the parsed object."""
    seq, sealed = rec.get("seq"), rec.get("sealed")
    if not isinstance(seq, int) or not isinstance(sealed, dict) or sealed.get("seq") != seq or proof is None:
        return False
    if rec.get("commitment") != sealed.get("commit") or rec.get("kind") != sealed.get("kind"):
        return False
    body, prev = _sealed_bytes(line), rec.get("prev_hash")
    if body is None or not isinstance(prev, str) or len(prev) != 64:
        return False
    segment = str(proof.get("segment"))
    cp, tree, path = checkpoints.get(segment), trees.get(segment), proof.get("path")
    if cp is None or tree is None or not cp.first_seq <= seq <= cp.last_seq or not isinstance(path, list):
        return False
    index, size = seq - cp.first_seq, cp.last_seq - cp.first_seq + 1
    if proof.get("leaf_index") != index or proof.get("tree_size") != size or not all(isinstance(p, str) for p in path):
        return False
    try:
        if hashlib.sha256(bytes.fromhex(prev) + body).hexdigest() != rec.get("hash"):
            return False
        tree.verify_inclusion(chain.leaf_hash(body), index, size, path)
    except (IntegrityError, ValueError):
        return False
    return not (seq == cp.last_seq and rec.get("hash") != cp.chain_hash)


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
    _content(folder, rec, listed, bad)
    _included(rec, chain.leaf_hash(body), proof, checkpoints, bad)


def _content(folder: Path, rec: dict[str, Any], listed: dict[str, str], bad: Any) -> None:
    """The commitment against salt and plaintext, and the media files the record names."""
    seq, sealed = rec.get("seq"), rec.get("sealed") or {}
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
