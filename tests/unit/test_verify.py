"""verify.py on a synthetic archive in memory: one process and several give the same report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from archiver import chain, verify
from archiver.errors import IntegrityError, NotFound, StoreError
from archiver.store import ObjectInfo

SIGNER = Ed25519PrivateKey.generate()
PUBLIC = SIGNER.public_key()


class MemoryStore:
    """Just enough of a WormStore for the verifier (get, head, list); keys in ``failing`` error."""

    url = "memory://"
    process_safe = False  # verification's workers would need the objects piped to them

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.failing: set[str] = set()

    def get(self, key: str) -> bytes:
        if key in self.failing:
            raise StoreError(f"store down while reading {key}")
        try:
            return self.objects[key]
        except KeyError as exc:
            raise NotFound(f"no object {key}") from exc

    def head(self, key: str) -> ObjectInfo:
        data = self.get(key)
        return ObjectInfo(key, len(data), None, False, hashlib.sha256(data).hexdigest())

    def list(self, prefix: str) -> Iterator[str]:
        return iter(sorted(k for k in self.objects if k.startswith(prefix)))


def build(sizes: list[int], media: tuple[int, ...] = ()) -> tuple[MemoryStore, list[chain.Checkpoint]]:
    """Chained, checkpointed segments of ``sizes`` records; the seqs in ``media`` are media records."""
    store, cps, first, h = MemoryStore(), [], 1, chain.GENESIS
    for size in sizes:
        last, lines, leaves = first + size - 1, [], []
        for seq in range(first, last + 1):
            rec: dict[str, Any] = {"class": "default", "ct": f"ciphertext {seq} " * 20, "kind": "message", "seq": seq}
            if seq in media:
                store.objects[f"media/{seq}"] = b"photo %d" % seq
                rec.update(kind="media", object=f"media/{seq}", object_sha256=chain.sha256_hex(b"photo %d" % seq))
            h = chain.chain_hash(h, chain.canonical(rec))
            leaves.append(chain.leaf_hash(chain.canonical(rec)))
            lines.append(chain.canonical({**rec, "hash": h}))
        key = chain.segment_key("default", first, last)
        store.objects[key] = chain.encode_segment(lines)
        cps.append(chain.Checkpoint(
            segment=key, retention_class="default", first_seq=first, last_seq=last,
            merkle_root=chain.merkle_root(leaves), chain_hash=h, prev_checkpoint=cps[-1].digest() if cps else "",
            created_at="2026-11-27T00:00:00+00:00", key_id=chain.key_id_of(PUBLIC)).signed(SIGNER))
        store.objects[chain.checkpoint_key(last)] = cps[-1].to_bytes()
        first = last + 1
    return store, cps


def edit(store: MemoryStore, cp: chain.Checkpoint, change: Callable[[list[bytes]], None]) -> None:
    """Rewrite the lines of ``cp``'s segment in place."""
    lines = chain.segment_lines(store.objects[cp.segment], cp.segment)
    change(lines)
    store.objects[cp.segment] = chain.encode_segment(lines)


def retext(index: int) -> Callable[[list[bytes]], None]:
    """A change that alters the ciphertext of the record at ``index`` (its hash no longer recomputes)."""
    def change(lines: list[bytes]) -> None:
        lines[index] = lines[index].replace(b"ciphertext", b"ciphertexT", 1)
    return change


def audit(store: MemoryStore, workers: int | None) -> verify.Report:
    return verify.audit(store, PUBLIC, None, workers=workers)


def same_in_every_mode(store: MemoryStore) -> verify.Report:
    """The report of one process, after checking that 2 and 3 worker processes agree with it."""
    alone = audit(store, 1)
    for workers in (2, 3):
        assert audit(store, workers) == alone, workers
    return alone


