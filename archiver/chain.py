"""Pure integrity code: canonical bytes, the hash chain, RFC 6962 Merkle trees, segment
framing, the object key layout and signed checkpoints.

This is the module an external verifier ports. It imports no Flask, SQLAlchemy or boto3.

Format (version 1):
- A record is a JSON object; its *canonical bytes* (``archiver.canonical``) are ``json.dumps(sort_keys=True,
  separators=(",", ":"), ensure_ascii=False)`` in UTF-8, without its ``hash`` field.
- ``hash(seq) = SHA-256(bytes.fromhex(hash(seq-1)) || canonical(record))``; the hash before
  seq 1 is 32 zero bytes (``GENESIS``).
- A segment holds a contiguous run of seqs of one retention class: gzip of JSON Lines, each
  line the canonical record plus its ``hash``.
- The segment's Merkle root follows RFC 6962 section 2.1: leaf = SHA-256(0x00 || canonical),
  node = SHA-256(0x01 || left || right).
- A checkpoint names a segment, its first/last seq, Merkle root, the chain hash at its last
  seq and the hash of the previous checkpoint, and is signed with Ed25519.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zlib
from dataclasses import asdict, dataclass, replace
from typing import Any

try:  # ISA-L's deflate: smaller segments than zlib's fastest mode, several times faster
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal
except ImportError:  # a platform without its wheels: the standard library (same format)
    _isal = None  # type: ignore[assignment]  # checked before each use
    _igzip = None  # type: ignore[assignment]

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from archiver.canonical import canonical, sha256_hex
from archiver.errors import IntegrityError

FORMAT = 1
GENESIS = "00" * 32


def chain_hash(prev_hex: str, record_bytes: bytes) -> str:
    """The chain hash of a record given the previous record's hash."""
    return hashlib.sha256(bytes.fromhex(prev_hex) + record_bytes).hexdigest()


def record_bytes(record: dict[str, Any]) -> bytes:
    """Canonical bytes of a sealed record, excluding its own ``hash``."""
    return canonical({k: v for k, v in record.items() if k != "hash"})


# --- RFC 6962 Merkle tree -------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: list[bytes]) -> str:
    """Hex Merkle Tree Hash of already-hashed leaves. Raises IntegrityError when empty.

    Pairing left to right and carrying an odd last node up unchanged yields exactly the
    RFC 6962 tree (split at the largest power of two below n).
    """
    if not leaves:
        raise IntegrityError("segment", "an empty segment has no Merkle root")
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def inclusion_proof(leaves: list[bytes], index: int) -> list[str]:
    """RFC 6962 audit path (hex, bottom-up) for ``leaves[index]``."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return inclusion_proof(leaves[:k], index) + [merkle_root(leaves[k:])]
    return inclusion_proof(leaves[k:], index - k) + [merkle_root(leaves[:k])]


def inclusion_proofs(leaves: list[bytes]) -> list[list[str]]:
    """``inclusion_proof(leaves, i)`` for every ``i``, in O(n log n) (each subtree's root is
    computed once, not once per leaf). Raises IntegrityError when empty."""
    if not leaves:
        raise IntegrityError("segment", "an empty segment has no Merkle root")
    return [[h.hex() for h in path] for path in _paths(leaves)[1]]


def _paths(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """(root, the bottom-up audit path of each leaf) of the RFC 6962 tree of ``leaves``."""
    if len(leaves) == 1:
        return leaves[0], [[]]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    left_root, left = _paths(leaves[:k])
    right_root, right = _paths(leaves[k:])
    for path in left:
        path.append(right_root)
    for path in right:
        path.append(left_root)
    return node_hash(left_root, right_root), left + right


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[str], root_hex: str) -> None:
    """Check an RFC 6962 audit path (RFC 9162 section 2.1.3.2). Raises IntegrityError."""
    if index >= size:
        raise IntegrityError(f"leaf {index}", "index beyond tree size")
    fn, sn, r = index, size - 1, leaf
    for p in (bytes.fromhex(h) for h in path):
        if sn == 0:
            raise IntegrityError(f"leaf {index}", "audit path too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r.hex() != root_hex:
        raise IntegrityError(f"leaf {index}", f"audit path gives root {r.hex()}, expected {root_hex}")


class ProvenNodes:
    """The nodes of one Merkle tree (root ``root_hex``) that a checked audit path has proven:
    (level, index) -> (node, that path, where in it). A later path that reaches a proven node
    with the same node and the same rest of the path leads to the same root: its remaining
    hashes are not recomputed (the rest of the path is compared entry by entry). For checking
    many paths of one tree, as an export's verifier does; the result is ``verify_inclusion``'s."""

    def __init__(self, root_hex: str) -> None:
        self.root_hex = root_hex
        self._known: dict[tuple[int, int], tuple[bytes, list[str], int]] = {}

    def verify_inclusion(self, leaf: bytes, index: int, size: int, path: list[str]) -> None:
        """As :func:`verify_inclusion` against this tree's root. Raises IntegrityError, ValueError."""
        if index >= size or index < 0:
            raise IntegrityError(f"leaf {index}", "index beyond tree size")
        fn, sn, r, level = index, size - 1, leaf, 0
        seen: list[tuple[tuple[int, int], bytes, int]] = []
        known = self._known
        for i, p in enumerate(path):
            got = known.get((level, fn))
            if got is not None and got[0] == r and got[1][got[2]:] == path[i:]:
                self._note(seen, path)
                return
            seen.append(((level, fn), r, i))
            if sn == 0:
                raise IntegrityError(f"leaf {index}", "audit path too long")
            node = bytes.fromhex(p)
            if fn & 1 or fn == sn:
                r = node_hash(node, r)
                while not fn & 1 and fn:
                    fn, sn, level = fn >> 1, sn >> 1, level + 1
            else:
                r = node_hash(r, node)
            fn, sn, level = fn >> 1, sn >> 1, level + 1
        if sn != 0 or r.hex() != self.root_hex:
            raise IntegrityError(f"leaf {index}", f"audit path gives root {r.hex()}, expected {self.root_hex}")
        self._note(seen, path)

    def _note(self, seen: list[tuple[tuple[int, int], bytes, int]], path: list[str]) -> None:
        for where, node, i in seen:
            self._known.setdefault(where, (node, path, i))


