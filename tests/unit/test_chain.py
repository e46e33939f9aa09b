"""chain.py: canonical bytes, chain hashes, RFC 6962 Merkle trees, checkpoints."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver import chain
from archiver.errors import IntegrityError


def test_canonical_is_sorted_compact_utf8() -> None:
    assert chain.canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_chain_hash_is_sha256_of_prev_and_bytes() -> None:
    expected = hashlib.sha256(bytes(32) + b"x").hexdigest()
    assert chain.chain_hash(chain.GENESIS, b"x") == expected


def test_merkle_root_matches_rfc6962_vectors() -> None:
    # RFC 6962 test vectors (certificate-transparency-go merkletree tests), leaves "", "\x00", ...
    inputs = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              b"\x50\x51\x52\x53\x54\x55\x56\x57", b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]
    leaves = [chain.leaf_hash(d) for d in inputs]
    assert chain.merkle_root(leaves[:1]) == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert chain.merkle_root(leaves[:2]) == "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
    assert chain.merkle_root(leaves[:3]) == "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"
    assert chain.merkle_root(leaves) == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_inclusion_proofs_verify_and_detect_a_wrong_leaf() -> None:
    leaves = [chain.leaf_hash(bytes([i])) for i in range(13)]
    root = chain.merkle_root(leaves)
    for i in range(13):
        chain.verify_inclusion(leaves[i], i, 13, chain.inclusion_proof(leaves, i), root)
    with pytest.raises(IntegrityError):
        chain.verify_inclusion(leaves[3], 4, 13, chain.inclusion_proof(leaves, 4), root)


def test_empty_segment_fails_closed() -> None:
    with pytest.raises(IntegrityError):
        chain.merkle_root([])
    with pytest.raises(IntegrityError):
        chain.decode_segment(chain.encode_segment([]), "seg")


def test_checkpoint_sign_verify_and_forgery() -> None:
    key = Ed25519PrivateKey.generate()
    cp = chain.Checkpoint(segment="segments/default/1-2", retention_class="default", first_seq=1, last_seq=2,
                          merkle_root="aa", chain_hash="bb", prev_checkpoint="", created_at="t",
                          key_id=chain.key_id_of(key.public_key())).signed(key)
    cp.verify(key.public_key(), "cp")
    again = chain.Checkpoint.from_bytes(cp.to_bytes(), "cp")
    assert again == cp and again.digest() == cp.digest()
    forged = chain.Checkpoint.from_bytes(cp.to_bytes().replace(b'"last_seq":2', b'"last_seq":3'), "cp")
    with pytest.raises(IntegrityError, match="signature"):
        forged.verify(key.public_key(), "cp")
    with pytest.raises(IntegrityError, match="malformed"):
        chain.Checkpoint.from_bytes(b"{not json", "cp")


def test_segment_lines_are_the_stored_line_bytes() -> None:
    lines = [chain.canonical({"seq": 1, "t": "é"}), chain.canonical({"seq": 2})]
    blob = chain.encode_segment(lines)
    assert chain.segment_lines(blob, "seg") == lines
    assert chain.decode_segment(blob, "seg") == [{"seq": 1, "t": "é"}, {"seq": 2}]


@pytest.mark.parametrize(("blob", "reason"), [
    (b"not gzip", "segment cannot be decoded (BadGzipFile)"),
    (chain.encode_segment([b'{"seq":1}'])[:-12], "segment cannot be decoded (EOFError)"),
    (gzip.compress(b"", mtime=0)[:10] + b"\x07" + bytes(8),  # deflate block type 3 does not exist
     "segment cannot be decoded (error)"),  # zlib.error
    (chain.encode_segment([b""]), "segment holds no records"),
])
@pytest.mark.parametrize("inflater", ["isal", "zlib"])
def test_segment_lines_and_decode_segment_name_an_undecodable_segment(
        blob: bytes, reason: str, inflater: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if inflater == "zlib":  # the same names without ISA-L (with it, a refused blob is diagnosed by zlib)
        monkeypatch.setattr(chain, "_igzip", None)
    for read in (chain.segment_lines, chain.decode_segment):
        with pytest.raises(IntegrityError, match=rf"^seg: {re.escape(reason)}$"):
            read(blob, "seg")


def test_decode_segment_names_a_line_that_is_not_json() -> None:
    with pytest.raises(IntegrityError, match=r"^seg: segment cannot be decoded \(JSONDecodeError\)$"):
        chain.decode_segment(chain.encode_segment([b'{"seq":1}', b"{"]), "seg")


@pytest.mark.parametrize("deflater", ["isal", "zlib"])
def test_segments_are_plain_gzip_whichever_deflater_wrote_them(deflater: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert chain._isal is not None, "isal is a dependency: the fast deflater must be the one in use"
    if deflater == "zlib":
        monkeypatch.setattr(chain, "_isal", None)
    lines = [b'{"ct":"%s","seq":%d}' % (base64.b64encode(os.urandom(700)), i) for i in range(1, 200)]
    blob = chain.encode_segment(lines)
    assert gzip.decompress(blob) == b"\n".join(lines) + b"\n"  # any gzip reader
    assert chain.segment_lines(blob, "seg") == lines
    assert chain._igzip is not None, "isal is a dependency: the fast inflater must be the one in use"
    monkeypatch.setattr(chain, "_igzip", None)
    assert chain.segment_lines(blob, "seg") == lines  # the standard library's inflater reads the same
    assert len(blob) < 0.8 * len(b"\n".join(lines))  # base64's overhead is recovered either way


def test_inclusion_proofs_of_a_whole_tree_equal_each_leafs_own_proof() -> None:
    import hashlib

    from archiver import chain

    for size in (1, 2, 3, 5, 8, 13, 64, 100):
        leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(size)]
        root = chain.merkle_root(leaves)
        every = chain.inclusion_proofs(leaves)
        assert every == [chain.inclusion_proof(leaves, i) for i in range(size)]
        for i, path in enumerate(every):
            chain.verify_inclusion(leaves[i], i, size, path, root)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100])
def test_proven_nodes_agree_with_verify_inclusion_on_good_and_tampered_paths(size: int) -> None:
    """ProvenNodes (the export verifier's audit paths, reusing proven nodes) gives
    verify_inclusion's answer for every leaf of a tree, in any order, after a bad path too."""
    import random

    leaves = [chain.leaf_hash(f"record {i}".encode()) for i in range(size)]
    root = chain.merkle_root(leaves)
    proofs = chain.inclusion_proofs(leaves)
    rng = random.Random(size)
    cases: list[tuple[bytes, int, list[str]]] = []
    for i in range(size):
        cases.append((leaves[i], i, proofs[i]))
        if proofs[i]:
            bad = list(proofs[i])
            j = rng.randrange(len(bad))
            bad[j] = ("0" if bad[j][0] != "0" else "1") + bad[j][1:]
            cases.append((leaves[i], i, bad))  # a sibling changed: above a proven node too
            cases.append((leaves[i], i, proofs[i][:-1]))  # too short
            cases.append((leaves[i], i, [*proofs[i], "00" * 32]))  # too long
        cases.append((leaves[(i + 1) % size], i, proofs[i]))  # another leaf
    rng.shuffle(cases)
    tree = chain.ProvenNodes(root)
    for leaf, index, path in cases:
        try:
            chain.verify_inclusion(leaf, index, size, path, root)
            want = True
        except IntegrityError:
            want = False
        try:
            tree.verify_inclusion(leaf, index, size, path)
            got = True
        except IntegrityError:
            got = False
        assert got == want, (size, index, path)
