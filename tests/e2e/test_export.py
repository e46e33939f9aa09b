"""Provable exports (issue 10, points 1-2) on the real servers: SeaweedFS Object Lock, SQLite
and PostgreSQL catalogs. Every bundle is checked by both verifiers: ``archiver verify-export``
(``archiver.export_verify``) and the standalone ``scripts/verify-export``, run as a subprocess
from a temporary copy with ``-I`` and the archiver made unimportable, which also reports every
module it loaded beyond the standard library (only ``cryptography`` and its backend may be)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from archiver import export, export_verify, holds, indexer
from archiver.catalog import DataKey, Record
from archiver.cli import main as cli
from archiver.config import Settings
from archiver.services import Services
from archiver.app import create_app
from tests.conftest import make_env
from tests.e2e.test_media import PHOTO, image_body
from tests.e2e.test_media import Instance as MediaInstance
from tests.e2e.test_media import ingest as ingest_media
from tests.fakegraph import FakeGraph, fake_graph  # noqa: F401  (the fixture)
from tests.e2e.test_holds import ALICE, BOB, CATALOGS, FEB, JAN, MAR, Instance, _instance, message
from tests.e2e.test_pipeline import post, seal

# WeasyPrint (transcript.pdf) leaves its sRGB profile file to the garbage collector
pytestmark = [pytest.mark.s3, pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "verify-export"
ALLOWED_MODULES = {"cryptography", "_cffi_backend", "cffi", "_openssl"}  # _openssl: cryptography's Rust binding
# Runs the standalone verifier with the archiver unimportable, then names every top-level
# module it loaded that is not in the standard library.
_HARNESS = """
import runpy, sys
before = set(sys.modules)  # what the interpreter loaded at start (site's .pth hooks)
sys.modules["archiver"] = None
script, argv = sys.argv[1], sys.argv[2:]
sys.argv = [script, *argv]
code = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
extra = sorted({m.split(".")[0] for m in set(sys.modules) - before if sys.modules[m] is not None}
               - set(sys.stdlib_module_names) - {"__main__", "__mp_main__"})
