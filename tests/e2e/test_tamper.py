"""Tampering with the store or the catalog is detected by verify, at the right seq/object."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from archiver import chain, verify
from archiver.catalog import ChainHead, Record, Segment
from archiver.app import create_app
from archiver.cli import main
from archiver.config import Settings
from archiver.errors import StoreError
from archiver.services import Services
from tests import backends
from tests.conftest import make_env
from tests.e2e.test_pipeline import msg_body, post, report, seal


@pytest.fixture
def sealed(client: Any, services: Any) -> Any:
    """Three seal runs of three messages each: three default-class segments."""
    for run in range(3):
        for i in range(3):
            post(client, msg_body(f"wamid.T{run}{i}", f"text {run}{i}"))
        seal(services)
    assert report(services).ok
    return services


def objects(services: Any) -> Path:
    return Path(services.store.root) / "objects"


def segments(services: Any) -> list[Segment]:
    with services.sessions() as session:
        return list(session.scalars(select(Segment).order_by(Segment.first_seq)))


def rewrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)  # root can; that is why the local store warns and S3 is for production
    path.write_bytes(data)


def lines_of(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).split(b"\n")[:-1]


def test_flipped_byte_in_a_segment(sealed: Any) -> None:
    seg = segments(sealed)[1]
    path = objects(sealed) / seg.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    rewrite(path, bytes(data))
    r = report(sealed)
    assert not r.ok and r.first_error.startswith(f"{seg.key}: ")  # gzip's CRC (or inflate) names the object


def test_flipped_byte_inside_a_record_names_its_seq(sealed: Any) -> None:
    seg = segments(sealed)[1]
    path = objects(sealed) / seg.key
    lines = lines_of(path)
    rec = json.loads(lines[1])
    rec["ct"] = ("A" if rec["ct"][0] != "A" else "B") + rec["ct"][1:]
    lines[1] = chain.canonical(rec)
    rewrite(path, chain.encode_segment(lines))
    r = report(sealed)
    assert re.fullmatch(rf"seq {seg.first_seq + 1}: hash [0-9a-f]{{16}}\.\.\. does not recompute "
                        rf"\(expected [0-9a-f]{{16}}\.\.\.\)", r.first_error or ""), r.first_error


def test_deleted_segment(sealed: Any) -> None:
    seg = segments(sealed)[0]
    (objects(sealed) / seg.key).unlink()
    r = report(sealed)
    assert r.first_error == f"{seg.key}: segment named by a checkpoint is missing"


def test_swapped_pair_of_records(sealed: Any) -> None:
    seg = segments(sealed)[2]
    path = objects(sealed) / seg.key
    lines = lines_of(path)
    lines[0], lines[1] = lines[1], lines[0]
    rewrite(path, chain.encode_segment(lines))
    r = report(sealed)
    assert not r.ok and r.first_error.startswith(f"seq {seg.first_seq}:")


@pytest.mark.parametrize("which", [0, 1])
def test_removed_checkpoint_leaves_its_seqs_uncovered(sealed: Any, which: int) -> None:
    seg, after = segments(sealed)[which:which + 2]
    (objects(sealed) / seg.checkpoint_key).unlink()
    r = report(sealed)
    assert r.first_error == (f"seq {seg.first_seq}: no checkpoint covers it "
                             f"({after.checkpoint_key} starts at {after.first_seq})")


def test_removed_last_checkpoint_is_named_by_the_catalog(sealed: Any) -> None:
    seg = segments(sealed)[-1]
    (objects(sealed) / seg.checkpoint_key).unlink()
    r = report(sealed)
    assert r.first_error == f"{seg.checkpoint_key}: checkpoint of catalog segment {seg.key} is missing from the store"


def test_forged_checkpoint(sealed: Any) -> None:
    seg = segments(sealed)[1]
    path = objects(sealed) / seg.checkpoint_key
    cp = chain.Checkpoint.from_bytes(path.read_bytes(), seg.checkpoint_key)
    forged = chain.Checkpoint(**{**cp.__dict__, "signature": ""}).signed(Ed25519PrivateKey.generate())
    rewrite(path, forged.to_bytes())
    r = report(sealed)
    assert r.first_error == f"{seg.checkpoint_key}: checkpoint signature does not verify"


def test_catalog_row_changed_behind_the_stores_back(sealed: Any) -> None:
    seg = segments(sealed)[1]
    with sealed.sessions.begin() as session:
        session.get(Record, seg.first_seq + 2).kind = "echo"
    r = report(sealed)
    assert r.first_error == f"seq {seg.first_seq + 2}: catalog row differs from the sealed record"


def test_cli_verify_exit_codes_and_json(sealed: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in make_env(settings.home).items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", "--json"])
    assert ok.exit_code == 0, ok.output
    got = json.loads(ok.stdout)
    assert got["ok"] is True and got["records"] > 9 and got["segments"] == got["checkpoints"] >= 3
    seg = segments(sealed)[0]
    (objects(sealed) / seg.key).unlink()
    bad = runner.invoke(main, ["verify", "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["first_error"] == f"{seg.key}: segment named by a checkpoint is missing"


def report_with(services: Any, workers: int) -> Any:
    with services.sessions() as session:
        return verify.audit(services.store, services.signing_key.public_key(), session, workers=workers)


def test_parallel_verify_names_the_lower_of_two_broken_segments(sealed: Any) -> None:
    first, _, last = segments(sealed)
    for seg, index in ((last, 0), (first, 2)):
        path = objects(sealed) / seg.key
        lines = lines_of(path)
        lines[index] = lines[index].replace(b'"ct":"', b'"ct":"A', 1)
        rewrite(path, chain.encode_segment(lines))
    alone = report_with(sealed, 1)
    assert not alone.ok and alone.first_error.startswith(f"seq {first.first_seq + 2}:")
    for _ in range(3):
        assert report_with(sealed, 2) == report_with(sealed, 3) == alone


def test_parallel_verify_reports_a_catalog_break_before_a_later_store_break(sealed: Any) -> None:
    first, _, last = segments(sealed)
    (objects(sealed) / last.key).unlink()
    with sealed.sessions.begin() as session:
        session.get(Record, first.first_seq + 1).hash = "0" * 64
    alone = report_with(sealed, 1)
    assert alone.first_error == f"seq {first.first_seq + 1}: catalog row differs from the sealed record"
    assert report_with(sealed, 2) == alone


def test_parallel_verify_of_an_intact_archive_matches(sealed: Any) -> None:
    alone = report_with(sealed, 1)
    assert alone.ok and report_with(sealed, 2) == alone


def test_an_unreadable_segment_is_a_store_error_in_one_process_and_with_workers(sealed: Any) -> None:
    """Workers read segments themselves from a local store; a read failure still surfaces."""
    _, middle, _ = segments(sealed)
    path = objects(sealed) / middle.key
    path.chmod(0o644)
    path.unlink()
    path.mkdir()  # reading it now fails with an OS error, not "missing"
    for workers in (1, 2):
        with pytest.raises(StoreError):
            report_with(sealed, workers)


# --- every branch of the verifier, each named exactly -------------------------------------


def stored_checkpoint(services: Any, seg: Segment) -> chain.Checkpoint:
    return chain.Checkpoint.from_bytes((objects(services) / seg.checkpoint_key).read_bytes(), seg.checkpoint_key)


def resign(services: Any, seg: Segment, key: Ed25519PrivateKey | None = None, **changes: Any) -> chain.Checkpoint:
    """Rewrite ``seg``'s checkpoint with ``changes``, signed with the archive's own key (or ``key``)."""
    cp = chain.Checkpoint(**{**stored_checkpoint(services, seg).__dict__, **changes, "signature": ""})
    signed = cp.signed(key or services.signing_key)
    rewrite(objects(services) / seg.checkpoint_key, signed.to_bytes())
    return signed


def reencoded(blob: bytes, where: str, prev_hash: str) -> tuple[bytes, list[dict[str, Any]]]:
    """The segment ``blob`` with its second record's ciphertext changed and every chain hash
    recomputed from ``prev_hash``: a segment consistent in itself. Returns its bytes and records."""
    recs = chain.decode_segment(blob, where)
    recs[1]["ct"] = ("A" if recs[1]["ct"][0] != "A" else "B") + recs[1]["ct"][1:]
    h = prev_hash
    for rec in recs:
        h = rec["hash"] = chain.chain_hash(h, chain.record_bytes(rec))
    return chain.encode_segment([chain.canonical(rec) for rec in recs]), recs


def reencode(services: Any, seg: Segment, prev_hash: str) -> list[dict[str, Any]]:
    """Rewrite ``seg`` in the local store as :func:`reencoded` does. Returns the new records."""
    path = objects(services) / seg.key
    blob, recs = reencoded(path.read_bytes(), seg.key, prev_hash)
    rewrite(path, blob)
    return recs


@pytest.mark.parametrize("wrong", ["moved", "copied"])
def test_checkpoint_under_the_wrong_key(sealed: Any, wrong: str) -> None:
    segs = segments(sealed)
    seg = segs[-1] if wrong == "moved" else segs[1]
    source = objects(sealed) / seg.checkpoint_key
    # moved: the last checkpoint as if it sealed one seq more; copied: a second copy listed last
    key = chain.checkpoint_key(seg.last_seq + 1) if wrong == "moved" else "checkpoints/zz-copy.json"
    (objects(sealed) / key).write_bytes(source.read_bytes())
    if wrong == "moved":
        source.chmod(0o644)
        source.unlink()
    r = report(sealed)
    assert r.first_error == f"{key}: checkpoint for seq {seg.last_seq} stored under the wrong key"


@pytest.mark.parametrize("which", [0, 1])
def test_broken_prev_checkpoint_link(sealed: Any, which: int) -> None:
    seg = segments(sealed)[which]
    resign(sealed, seg, prev_checkpoint="ab" * 32)
    r = report(sealed)
    assert r.first_error == f"{seg.checkpoint_key}: checkpoint does not name the previous checkpoint"


def test_merkle_root_differing_from_the_checkpoint(sealed: Any) -> None:
    seg = segments(sealed)[-1]  # the last: no later checkpoint names its digest
    resign(sealed, seg, merkle_root="cd" * 32)
    r = report(sealed)
    assert r.first_error == f"{seg.key}: Merkle root differs from the checkpoint"


def test_chain_hash_differing_from_the_checkpoint(sealed: Any) -> None:
    seg = segments(sealed)[-1]
    resign(sealed, seg, chain_hash="ef" * 32)
    r = report(sealed)
    assert r.first_error == f"seq {seg.last_seq}: chain hash differs from the checkpoint"


def test_consistent_segment_rewrite_is_caught_by_its_checkpoint(sealed: Any) -> None:
    before, seg, _ = segments(sealed)
    recs = reencode(sealed, seg, before.last_hash)
    r = report(sealed)
    assert r.first_error == f"{seg.key}: Merkle root differs from the checkpoint"
    # Recomputing the checkpoint too needs the signing key: a foreign one fails the signature...
    leaves = [chain.leaf_hash(chain.record_bytes(rec)) for rec in recs]
    forged = {"merkle_root": chain.merkle_root(leaves), "chain_hash": recs[-1]["hash"]}
    resign(sealed, seg, Ed25519PrivateKey.generate(), **forged)
    assert report(sealed).first_error == f"{seg.checkpoint_key}: checkpoint signature does not verify"


def test_consistent_rewrite_resigned_with_the_archive_key_breaks_the_next_link(sealed: Any) -> None:
    before, seg, after = segments(sealed)
    recs = reencode(sealed, seg, before.last_hash)
    leaves = [chain.leaf_hash(chain.record_bytes(rec)) for rec in recs]
    resign(sealed, seg, merkle_root=chain.merkle_root(leaves), chain_hash=recs[-1]["hash"])
    assert report(sealed).first_error == f"{after.checkpoint_key}: checkpoint does not name the previous checkpoint"


def test_consistent_rewrite_of_the_last_segment_resigned_is_caught_by_the_catalog(sealed: Any) -> None:
    before, seg = segments(sealed)[-2:]
    recs = reencode(sealed, seg, before.last_hash)
    leaves = [chain.leaf_hash(chain.record_bytes(rec)) for rec in recs]
    resign(sealed, seg, merkle_root=chain.merkle_root(leaves), chain_hash=recs[-1]["hash"])
    # every record from the changed one on has a new chain hash; the first of them is named
    assert report(sealed).first_error == f"seq {seg.first_seq + 1}: catalog row differs from the sealed record"


@pytest.mark.parametrize("where", ["inside", "last"])
def test_deleted_catalog_record_row(sealed: Any, where: str) -> None:
    seg = segments(sealed)[1]
    seq = seg.first_seq + 1 if where == "inside" else seg.last_seq
    with sealed.sessions.begin() as session:
        session.delete(session.get(Record, seq))
    r = report(sealed)
    assert r.first_error == f"seq {seq}: sealed record in {seg.key} has no catalog row"


def test_extra_catalog_record_row(sealed: Any) -> None:
    last = segments(sealed)[-1]
    with sealed.sessions.begin() as session:
        row = session.get(Record, last.last_seq)
        extra = {c.key: getattr(row, c.key) for c in Record.__table__.columns if c.key not in ("seq", "item_key")}
        session.add(Record(seq=last.last_seq + 1, **extra))
    r = report(sealed)
    assert r.first_error == f"seq {last.last_seq + 1}: catalog row has no sealed record (beyond every segment)"


def test_extra_catalog_segment_row(sealed: Any) -> None:
    last = segments(sealed)[-1]
    first, end = last.last_seq + 1, last.last_seq + 3
    with sealed.sessions.begin() as session:
        row = session.get(Segment, last.id)
        copy = {c.key: getattr(row, c.key) for c in Segment.__table__.columns if c.key != "id"}
        copy.update(key=chain.segment_key(last.retention_class, first, end), first_seq=first, last_seq=end,
                    checkpoint_key=chain.checkpoint_key(end))
        session.add(Segment(**copy))
    r = report(sealed)
    assert r.first_error == (f"{chain.checkpoint_key(end)}: checkpoint of catalog segment "
                             f"{chain.segment_key(last.retention_class, first, end)} is missing from the store")


@pytest.mark.parametrize("field", ["merkle_root", "checkpoint_digest", "last_seq"])
def test_segment_row_edit(sealed: Any, field: str) -> None:
    seg = segments(sealed)[1]
    with sealed.sessions.begin() as session:
        row = session.get(Segment, seg.id)
        setattr(row, field, row.last_seq - 1 if field == "last_seq" else "0" * 64)
    r = report(sealed)
    assert r.first_error == f"{seg.key}: catalog segment row differs from the store's checkpoint"


@pytest.mark.parametrize("field", ["seq", "hash", "checkpoint"])
def test_chain_head_edit(sealed: Any, field: str) -> None:
    with sealed.sessions.begin() as session:
        head = session.get(ChainHead, 1)
        setattr(head, field, head.seq - 1 if field == "seq" else "0" * 64)
        seq = head.seq
    r = report(sealed)
    assert r.first_error == f"seq {seq}: catalog chain head differs from the last checkpoint"


# --- on S3 with Object Lock: the attacker cannot delete a version, but can hide or stack one ---


@pytest.fixture
def sealed_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Services, str]]:
    """Three seal runs of three messages each into a real SeaweedFS bucket with Object Lock."""
    bucket, store_url = backends.locked_store_url(monkeypatch)
    env = make_env(tmp_path / "home", ARCHIVER_STORE_URL=store_url)
    services = Services.open(Settings.from_env(env))
    client = create_app(services=services).test_client()
    for run in range(3):
        for i in range(3):
            post(client, msg_body(f"wamid.T{run}{i}", f"text {run}{i}"))
        seal(services)
    assert report(services).ok
    yield services, bucket
    services.close()


def versions(bucket: str, key: str) -> list[dict[str, Any]]:
    """Every version and delete marker of ``key`` (under the store's ``archive/`` prefix)."""
    got = backends.s3_client().list_object_versions(Bucket=bucket, Prefix=f"archive/{key}")
    return [v for v in [*got.get("Versions", []), *got.get("DeleteMarkers", [])] if v["Key"] == f"archive/{key}"]


@pytest.mark.s3
def test_s3_delete_marker_on_a_segment(sealed_s3: tuple[Services, str]) -> None:
    services, bucket = sealed_s3
    seg = segments(services)[1]
    backends.s3_client().delete_object(Bucket=bucket, Key=f"archive/{seg.key}")  # no VersionId: a marker
    assert len(versions(bucket, seg.key)) == 2  # the locked version is still there, hidden
    assert report(services).first_error == f"{seg.key}: segment named by a checkpoint is missing"


@pytest.mark.s3
def test_s3_delete_marker_on_a_checkpoint(sealed_s3: tuple[Services, str]) -> None:
    services, bucket = sealed_s3
    seg, after = segments(services)[1:]
    backends.s3_client().delete_object(Bucket=bucket, Key=f"archive/{seg.checkpoint_key}")
    assert report(services).first_error == (f"seq {seg.first_seq}: no checkpoint covers it "
                                            f"({after.checkpoint_key} starts at {after.first_seq})")


@pytest.mark.s3
def test_s3_stacked_version_of_a_segment(sealed_s3: tuple[Services, str]) -> None:
    services, bucket = sealed_s3
    before, seg, _ = segments(services)
    blob, _ = reencoded(services.store.get(seg.key), seg.key, before.last_hash)
    backends.s3_client().put_object(Bucket=bucket, Key=f"archive/{seg.key}", Body=blob)
    assert len(versions(bucket, seg.key)) == 2  # stacked on the locked original, which stays
    assert services.store.get(seg.key) == blob
    assert report(services).first_error == f"{seg.key}: Merkle root differs from the checkpoint"


@pytest.mark.s3
def test_s3_stacked_version_of_a_checkpoint(sealed_s3: tuple[Services, str]) -> None:
    services, bucket = sealed_s3
    seg = segments(services)[-1]
    cp = chain.Checkpoint.from_bytes(services.store.get(seg.checkpoint_key), seg.checkpoint_key)
    forged = chain.Checkpoint(**{**cp.__dict__, "created_at": "2020-01-01T00:00:00Z", "signature": ""})
    body = forged.signed(Ed25519PrivateKey.generate()).to_bytes()
    backends.s3_client().put_object(Bucket=bucket, Key=f"archive/{seg.checkpoint_key}", Body=body)
    assert len(versions(bucket, seg.checkpoint_key)) == 2
    assert report(services).first_error == f"{seg.checkpoint_key}: checkpoint signature does not verify"


@pytest.mark.parametrize("names", ["a message", "a later seq", "nothing sensible"])
def test_a_record_naming_no_sealed_policy_record_before_it_is_named(sealed: Any, names: str) -> None:
    with sealed.sessions() as session:
        policy = session.scalar(select(Record.seq).where(Record.kind == "policy").order_by(Record.seq).limit(1))
        message = session.scalar(select(Record.seq).where(Record.kind == "message").order_by(Record.seq).limit(1))
    assert policy is not None and message is not None  # the intact archive names its policy: step 7 ran on it
    before, seg = segments(sealed)[-2:]
    path = objects(sealed) / seg.key
    recs = chain.decode_segment(path.read_bytes(), seg.key)
    assert all(rec["policy"] == policy for rec in recs)
    recs[1]["policy"] = {"a message": message, "a later seq": seg.last_seq, "nothing sensible": "1"}[names]
    h = before.last_hash
    for rec in recs:
        h = rec["hash"] = chain.chain_hash(h, chain.record_bytes(rec))
    rewrite(path, chain.encode_segment([chain.canonical(rec) for rec in recs]))
    leaves = [chain.leaf_hash(chain.record_bytes(rec)) for rec in recs]
    resign(sealed, seg, merkle_root=chain.merkle_root(leaves), chain_hash=recs[-1]["hash"])
    # steps 1-5 pass on the resigned segment; step 7 names the record before the catalog does
    err = report(sealed).first_error
    assert err is not None and err.startswith(f"seq {seg.first_seq + 1}: names policy seq "), err
    assert err.endswith("which is not a sealed policy record at or before it")