# --- segments and key layout ------------------------------------------------------------


def encode_segment(lines: list[bytes]) -> bytes:
    """Frame sealed record lines (canonical JSON incl. hash) as one gzip'd JSON Lines blob.

    Any gzip reader reads it (``segment_lines`` uses ISA-L's, else the standard library's). Records are
    mostly base64 ciphertext, where deflate mainly recovers base64's overhead: ISA-L level 1
    does that (to about 66%) at over 600 MB/s; without ISA-L, zlib's Huffman-only mode
    (about 76%, 3x slower). Both release the GIL while they compress.
    """
    data = b"\n".join(lines) + b"\n"
    if _isal is not None:
        return _isal.compress(data, 1, 31)  # wbits 31: gzip framing
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31, 9, zlib.Z_HUFFMAN_ONLY)
    return deflate.compress(data) + deflate.flush()


# What ISA-L raises for a blob it cannot gunzip (its stubs call ``error`` an instance: it is a class).
_ISAL_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError) + (  # type: ignore[assignment]
    (_isal.error,) if _isal is not None else ())


def segment_lines(blob: bytes, where: str) -> list[bytes]:
    """The record lines of a segment, as stored (framing checked by gzip's CRC).

    Gunzipped by ISA-L when it is there (the same checks, CRC and length included, in about
    half the standard library's CPU time: reading segments is mostly inflating them); a blob
    ISA-L refuses is read again by the standard library, whose error names the fault as ever.
    Raises IntegrityError naming ``where`` when the blob does not gunzip or holds no records.
    """
    try:
        text = _gunzip(blob)
    except (OSError, EOFError, zlib.error) as exc:
        raise IntegrityError(where, f"segment cannot be decoded ({exc.__class__.__name__})") from exc
    lines = [line for line in text.split(b"\n") if line]
    if not lines:
        raise IntegrityError(where, "segment holds no records")
    return lines


def _gunzip(blob: bytes) -> bytes:
    if _igzip is not None:
        try:
            return bytes(_igzip.decompress(blob))  # type: ignore[no-untyped-call]
        except _ISAL_ERRORS:
            pass
    return gzip.decompress(blob)


def decode_segment(blob: bytes, where: str) -> list[dict[str, Any]]:
    """Parse a segment back into records. Raises IntegrityError naming ``where``."""
    lines = segment_lines(blob, where)
    try:
        return [json.loads(line) for line in lines]
    except ValueError as exc:
        raise IntegrityError(where, f"segment cannot be decoded ({exc.__class__.__name__})") from exc


def segment_key(retention_class: str, first: int, last: int) -> str:
    """Object key of the segment holding seqs first..last of one class."""
    return f"segments/{retention_class}/{first:012d}-{last:012d}.jsonl.gz"


def checkpoint_key(last: int) -> str:
    """Object key of the checkpoint sealing up to seq ``last``."""
    return f"checkpoints/{last:012d}.json"


def media_key(sha256_plain: str, key_id: str) -> str:
    """Object key of an encrypted attachment: by content hash, then by data key scope."""
    return f"media/{sha256_plain}/{sha256_hex(key_id.encode())[:16]}"


# --- checkpoints ------------------------------------------------------------------------


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Short, stable id of a checkpoint signing key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return sha256_hex(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))[:16]


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement about one sealed segment and the chain up to its last seq."""

    segment: str
    retention_class: str
    first_seq: int
    last_seq: int
    merkle_root: str
    chain_hash: str
    prev_checkpoint: str
    created_at: str
    key_id: str
    signature: str = ""
    v: int = FORMAT

    def signing_bytes(self) -> bytes:
        """The bytes the signature covers: canonical JSON without ``signature``."""
        return canonical({k: v for k, v in asdict(self).items() if k != "signature"})

    def to_bytes(self) -> bytes:
        """Canonical JSON of the whole checkpoint, signature included."""
        return canonical(asdict(self))

    def digest(self) -> str:
        """Hash of this checkpoint; the next checkpoint names it as ``prev_checkpoint``."""
        return sha256_hex(self.to_bytes())

    def signed(self, private_key: Ed25519PrivateKey) -> "Checkpoint":
        """Return a copy signed with ``private_key``."""
        sig = private_key.sign(self.signing_bytes())
        return replace(self, signature=base64.b64encode(sig).decode())

    def verify(self, public_key: Ed25519PublicKey, where: str) -> None:
        """Check the signature. Raises IntegrityError naming ``where``."""
        try:
            public_key.verify(base64.b64decode(self.signature), self.signing_bytes())
        except (InvalidSignature, ValueError) as exc:
            raise IntegrityError(where, "checkpoint signature does not verify") from exc

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "Checkpoint":
        """Parse a stored checkpoint. Raises IntegrityError when malformed."""
        try:
            obj = json.loads(data)
            return cls(**obj)
        except (ValueError, TypeError) as exc:
            raise IntegrityError(where, "checkpoint is malformed") from exc
