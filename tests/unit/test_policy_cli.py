"""``archiver policy check``: the classes and the hash of a good file (exit 0), the precise problem of a bad one (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver.canonical import sha256_hex
from archiver.cli import main

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
classes:
  - name: short-test
    retain: PT20S
    erasable: true
    match:
      contact: ["33699000001"]
  - name: broker
    retain: 5y
    rule: finra-4511
    override: demo desk, nothing regulated
    review: true
    match: {business_number: "15550100", direction: inbound}
  - name: default
    retain: 7y
"""


def folder(tmp_path: Path, text: str) -> Path:
    (tmp_path / "retention.yaml").write_text(text)
    return tmp_path


def errors(stderr: str) -> str:
    """stderr without the line naming the archive (every command prints it first)."""
    lines = stderr.splitlines(keepends=True)
    assert lines and lines[0].startswith("archiver: ARCHIVER_HOME="), stderr
    return "".join(lines[1:])


def test_a_good_file_prints_its_classes_and_hash(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["policy", "check", "--dir", str(folder(tmp_path, GOOD))])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"ok: {tmp_path / 'retention.yaml'}",
        f"sha256 {sha256_hex(GOOD.encode())}",
        "class       retain  rule                   review  erasable  match",
        "short-test  PT20S   -                      no      yes       contact",
        "broker      5y      finra-4511 (override)  yes     no        business_number, direction",
        "default     7y      -                      no      no        every other record",
    ]


def test_json_output_names_each_class(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["policy", "check", "--dir", str(folder(tmp_path, GOOD)), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["sha256"] == sha256_hex(GOOD.encode())
    assert out["classes"][1] == {"name": "broker", "retain": "5y", "rule": "finra-4511",
                                 "override": "demo desk, nothing regulated", "review": True, "erasable": False,
                                 "match": ["business_number", "direction"], "line": 7}
    assert "33699000001" not in result.output  # match values (contacts) are not printed


def test_a_bad_file_prints_file_line_key_and_problem_and_exits_1(tmp_path: Path) -> None:
    bad = GOOD.replace("override: demo desk, nothing regulated\n    ", "")
    result = CliRunner().invoke(main, ["policy", "check", "--dir", str(folder(tmp_path, bad))])
    assert result.exit_code == 1
    assert errors(result.stderr) == (f"error[policy-invalid]: {tmp_path / 'retention.yaml'}:8: classes[1].retain: "
                             "5y is shorter than the 6y that finra-4511 requires; lengthen it, "
                             "or give the reason in override:\n")


def test_a_bad_file_as_json_and_a_missing_file(tmp_path: Path) -> None:
    bad = CliRunner().invoke(main, ["policy", "check", "--dir", str(folder(tmp_path, "classes: []\n")), "--json"])
    assert bad.exit_code == 1
    assert json.loads(errors(bad.stderr)) == {
        "error": "policy-invalid", "file": str(tmp_path / "retention.yaml"), "line": "1", "key": "classes",
        "message": f"{tmp_path / 'retention.yaml'}:1: classes: is empty: at least the default class is needed",
        "hint": "fix the file and run 'archiver policy check' (see policies/README.md)"}
    missing = CliRunner().invoke(main, ["policy", "check", "--dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
    assert errors(missing.stderr) == (f"error[policy-invalid]: {tmp_path / 'nowhere' / 'retention.yaml'}: "
                              "cannot be read: No such file or directory\n")


def test_without_dir_it_checks_archiver_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVER_POLICIES", str(folder(tmp_path, GOOD.replace("retain: 7y", "retain: 7w"))))
    result = CliRunner().invoke(main, ["policy", "check"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("default     7w ")


def test_the_installed_command_checks_the_shipped_example_from_the_repository() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    archiver = Path(sys.executable).with_name("archiver")
    good = subprocess.run([str(archiver), "policy", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith(f"ok: {ROOT / 'policies' / 'retention.yaml'}\n")
    assert [line.split()[0] for line in good.stdout.splitlines()[3:7]] == ["finra-4511", "mifid-ii", "marketing", "default"]
    assert good.stdout.splitlines()[7] == f"ok: {ROOT / 'policies' / 'consent.yaml'}"  # the shipped consent.yaml too
    bad = subprocess.run([str(archiver), "policy", "check", "--dir", str(ROOT / "templates")], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert errors(bad.stderr).startswith("error[policy-invalid]: ") and "cannot be read" in bad.stderr
