"""The command line as a newcomer and an attacker meet it: which archive it uses, a folder that
holds none, file modes, the SQLite files' leftovers, hostile text on the terminal, tokens,
warnings said once, and the search table."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
import pytest
from click.testing import CliRunner, Result

from archiver import indexer, media, sealer
from archiver.app import create_app
from archiver.cli import main
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import make_env, sign
from tests.e2e.test_pipeline import msg_body
from tests.serving import ROOT, free_port, start_service, stop_service

READ_COMMANDS = [["verify"], ["verify", "--json"], ["show", "1"], ["search", "refund"], ["stats"], ["stats", "--json"],
                 ["index"], ["reindex"], ["seal"], ["token", "list"], ["token", "revoke", "--name", "x"],
                 ["token", "create", "--role", "admin", "--name", "x"], ["audit", "list"], ["quarantine", "list"],
                 ["show", "1", "--raw"], ["matter", "create", "Acme v. Us"], ["hold", "list"], ["hold", "show", "hold-x"],
                 ["hold", "create", "--matter", "m", "--name", "n", "--custodian", "1", "--reason", "r"],
                 ["hold", "release", "hold-x", "--reason", "r"], ["contact", "show", "4479460001234"],
                 ["contact", "rebuild"], ["report", "integrity", "--out", "r.pdf"], ["report", "access", "--out", "r.pdf"],
                 ["report", "holds", "--out", "r.pdf"], ["report", "dispositions", "--out", "r.pdf"],
                 ["user", "create", "--email", "a@example.com", "--role", "auditor"], ["user", "list"],
                 ["user", "disable", "--email", "a@example.com"], ["user", "reset-mfa", "--email", "a@example.com"]]
OSC = "\x1b]0;pwned\x07"

BASH = shutil.which("bash") or "/bin/bash"


def cli(home: Path, *args: str, **extra: str) -> Result:
    return CliRunner().invoke(main, list(args), env=make_env(home, **extra))


def archive_with(home: Path, *texts: str, index: bool = True) -> Services:
    """An archive in ``home`` holding one sealed (and indexed) message per text."""
    services = Services.open(Settings.from_env(make_env(home)))
    client = create_app(services=services).test_client()
    for i, text in enumerate(texts):
        body = msg_body(f"wamid.CLI{i}", text, ts=str(1780001000 + i))
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(services)
    if index:
        indexer.index_pending(services)
    return services


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_a_read_command_refuses_a_folder_without_an_archive_and_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "elsewhere"
    got = cli(home, *args)
    assert got.exit_code != 0, got.output
    assert f"archiver: ARCHIVER_HOME={home}" == got.stderr.splitlines()[0]
    assert f"no archive at ARCHIVER_HOME={home}" in got.stderr
    assert "archiver init" in got.stderr and "ARCHIVER_HOME" in got.stderr
    assert not home.exists()


def test_verify_in_the_wrong_directory_refuses_and_creates_no_var(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_") or k.startswith("ARCHIVER_TEST_")}
    env["PYTHONPATH"] = str(ROOT)
    got = subprocess.run([sys.executable, "-m", "archiver.cli", "verify"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 2, got.stdout + got.stderr
    assert "ok" not in got.stdout
    assert f"no archive at ARCHIVER_HOME={tmp_path / 'var'}" in got.stderr
    assert list(tmp_path.iterdir()) == []


def test_init_creates_the_archive_and_verify_of_an_empty_one_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = cli(home, "init")
    assert made.exit_code == 0, made.output
    assert made.stderr.splitlines() == [f"archiver: ARCHIVER_HOME={home}"]
    assert f"created an archive in {home}" in made.stdout
    empty = cli(home, "verify")
    assert empty.exit_code == 3, empty.output
    assert "empty: no record sealed" in empty.stderr and "ok" not in empty.stdout
    as_json = cli(home, "verify", "--json")
    assert as_json.exit_code == 3 and '"empty": true' in as_json.stdout
    again = cli(home, "init")
    assert again.exit_code == 0 and "archive already there" in again.stdout


def _modes(home: Path) -> dict[str, int]:
    out = {}
    for folder, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(folder) / name
            out[str(path.relative_to(home))] = stat.S_IMODE(path.lstat().st_mode)
    out["."] = stat.S_IMODE(home.stat().st_mode)
    return out


def test_everything_under_the_home_is_private_under_umask_022(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_") or k.startswith("ARCHIVER_TEST_")},
           **make_env(home), "PYTHONPATH": str(ROOT)}
    a = f"{sys.executable} -m archiver.cli"
    script = (f"umask 022; mkdir -p {home} && chmod 0755 {home} && {a} init && "
              f"{a} token create --role admin --name modes >/dev/null && {a} seal && {a} index && {a} search modes")
    got = subprocess.run([BASH, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stdout + got.stderr
    modes = _modes(home)
    assert {"catalog.db", "search.db", "keys/kek", "worm/objects"} <= set(modes)
    worm_files = [p for p in modes if p.startswith("worm/") and (home / p).is_file() and p != "worm/.mutex"]
    assert worm_files, "nothing sealed"
    for path, mode in modes.items():
        if (home / path).is_dir():
            assert mode == 0o700, (path, oct(mode))
        elif path in worm_files:
            assert mode == 0o400, (path, oct(mode))
        else:
            assert mode == 0o600, (path, oct(mode))


def test_sqlite_runs_with_secure_delete_and_the_wal_is_truncated_after_sealing(tmp_path: Path) -> None:
    sentinel = "zebrafjord-lingering-body"
    services = archive_with(tmp_path / "home", f"the {sentinel} text", index=False)
    try:
        catalog = tmp_path / "home" / "catalog.db"
        wal = catalog.with_name("catalog.db-wal")
        assert not wal.exists() or wal.stat().st_size == 0  # sealed: the WAL was truncated
        for path in (catalog, wal):
            if path.exists():
                assert sentinel.encode() not in path.read_bytes(), path.name
        with services.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        with services.search._connect() as db:
            assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    finally:
        services.close()


def test_control_characters_in_a_message_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    home = tmp_path / "home"
    archive_with(home, f"refund {OSC} and \x9b31m and \u202eevil and a\rline").close()
    got = cli(home, "search", "refund")
    assert got.exit_code == 0, got.output
    for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\r"):
        assert raw not in got.stdout, repr(raw)
    assert "\\x1b]0;pwned\\x07" in got.stdout and "\\u202e" in got.stdout
    shown = cli(home, "show", "1")
    assert shown.exit_code == 0 and not any(c in shown.stdout for c in ("\x1b", "\x9b", "\u202e"))


def test_search_prints_a_table_with_decoded_text_and_correct_plurals(tmp_path: Path) -> None:
    home = tmp_path / "home"
    archive_with(home, "one refund for <Tom & Jerry>", "a second refnd", "zebra only here").close()
    one = cli(home, "search", "refund")
    assert one.exit_code == 0, one.output
    lines = one.stdout.splitlines()
    assert lines[0] == "1 result"
    assert lines[1].split() == ["seq", "time", "(UTC)", "dir", "contact", "snippet"]
    row = lines[2]
    assert row.split()[:5] == ["#3", "2026-05-28", "20:43:20", "in", "4479460001234"]  # #1 the policy, #2 its delivery
    assert "one refund for <Tom & Jerry>" in row
    assert "<mark>" not in one.stdout and "&lt;" not in one.stdout and "&amp;" not in one.stdout
    assert "\x1b" not in one.stdout  # not a terminal: no emphasis codes
    two = cli(home, "search", "refund OR refnd OR zebra")
    assert two.stdout.splitlines()[0] == "3 results"
    none = cli(home, "search", "nothingmatches")
    assert none.stdout.splitlines() == ["0 results"]


def test_token_list_unique_names_and_revoke_of_an_unknown_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert cli(home, "init").exit_code == 0
    made = cli(home, "token", "create", "--role", "compliance", "--name", "cathy")
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert secret.startswith("wa_") and len(made.stdout.splitlines()) == 1  # TOKEN=$(...) gets the secret
    dup = cli(home, "token", "create", "--role", "admin", "--name", "cathy")
    assert dup.exit_code == 1 and "a token named 'cathy' already exists" in dup.stderr and not dup.stdout
    assert cli(home, "token", "create", "--role", "boss", "--name", "b").exit_code == 2  # not one of ROLES
    unknown = cli(home, "token", "revoke", "--name", "nobody")
    assert unknown.exit_code == 1 and "token 'nobody' is unknown" in unknown.stderr
    assert cli(home, "token", "revoke", "--name", "cathy").exit_code == 0
    again = cli(home, "token", "revoke", "--name", "cathy")
    assert again.exit_code == 1 and "already revoked" in again.stderr
    listed = cli(home, "token", "list")
    assert listed.exit_code == 0 and secret not in listed.stdout
    lines = listed.stdout.splitlines()
    assert lines[0] == "1 token" and lines[1].split() == ["name", "role", "created", "revoked"]
    assert lines[2].split()[:2] == ["cathy", "compliance"] and lines[2].count("20") >= 2  # created and revoked
    as_json = cli(home, "token", "list", "--json")
    [row] = json.loads(as_json.stdout)
    assert set(row) == {"name", "role", "created", "revoked"} and row["revoked"]


def test_the_store_warning_is_said_once_per_serve_and_never_by_other_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    expected = 1 if os.geteuid() == 0 else 0  # the local store cannot stop root, and says so
    port, log = free_port(), tmp_path / "serve.log"
    proc = start_service(make_env(home), port, log)
    stop_service(proc)
    out = log.read_text(errors="replace")
    assert out.count("software WORM") == expected, out
    assert out.count(f"archiver: ARCHIVER_HOME={home}") == 1, out  # serve's children do not repeat it
    stats = cli(home, "stats")
    assert stats.exit_code == 0 and "software WORM" not in stats.output and "InsecureStoreWarning" not in stats.output


def test_a_missing_graph_token_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    services = Services.open(Settings.from_env(make_env(tmp_path / "home", ARCHIVER_GRAPH_TOKEN="")))
    try:
        with caplog.at_level(logging.INFO, logger="archiver.media"):
            for _ in range(3):
                assert media.fetch_due(services) == 0
    finally:
        services.close()
    said = [r for r in caplog.records if r.getMessage().startswith("media.skipped reason=no-graph-token")]
    assert len(said) == 1
