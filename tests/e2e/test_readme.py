"""The README's newcomer path, run as written: the fenced blocks marked ``readme-test: serve``
and ``readme-test: client``, in a fresh ``ARCHIVER_HOME`` on a free port, against the real
``scripts/serve``."""

from __future__ import annotations

import json
import os
import shutil
import re
import subprocess
import sys
from pathlib import Path

from tests.serving import ROOT, free_port, healthy, stop_service, wait_until

#: scripts/serve installs what is missing first; on a warm .venv that is a no-op.
SERVE_TIMEOUT = 600.0
_BLOCK = re.compile(r"<!-- readme-test: (\w+) -->\s*```bash\n(.*?)```", re.S)

BASH = shutil.which("bash") or "/bin/bash"


def readme_blocks() -> dict[str, str]:
    """The marked shell blocks of README.md, by name."""
    blocks = dict(_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    assert set(blocks) >= {"serve", "client"}, f"README.md lost its marked blocks: {sorted(blocks)}"
    return blocks


def test_readme_steps_from_serve_to_a_searched_message(tmp_path: Path) -> None:
    assert Path(sys.prefix).resolve() == (ROOT / ".venv").resolve(), \
        "the README's commands use .venv/bin/archiver: run the suite from the clone's .venv (scripts/test)"
    blocks = readme_blocks()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_") or k.startswith("ARCHIVER_TEST_")}
    env.update(ARCHIVER_HOME=str(tmp_path / "var"), ARCHIVER_PORT=str(port))
    log = tmp_path / "serve.log"
    with log.open("ab") as out:
        serve = subprocess.Popen([BASH, "-e", "-c", blocks["serve"]], cwd=ROOT, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: serve.poll() is not None or healthy(port), SERVE_TIMEOUT, "the README's scripts/serve",
                   interval=0.5)
        assert serve.poll() is None, log.read_text(errors="replace")[-3000:]
        client = subprocess.run([BASH, "-e", "-o", "pipefail", "-c", blocks["client"]], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
    finally:
        stop_service(serve)
    said = client.stdout + client.stderr
    assert client.returncode == 0, said + log.read_text(errors="replace")[-3000:]
    lines = client.stdout.splitlines()
    assert "1 result" in lines, said
    assert any("Hello, I would like a refund for order 1234 please" in line and " in " in line for line in lines), said
    found = json.loads(next(line for line in lines if line.startswith("{")))
    assert found["total"] == 1 and found["hits"][0]["wamid"].startswith("wamid.SAMPLE"), said
    assert any(line.startswith("ok: ") for line in lines), said
    assert f"archiver: ARCHIVER_HOME={tmp_path / 'var'}" in client.stderr
    assert "wa_" not in client.stdout  # TOKEN=$(...) took the secret; nothing printed it