print("MODULES " + ",".join(extra), file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
def inst(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    """SQLite unless a test asks for more (the query export runs on PostgreSQL too)."""
    yield from _instance(request, tmp_path, monkeypatch, {})


@pytest.fixture
def standalone(tmp_path: Path) -> Callable[[Path], tuple[int, str]]:
    """Run a temporary copy of scripts/verify-export on a bundle: (exit code, stdout)."""
    copy = tmp_path / "standalone" / "verify-export"
    copy.parent.mkdir()
    shutil.copy(SCRIPT, copy)

    def run(folder: Path) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-I", "-c", _HARNESS, str(copy), str(folder)],
                              capture_output=True, text=True, cwd=copy.parent, check=False)
        loaded = done.stderr.rsplit("MODULES ", 1)[-1].strip()
        assert set(filter(None, loaded.split(","))) <= ALLOWED_MODULES, done.stderr
        return done.returncode, done.stdout
    return run


BOB_TEXT = "hello there 東京 🎉 \u202eשלום\u202c \x1b[31m red \udcff"  # CJK, emoji, bidi, a control, a lone surrogate


def ingest_three(inst: Instance) -> tuple[int, int, int]:
    """Alice in January (refund), Bob in February, Alice in March (refund): three segments."""
    (a1,) = inst.ingest(message("wamid.A1", "refund the deposit", ALICE, ts=JAN))
    (b1,) = inst.ingest(message("wamid.B1", BOB_TEXT, BOB, ts=FEB, phone_id="2088"))
    (a2,) = inst.ingest(message("wamid.A2", "refund again, please", ALICE, ts=MAR))
    indexer.index_pending(inst.services)
    return a1, b1, a2


def dseq(inst: Instance, seq: int) -> int:
    found = inst.record(seq).delivery_seq
    assert found is not None
    return found


def bundle(inst: Instance, out: Path, **selection: str) -> export.Result:
    return export.write_bundle(inst.services, export.Selection(**selection), out, "test:auditor")


def lines(folder: Path, name: str = "records.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / name).read_bytes().splitlines()]


def both_pass(folder: Path, standalone: Callable[[Path], tuple[int, str]]) -> None:
    problems, summary = export_verify.verify_bundle(folder)
    assert problems == [], problems
    code, out = standalone(folder)
    assert code == 0 and out.startswith("OK:"), out
    assert f"{summary['records']} records" in out


@pytest.mark.parametrize("inst", CATALOGS, indirect=True, ids=["sqlite", "postgresql"])
def test_export_by_query_holds_the_matching_items_their_deliveries_and_proofs(
        inst: Instance, tmp_path: Path, standalone: Callable[[Path], tuple[int, str]]) -> None:
    a1, b1, a2 = ingest_three(inst)
    done = bundle(inst, tmp_path / "q", query="refund")
    out = tmp_path / "q"
    recs = lines(out)
    d1, d2 = dseq(inst, a1), dseq(inst, a2)
    assert [r["seq"] for r in recs] == sorted([a1, d1, a2, d2])
    by_seq = {r["seq"]: r for r in recs}
    assert json.loads(base64.b64decode(by_seq[a1]["plaintext"]))["message"]["text"]["body"] == "refund the deposit"
    assert by_seq[a1]["delivery_seq"] == d1 and by_seq[d1]["items"] == [a1] and by_seq[d1]["kind"] == "delivery"
    assert by_seq[a1]["thread"] == ALICE and by_seq[a1]["occurred_at"].startswith("2026-01-01")
    assert json.loads((out / "threads.json").read_bytes()) == {ALICE: [a1, a2]}
    assert done.counts["records"] == 4 and done.counts["checkpoints"] == 3  # Bob's segment lies between
    assert [p["seq"] for p in lines(out, "proofs/inclusion.jsonl")] == [r["seq"] for r in recs]
    assert {p.relative_to(out).as_posix() for p in out.rglob("*")} >= {
        "records.jsonl", "threads.json", "proofs/inclusion.jsonl", "proofs/checkpoints.jsonl", "public-key.pem",
        "MANIFEST.json", "MANIFEST.json.sig", "EXPORT.json", "EXPORT.json.sig", "transcript.pdf"}
    both_pass(out, standalone)
    manifest = json.loads((out / "MANIFEST.json").read_bytes())
    pdf = (out / "transcript.pdf").read_bytes()
    assert manifest["transcript"]["tz"] == "UTC" and pdf.startswith(b"%PDF-")
    assert hashlib.sha256(pdf[:manifest["transcript"]["unsigned_length"]]).hexdigest() == \
        manifest["transcript"]["unsigned_sha256"]
    assert json.loads((out / "EXPORT.json").read_bytes())["signed_files"]["transcript.pdf"] == \
        hashlib.sha256(pdf).hexdigest()
    text = subprocess.run(["pdftotext", str(out / "transcript.pdf"), "-"], capture_output=True, text=True,  # noqa: S603,S607
                          check=True).stdout
    assert "refund the deposit" in text and "search query: refund" in " ".join(text.split())
    sig = subprocess.run(["pdfsig", str(out / "transcript.pdf")], capture_output=True, text=True,  # noqa: S603,S607
                         check=False).stdout
    assert "Signature is Valid." in sig, sig

    # Audited: the selection, counts and manifest hash; never the content.
    seal(inst.services)
    with inst.services.sessions() as session:
        audit_seq = session.scalar(select(Record.seq).where(Record.kind == "audit").order_by(Record.seq.desc()).limit(1))
    assert audit_seq is not None
    from archiver import records

    with inst.services.sessions() as session:
        body = records.read_record(inst.services, session, audit_seq)["content"]
    assert body["event"] == "export" and body["actor"] == "test:auditor"
    assert body["selection"] == {"by": "query", "query": "refund"} and body["counts"]["records"] == 4
    assert body["manifest_sha256"] == done.manifest_sha256 and "refund the deposit" not in json.dumps(body)


def test_export_by_hold_and_by_contact_with_dates(inst: Instance, tmp_path: Path,
                                                  standalone: Callable[[Path], tuple[int, str]]) -> None:
    a1, b1, a2 = ingest_three(inst)
    hold_id = inst.hold(inst.matter(), custodians=[BOB])
    bundle(inst, tmp_path / "h", hold=hold_id)
    held = lines(tmp_path / "h")
    assert [r["seq"] for r in held] == sorted([b1, dseq(inst, b1)])
    assert next(r for r in held if r["seq"] == b1)["content"]["message"]["text"]["body"] == BOB_TEXT
    both_pass(tmp_path / "h", standalone)

    bundle(inst, tmp_path / "c", contact=ALICE, after="2026-02-01", before="2026-04-01")
    assert [r["seq"] for r in lines(tmp_path / "c")] == sorted([a2, dseq(inst, a2)])
    manifest = json.loads((tmp_path / "c" / "MANIFEST.json").read_bytes())
    assert manifest["selection"] == {"by": "contact", "contact": ALICE, "after": "2026-02-01", "before": "2026-04-01"}
    both_pass(tmp_path / "c", standalone)

    with pytest.raises(holds.NoSuchHold):
        bundle(inst, tmp_path / "none", hold="hold-000000000000")
    empty = bundle(inst, tmp_path / "e", query="nothingmatchesthis")
    assert empty.counts["records"] == 0 and (tmp_path / "e" / "records.jsonl").read_bytes() == b""
    both_pass(tmp_path / "e", standalone)


def test_same_selection_twice_gives_identical_bytes_but_the_export_statement(inst: Instance, tmp_path: Path) -> None:
    ingest_three(inst)
    bundle(inst, tmp_path / "one", query="refund")
    bundle(inst, tmp_path / "two", query="refund")
    files = sorted(p.relative_to(tmp_path / "one").as_posix() for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*") if p.is_file())
    for name in files:
        if name not in ("EXPORT.json", "EXPORT.json.sig", "transcript.pdf"):  # who and when may differ
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # the transcript's signature carries its signing time; its unsigned revision is identical
    unsigned = json.loads((tmp_path / "one" / "MANIFEST.json").read_bytes())["transcript"]["unsigned_length"]
    assert (tmp_path / "one" / "transcript.pdf").read_bytes()[:unsigned] == \
        (tmp_path / "two" / "transcript.pdf").read_bytes()[:unsigned]
    statement = json.loads((tmp_path / "two" / "EXPORT.json").read_bytes())
    assert statement["exported_by"] == "test:auditor" and statement["exported_at"].endswith("+00:00")
    assert statement["manifest_sha256"] == hashlib.sha256((tmp_path / "one" / "MANIFEST.json").read_bytes()).hexdigest()
    with pytest.raises(export.ExportExists):
        bundle(inst, tmp_path / "one", query="refund")


def _flip_plaintext(folder: Path, seq: int) -> None:
    recs = lines(folder)
    for r in recs:
        if r["seq"] == seq:
            plain = bytearray(base64.b64decode(r["plaintext"]))
            plain[plain.index(b"refund")] ^= 0x20  # "Refund"
            r["plaintext"] = base64.b64encode(bytes(plain)).decode()
    (folder / "records.jsonl").write_bytes(b"".join(export_verify.canonical_line(r) for r in recs))


def _remove_record(folder: Path, seq: int) -> None:
    recs = [r for r in lines(folder) if r["seq"] != seq]
    (folder / "records.jsonl").write_bytes(b"".join(export_verify.canonical_line(r) for r in recs))


@pytest.mark.parametrize("verifier", ["archiver", "standalone"])
def test_tampered_bundles_fail_naming_the_file_and_record(
        inst: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verifier: str,
        standalone: Callable[[Path], tuple[int, str]]) -> None:
    a1, b1, a2 = ingest_three(inst)
    good = tmp_path / "good"
    bundle(inst, good, query="refund")
    # Another archive (a local store), with a record of the same seq as a2.
    other = Services.open(Settings.from_env(make_env(tmp_path / "other")))
    client = create_app(services=other).test_client()
    for body in (message("wamid.X1", "refund x", ALICE, ts=JAN), message("wamid.X2", "hi", BOB, ts=FEB),
                 message("wamid.X3", "refund elsewhere", ALICE, ts=MAR)):
        assert post(client, body).status_code == 200
        seal(other)
    indexer.index_pending(other)
    foreign = tmp_path / "foreign"
    export.write_bundle(other, export.Selection(query="refund"), foreign, "test")
    other.close()

    def check(folder: Path) -> str:
        if verifier == "archiver":
            problems, _ = export_verify.verify_bundle(folder)
            return "\n".join(problems)
        code, out = standalone(folder)
        assert code == 1, out
        return out

    def case(name: str, tamper: Callable[[Path], None], *expected: str) -> None:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        tamper(folder)
        found = check(folder)
        for text in expected:
            assert text in found, (name, found)

    case("flipped-plaintext", lambda f: _flip_plaintext(f, a1), "records.jsonl: SHA-256 differs",
         f"records.jsonl: seq {a1}: plaintext and salt do not match the commitment")
    case("flipped-proof-byte", lambda f: _flip_path(f, a2),
         "proofs/inclusion.jsonl: SHA-256 differs",
         f"proofs/inclusion.jsonl: seq {a2}: inclusion path does not lead")
    case("removed-record", lambda f: _remove_record(f, a2), "records.jsonl: SHA-256 differs",
         f"records.jsonl: seq {a2}: listed in MANIFEST.json but missing")
    foreign_line = [r for r in lines(foreign) if r["kind"] == "message"][-1]

    def swap_record(f: Path) -> None:  # our last message replaced by theirs
        recs = [foreign_line if r["seq"] == a2 else r for r in lines(f)]
        (f / "records.jsonl").write_bytes(b"".join(export_verify.canonical_line(r) for r in sorted(recs, key=lambda r: r["seq"])))
    case("record-from-another-archive", swap_record, "records.jsonl: SHA-256 differs",
         f"seq {foreign_line['seq']}: ")

    def swap_checkpoint(f: Path) -> None:
        ours = (f / "proofs" / "checkpoints.jsonl").read_bytes().splitlines()
        theirs = (foreign / "proofs" / "checkpoints.jsonl").read_bytes().splitlines()
        (f / "proofs" / "checkpoints.jsonl").write_bytes(b"\n".join([ours[0], ours[1], theirs[-1]]) + b"\n")
    case("swapped-checkpoint", swap_checkpoint, "proofs/checkpoints.jsonl: SHA-256 differs",
         "signature does not verify", f"seq {a2}")

    def flip_manifest(f: Path) -> None:
        data = (f / "MANIFEST.json").read_bytes().replace(b'"refund"', b'"refunt"')
        (f / "MANIFEST.json").write_bytes(data)
    case("edited-manifest", flip_manifest, "MANIFEST.json: signature in MANIFEST.json.sig does not verify",
         "EXPORT.json: manifest_sha256 is not the hash of MANIFEST.json")

    def extra_file(f: Path) -> None:
        (f / "notes.txt").write_text("added later")
    case("extra-file", extra_file, "notes.txt: not listed in MANIFEST.json")


def _flip_path(folder: Path, seq: int) -> None:
    proofs = lines(folder, "proofs/inclusion.jsonl")
    for p in proofs:
        if p["seq"] == seq:
            p["path"][0] = ("0" if p["path"][0][0] != "0" else "1") + p["path"][0][1:]
    (folder / "proofs" / "inclusion.jsonl").write_bytes(b"".join(export_verify.canonical_line(p) for p in proofs))


def test_shredded_records_are_listed_and_a_bundle_still_verifies_after_its_keys_are_destroyed(
        inst: Instance, tmp_path: Path, standalone: Callable[[Path], tuple[int, str]]) -> None:
    a1, b1, a2 = ingest_three(inst)
    bundle(inst, tmp_path / "before", contact=ALICE)
    with inst.services.sessions.begin() as session:  # crypto-shred Alice's keys after the export
        for seq in (a1, a2, dseq(inst, a1), dseq(inst, a2)):
            row = session.get(Record, seq)
            key = session.get(DataKey, row.key_id) if row else None
            assert key is not None
            key.wrapped = None
    both_pass(tmp_path / "before", standalone)

    done = bundle(inst, tmp_path / "after", contact=ALICE)
    recs = lines(tmp_path / "after")
    assert done.counts["shredded"] == done.counts["records"] == 4
    assert all(r["shredded"] and r["plaintext"] is None and r["salt"] is None and r["content"] is None for r in recs)
    shown = " ".join(subprocess.run(["pdftotext", str(tmp_path / "after" / "transcript.pdf"), "-"],  # noqa: S603,S607
                                    capture_output=True, text=True, check=True).stdout.split())
    # One bubble per shredded message (their deliveries are counted on the cover, not drawn).
    assert "Records 4 (4 shredded" in shown, shown
    assert shown.count("[shredded: no content]") == 2 and f"seq {a1}" in shown and f"seq {a2}" in shown
    assert "refund" not in shown.replace(
        "search query", ""), shown
    both_pass(tmp_path / "after", standalone)  # proven as sealed ciphertext, with no content


def test_cli_export_and_verify_export(inst: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest_three(inst)
    for name, value in inst.env.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    done = runner.invoke(cli, ["export", "--query", "refund", "--out", str(tmp_path / "cli"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["counts"]["records"] == 4
    ok = runner.invoke(cli, ["verify-export", str(tmp_path / "cli")])
    assert ok.exit_code == 0 and "OK: 4 records" in ok.stdout, ok.output
    ours = Path(inst.env["ARCHIVER_HOME"]) / "keys" / "checkpoint-ed25519.pub"
    pinned = runner.invoke(cli, ["verify-export", str(tmp_path / "cli"), "--public-key", str(ours)])
    assert pinned.exit_code == 0, pinned.output
    other = Services.open(Settings.from_env(make_env(tmp_path / "other")))
    other.close()
    theirs = tmp_path / "other" / "keys" / "checkpoint-ed25519.pub"
    wrong = runner.invoke(cli, ["verify-export", str(tmp_path / "cli"), "--public-key", str(theirs)])
    assert wrong.exit_code == 1 and "public-key.pem: is not the key given by --public-key" in wrong.stdout
    _remove_record(tmp_path / "cli", lines(tmp_path / "cli")[-1]["seq"])
    bad = runner.invoke(cli, ["verify-export", str(tmp_path / "cli")])
    assert bad.exit_code == 1 and "listed in MANIFEST.json but missing" in bad.stdout
    both = runner.invoke(cli, ["export", "--query", "refund", "--hold", "x", "--out", str(tmp_path / "two")])
    assert both.exit_code == 2 and "exactly one of query, hold, contact" in both.output
    not_bundle = runner.invoke(cli, ["verify-export", str(tmp_path)])
    assert not_bundle.exit_code == 2
    every = runner.invoke(cli, ["export", "--query", "refund", "--format", "bundle,pdf,rsmf", "--out", str(tmp_path / "r")])
    assert every.exit_code == 0, every.output
    assert export_verify.verify_bundle(tmp_path / "r")[0] == []
    assert "export.rsmf" in json.loads((tmp_path / "r" / "MANIFEST.json").read_bytes())["files"]
    import email
    from email import policy

    eml = email.message_from_bytes((tmp_path / "r" / "export.rsmf").read_bytes(), policy=policy.default)
    assert eml["X-RSMF-Version"] == "2.0.0"
    (att,) = list(eml.iter_attachments())
    rsmf_manifest = json.loads(zipfile.ZipFile(io.BytesIO(att.get_content())).read("rsmf_manifest.json"))
    event_seqs = [int(next(c["value"] for c in e["custom"] if c["name"] == "seq")) for e in rsmf_manifest["events"]]
    assert event_seqs == [r["seq"] for r in lines(tmp_path / "r")] and len(event_seqs) == 4
    plain = runner.invoke(cli, ["export", "--query", "refund", "--format", "bundle", "--out", str(tmp_path / "p")])
    assert plain.exit_code == 0 and not (tmp_path / "p" / "transcript.pdf").exists(), plain.output
    unknown = runner.invoke(cli, ["export", "--query", "refund", "--format", "bundle,xls", "--out", str(tmp_path / "x")])
    assert unknown.exit_code == 2 and "unknown format" in unknown.output
    badtz = runner.invoke(cli, ["export", "--query", "refund", "--tz", "Mars/Olympus", "--out", str(tmp_path / "z")])
    assert badtz.exit_code == 2 and "unknown time zone" in badtz.output
    paris = runner.invoke(cli, ["export", "--query", "refund", "--tz", "Europe/Paris", "--out", str(tmp_path / "tz")])
    assert paris.exit_code == 0, paris.output
    assert json.loads((tmp_path / "tz" / "MANIFEST.json").read_bytes())["transcript"]["tz"] == "Europe/Paris"
    shown = subprocess.run(["pdftotext", str(tmp_path / "tz" / "transcript.pdf"), "-"],  # noqa: S603,S607
                           capture_output=True, text=True, check=True).stdout
    assert "CET" in shown and "Europe/Paris" in shown


def finished(poll: Callable[[], Any], deadline: float = 120.0) -> dict[str, Any]:
    """Poll an export job's status until it is done (AssertionError if it failed or never ends)."""
    end = time.monotonic() + deadline
    while True:
        got = poll()
        assert got.status_code == 200, got.get_json()
        job: dict[str, Any] = got.get_json()
        assert job["state"] in ("queued", "running", "done"), job
        if job["state"] == "done":
            return job
        assert time.monotonic() < end, job
        time.sleep(0.05)


def test_api_export_roles_and_zip_download(inst: Instance, tmp_path: Path) -> None:
    from archiver.auth import create_token

    ingest_three(inst)
    hold_id = inst.hold(inst.matter(), custodians=[BOB])
    with inst.services.sessions.begin() as session:
        secrets = {role: create_token(session, role, f"exp-{role}") for role in ("compliance", "legal", "admin")}

    def call(role: str, method: str, url: str, body: Any = None) -> Any:
        return inst.client.open(url, method=method, json=body, headers={"Authorization": f"Bearer {secrets[role]}"})

    made = call("compliance", "POST", "/api/v1/exports", {"query": "refund"})
    assert made.status_code == 202, made.get_json()
    info = finished(lambda: call("compliance", "GET", made.headers["Location"]))
    assert info["counts"]["records"] == 4 and info["download"] == f"/api/v1/exports/{info['id']}/bundle.zip"
    got = call("compliance", "GET", info["download"])
    assert got.status_code == 200 and got.mimetype == "application/zip"
    unzipped = tmp_path / "unzipped"
    zipfile.ZipFile(io.BytesIO(got.data)).extractall(unzipped)
    assert export_verify.verify_bundle(unzipped)[0] == []
    assert call("compliance", "GET", info["download"]).data == got.data  # the zip is deterministic too

    refused = call("legal", "POST", "/api/v1/exports", {"query": "refund"})
    assert refused.status_code == 403 and "by hold only" in refused.get_json()["message"]
    assert call("legal", "GET", info["download"]).status_code == 403
    assert call("legal", "GET", f"/api/v1/exports/{info['id']}").status_code == 403
    by_hold = call("legal", "POST", "/api/v1/exports", {"hold": hold_id})
    assert by_hold.status_code == 202
    held = finished(lambda: call("legal", "GET", by_hold.headers["Location"]))
    assert held["counts"]["records"] == 2
    assert call("legal", "GET", held["download"]).status_code == 200
    assert call("admin", "POST", "/api/v1/exports", {"query": "refund"}).status_code == 403
    bad = call("compliance", "POST", "/api/v1/exports", {"query": "refund", "contact": ALICE})
    assert bad.status_code == 400 and bad.get_json()["field"] == "selection"
    assert call("compliance", "GET", "/api/v1/exports/exp-000000000000/bundle.zip").status_code == 404
    assert call("compliance", "GET", "/api/v1/exports/exp-000000000000").status_code == 404
    assert call("compliance", "POST", "/api/v1/exports", {"hold": "hold-nope"}).status_code == 404
    assert call("compliance", "POST", "/api/v1/exports", {"queryx": "refund"}).get_json()["field"] == "queryx"
    only = call("compliance", "POST", "/api/v1/exports", {"query": "refund", "format": ["bundle"], "tz": "Asia/Tokyo"})
    assert only.status_code == 202, only.get_json()
    only_info = finished(lambda: call("compliance", "GET", only.headers["Location"]))
    names = zipfile.ZipFile(io.BytesIO(call("compliance", "GET", only_info["download"]).data)).namelist()
    assert "records.jsonl" in names and "transcript.pdf" not in names  # the job kept the request's format
    assert "transcript.pdf" in zipfile.ZipFile(io.BytesIO(got.data)).namelist()  # the default writes it
    assert call("compliance", "POST", "/api/v1/exports", {"query": "refund", "format": "rtf"}).get_json()["field"] == "format"
    assert call("compliance", "POST", "/api/v1/exports", {"query": "refund", "tz": "Nowhere/X"}).get_json()["field"] == "tz"


def test_media_files_are_exported_by_sha256_and_missing_ones_listed(
        tmp_path: Path, fake_graph: FakeGraph, standalone: Callable[[Path], tuple[int, str]]) -> None:  # noqa: F811
    inst = MediaInstance(tmp_path / "home", ARCHIVER_GRAPH_URL=fake_graph.url)
    try:
        ingest_media(inst, image_body("wamid.IMG1", "1487220933510642", fake_graph.add("1487220933510642", PHOTO)))
        ingest_media(inst, image_body("wamid.IMG2", "9999999999999999", "bm90IGZldGNoZWQgeWV0IG5vdCBmZXRjaGVkIHk="))
        assert inst.fetch() >= 1
        seal(inst.services)
        out = tmp_path / "m"
        done = export.write_bundle(inst.services, export.Selection(contact="4479460001234"), out, "test")
        sha = hashlib.sha256(PHOTO).hexdigest()
        assert (out / "media" / sha).read_bytes() == PHOTO
        assert done.counts["media_files"] == 1 and done.counts["media_missing"] == 1
        recs = lines(out)
        (media_rec,) = [r for r in recs if r["kind"] == "media"]
        assert media_rec["media"] == [{"object": media_rec["sealed"]["object"], "sha256": sha,
                                       "file": f"media/{sha}", "state": "stored"}]
        waiting = [m for r in recs if r["kind"] == "message" for m in r["media"] if m["state"] != "stored"]
        assert [m["media_id"] for m in waiting] == ["9999999999999999"] and waiting[0]["sha256"] is None
        both_pass(out, standalone)

        flipped = tmp_path / "flipped"
        shutil.copytree(out, flipped)
        data = bytearray((flipped / "media" / sha).read_bytes())
        data[10] ^= 1
        (flipped / "media" / sha).write_bytes(bytes(data))
        problems, _ = export_verify.verify_bundle(flipped)
        assert f"media/{sha}: SHA-256 differs from MANIFEST.json" in problems
        assert f"media/{sha}: seq {media_rec['seq']}: bytes do not hash to the name and sha256 the record gives" in problems
        code, text = standalone(flipped)
        assert code == 1 and f"media/{sha}: seq {media_rec['seq']}: bytes do not hash" in text
    finally:
        inst.services.close()


def test_no_bundle_is_left_when_the_export_cannot_be_audited(inst: Instance, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ingest_three(inst)

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("catalog down")
    monkeypatch.setattr(export, "append_audit", refuse)
    with pytest.raises(RuntimeError):
        bundle(inst, tmp_path / "exports" / "x", query="refund")
    assert list((tmp_path / "exports").iterdir()) == []  # neither the bundle nor its partial folder


# --------------------------------------------------------------------------- 100,000 records

BIG_CONTACT = "4479460100000"


def _journal_messages(services: Services, n: int, chunk: int = 10_000) -> None:
    """``n`` webhook deliveries of one text message each from one contact, journaled in-process
    in a few big transactions (as the webhook would, without HTTP): fast enough to seal 2n records."""
    from archiver.journal import append_delivery
    from tests.conftest import sign
    from tests.e2e.test_pipeline import msg_body

    value = "{:08d}"
    for start in range(0, n, chunk):
        with services.sessions.begin() as session:
            for i in range(start, min(n, start + chunk)):
                body = msg_body(f"wamid.big.{value.format(i)}", f"message {i}", ts=str(1780001000 + i)).replace(
                    b"4479460001234", BIG_CONTACT.encode())
                append_delivery(session, "webhook", body, {"signature": sign(body)["X-Hub-Signature-256"],
                                                           "remote": "127.0.0.1", "content_type": "application/json"})


def test_an_export_of_100000_records_passes_both_verifiers(tmp_path: Path,
                                                          standalone: Callable[[Path], tuple[int, str]]) -> None:
    """Bad input: a selection holding 100,000 records (50,000 messages of one contact and their
    deliveries) on the embedded default (SQLite, local WORM store), built in-process."""
    from archiver import sealer

    services = Services.open(Settings.from_env(make_env(tmp_path / "home")))
    try:
        _journal_messages(services, 50_000)
        sealer.seal_pending(services)
        out = tmp_path / "big"
        done = export.write_bundle(services, export.Selection(contact=BIG_CONTACT), out, "test:auditor",
                                   formats=("bundle",))
    finally:
        services.close()
    assert done.counts["records"] == 100_000 and done.counts["shredded"] == 0, done.counts
    assert done.counts["checkpoints"] >= 2  # the selection spans segments: proofs to several roots
    both_pass(out, standalone)
    kinds: dict[str, int] = {}
    with (out / "records.jsonl").open("rb") as fh:
        for line in fh:
            kind = json.loads(line)["kind"]
            kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == {"message": 50_000, "delivery": 50_000}, kinds
