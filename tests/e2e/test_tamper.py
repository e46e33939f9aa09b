"""Tampering with the store or the catalog is detected by verify, at the right seq/object."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from archiver import chain, verify
from archiver.catalog import Record, Segment
from archiver.cli import main
from archiver.errors import StoreError
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
    assert not r.ok and seg.key in r.first_error


def test_flipped_byte_inside_a_record_names_its_seq(sealed: Any) -> None:
    seg = segments(sealed)[1]
    path = objects(sealed) / seg.key
    lines = lines_of(path)
    rec = json.loads(lines[1])
    rec["ct"] = ("A" if rec["ct"][0] != "A" else "B") + rec["ct"][1:]
    lines[1] = chain.canonical(rec)
    rewrite(path, chain.encode_segment(lines))
    r = report(sealed)
    assert not r.ok and r.first_error.startswith(f"seq {seg.first_seq + 1}:")


def test_deleted_segment(sealed: Any) -> None:
    seg = segments(sealed)[0]
    (objects(sealed) / seg.key).unlink()
    r = report(sealed)
    assert not r.ok and seg.key in r.first_error and "missing" in r.first_error


def test_swapped_pair_of_records(sealed: Any) -> None:
    seg = segments(sealed)[2]
    path = objects(sealed) / seg.key
    lines = lines_of(path)
    lines[0], lines[1] = lines[1], lines[0]
    rewrite(path, chain.encode_segment(lines))
    r = report(sealed)
    assert not r.ok and r.first_error.startswith(f"seq {seg.first_seq}:")


@pytest.mark.parametrize("which", [0, 1, -1])
def test_removed_checkpoint(sealed: Any, which: int) -> None:
    seg = segments(sealed)[which]
    (objects(sealed) / seg.checkpoint_key).unlink()
    r = report(sealed)
    assert not r.ok
    assert f"seq {seg.first_seq}" in r.first_error or "checkpoint" in r.first_error


def test_forged_checkpoint(sealed: Any) -> None:
    seg = segments(sealed)[1]
    path = objects(sealed) / seg.checkpoint_key
    cp = chain.Checkpoint.from_bytes(path.read_bytes(), seg.checkpoint_key)
    forged = chain.Checkpoint(**{**cp.__dict__, "signature": ""}).signed(Ed25519PrivateKey.generate())
    rewrite(path, forged.to_bytes())
    r = report(sealed)
    assert not r.ok and seg.checkpoint_key in r.first_error and "signature" in r.first_error


def test_catalog_row_changed_behind_the_stores_back(sealed: Any) -> None:
    seg = segments(sealed)[1]
    with sealed.sessions.begin() as session:
        session.get(Record, seg.first_seq + 2).kind = "echo"
    r = report(sealed)
    assert not r.ok and r.first_error.startswith(f"seq {seg.first_seq + 2}:")


def test_cli_verify_exit_codes_and_json(sealed: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in make_env(settings.home).items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", "--json"])
    assert ok.exit_code == 0, ok.output
    got = json.loads(ok.output)
    assert got["ok"] is True and got["records"] > 9 and got["segments"] == got["checkpoints"] >= 3
    seg = segments(sealed)[0]
    (objects(sealed) / seg.key).unlink()
    bad = runner.invoke(main, ["verify", "--json"])
    assert bad.exit_code == 1
    assert seg.key in json.loads(bad.output)["first_error"]


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
