"""docker-compose.yml is valid against the Compose Specification's JSON schema.

The schema is the one check-jsonschema vendors (``--builtin-schema vendor.compose-spec``,
from github.com/compose-spec/compose-spec), pinned with check-jsonschema in
requirements/test.txt. Debian's docker-compose 1.29 predates the specification (it
rejects the top-level ``name``), so it is no judge of this file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=120)


def test_compose_file_is_valid_and_a_broken_copy_is_not(tmp_path: Path) -> None:
    compose = ROOT / "docker-compose.yml"
    broken = yaml.safe_load(compose.read_text())
    broken["services"]["archiver"]["ports"] = {"8080": "8080"}  # ports is a list, not a mapping
    broken["servcies"] = {}  # a misspelt top-level key
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))

    good, bad = _check(compose), _check(tmp_path / "broken.yml")

    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "servcies" in bad.stdout and "ports" in bad.stdout