@pytest.fixture
def pooled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the worker count of every process pool the verifier starts."""
    started: list[int] = []

    class Recording(verify.ProcessPoolExecutor):
        def __init__(self, workers: int, **kwargs: Any) -> None:
            started.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(verify, "ProcessPoolExecutor", Recording)
    return started


def test_intact_archive_gives_the_same_report_in_one_or_many_processes(pooled: list[int]) -> None:
    store, _ = build([5, 7, 1, 6, 4], media=(3, 9))
    r = same_in_every_mode(store)
    assert r == verify.Report(ok=True, records=23, segments=5, checkpoints=5)
    assert pooled == [2, 3]


def test_lowest_of_two_broken_segments_is_named(pooled: list[int]) -> None:
    store, cps = build([4, 4, 4, 4])
    edit(store, cps[3], retext(0))
    edit(store, cps[1], retext(2))
    r = same_in_every_mode(store)
    assert not r.ok and r.first_error.startswith(f"seq {cps[1].first_seq + 2}: hash ")
    assert pooled


@pytest.mark.parametrize("repeat", range(3))
def test_a_later_break_found_first_still_waits_its_turn(repeat: int) -> None:
    # Segment 1 breaks only after its last line; segment 2 is missing, known before any worker
    # starts; segment 3 breaks on its first line.
    store, cps = build([3, 300, 2, 300])
    edit(store, cps[1], lambda lines: lines.pop())
    del store.objects[cps[2].segment]
    edit(store, cps[3], retext(0))
    r = same_in_every_mode(store)
    assert r.first_error == f"seq {cps[1].last_seq}: segment {cps[1].segment} ends before the checkpoint's last seq"


def test_media_record_before_a_break_is_checked_first_and_after_it_not_at_all() -> None:
    store, cps = build([3, 5], media=(5, 8))
    del store.objects["media/5"], store.objects["media/8"]
    edit(store, cps[1], retext(2))  # seq 6
    assert same_in_every_mode(store).first_error == "media/5: media object named by seq 5 is missing"
    store.objects["media/5"] = b"photo 5"
    assert same_in_every_mode(store).first_error.startswith("seq 6: hash ")


def test_media_object_with_another_hash_is_named() -> None:
    store, _ = build([2, 2], media=(3,))
    store.objects["media/3"] = b"not the photo"
    assert same_in_every_mode(store).first_error == "media/3: media object hash differs from seq 3"


def test_store_failure_on_a_later_segment_waits_behind_an_earlier_break() -> None:
    store, cps = build([2, 2, 2, 2])
    store.failing.add(cps[3].segment)
    edit(store, cps[1], retext(1))
    assert same_in_every_mode(store).first_error.startswith(f"seq {cps[1].last_seq}: hash ")


@pytest.mark.parametrize("workers", [1, 2])
def test_store_failure_is_raised_not_reported(workers: int) -> None:
    store, cps = build([2, 2, 2])
    store.failing.add(cps[2].segment)
    with pytest.raises(StoreError, match="store down"):
        audit(store, workers)


def test_each_kind_of_segment_break_reads_the_same_in_a_worker() -> None:
    store, cps = build([2, 3, 2, 2, 2])
    edit(store, cps[4], lambda lines: lines.__setitem__(1, b'{"seq": 10'))
    r = same_in_every_mode(store)
    assert r.first_error == f"seq 11: record in {cps[4].segment} is malformed"
    edit(store, cps[3], lambda lines: lines.reverse())
    assert same_in_every_mode(store).first_error == f"seq 8: found seq 9 where 8 belongs in {cps[3].segment}"
    store.objects[cps[2].segment] = b"not gzip"
    assert same_in_every_mode(store).first_error == f"{cps[2].segment}: segment cannot be decoded (BadGzipFile)"
    edit(store, cps[1], lambda lines: lines.__setitem__(slice(None), lines[:2]))
    assert same_in_every_mode(store).first_error == f"seq 5: segment {cps[1].segment} ends before the checkpoint's last seq"


def test_automatic_mode_uses_a_pool_only_for_a_large_archive(pooled: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = build([3, 3, 3])
    monkeypatch.setattr(verify, "_can_fork", lambda: True)  # whatever threads other tests left behind
    assert audit(store, None).ok and pooled == []
    monkeypatch.setattr(verify, "PARALLEL_MIN_RECORDS", 9)
    monkeypatch.setattr(verify.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert audit(store, None).ok and pooled == [3]  # never more workers than segments


def test_no_worker_processes_on_this_platform_means_one_process(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    def no_semaphores(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(38, "Function not implemented")

    store, cps = build([2, 2, 2])
    edit(store, cps[1], retext(0))
    alone = audit(store, 1)
    monkeypatch.setattr(verify, "ProcessPoolExecutor", no_semaphores)
    assert audit(store, 2) == alone and alone.first_error.startswith("seq 3: hash ")
    assert "verify.no_workers workers=2 reason=OSError" in caplog.text


def test_empty_store_is_an_empty_report_in_any_mode() -> None:
    assert audit(MemoryStore(), 2) == audit(MemoryStore(), None) == verify.Report(ok=True)


# --- orjson reads records exactly as json.loads would -------------------------------------

SCALARS = st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63) | st.floats() | st.text()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                      max_leaves=8)
RECORDS = st.fixed_dictionaries(
    {"seq": st.just(1) | SCALARS, "hash": st.just("ab" * 32) | VALUES, "kind": st.sampled_from(["message", "media"]) | VALUES,
     "class": st.just("default") | VALUES},
    optional={"object": VALUES, "object_sha256": VALUES, "ct": st.text(), "links": VALUES, "journal": SCALARS},
)


def read_as_verify_does(line: bytes) -> str:
    """What _fields makes of ``line``: the error, or the fields it returns (the record itself for media)."""
    try:
        seq, stated, kind, cls, rec = verify._fields(line, 1, "seg")
    except IntegrityError as exc:
        return str(exc)
    return repr((seq, stated, kind, cls, rec if kind == "media" else None))


def same_with_json_alone(line: bytes) -> None:
    with mock.patch.object(verify, "_fast_loads", None):
        expected = read_as_verify_does(line)
    assert read_as_verify_does(line) == expected


def test_orjson_is_in_use() -> None:
    assert verify._fast_loads is not None


@given(RECORDS, st.booleans(), st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]), st.sampled_from(["", " ", "x", "{}"]))
def test_records_read_the_same_as_with_json_alone(rec: dict[str, Any], ascii_only: bool, encoding: str, after: str) -> None:
    same_with_json_alone((json.dumps(rec, ensure_ascii=ascii_only) + after).encode(encoding, "surrogatepass"))


@given(st.binary(max_size=60) | st.sampled_from([
    b'{"seq":1,"hash":"h","kind":"message","class":"c","x":NaN}', b'{"seq":1,"hash":"\\ud800","kind":"k","class":"c"}',
    b'{"seq":1,"hash":"\xed\xa0\x80","kind":"k","class":"c"}', b'\xef\xbb\xbf{"seq":1,"hash":"h","kind":"k","class":"c"}',
    b'{"seq":1,"seq":2,"hash":"h","kind":"k","class":"c"}', b'{"seq":100000000000000000001,"hash":"h","kind":"k","class":"c"}',
    b'{"seq":1,"hash":"h","kind":"k","class":"c"} x', b'{"seq":true,"hash":"h","kind":"k","class":"c"}',
    b'{"seq":1,"hash":"h","kind":"media","class":"c","object":100000000000000000001,"object_sha256":"s"}',
]))
def test_any_bytes_read_the_same_as_with_json_alone(line: bytes) -> None:
    same_with_json_alone(line)


def test_a_non_finite_seq_is_an_integrity_error_not_a_crash() -> None:
    line = b'{"seq": Infinity, "hash": "ab", "kind": "message", "class": "default"}'
    with pytest.raises(IntegrityError, match="malformed"):
        verify._fields(line, 1, "seg")
