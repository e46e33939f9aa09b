"""A fresh machine's first `scripts/serve`: a brand-new virtualenv from requirements/serve.txt
(no test extras), then `archiver serve` answering /healthz.

Runs the real script with ARCHIVER_VENV pointing into tmp_path and nothing of the test
virtualenv on PATH, so a dependency that only the test extras bring (as gunicorn's gevent
worker once needed `packaging`, which only pytest brought) fails this test. pip's download
cache is used; bytecode compilation is skipped (PIP_NO_COMPILE) to save time.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.e2e.test_crash import ROOT, free_port, wait_group_gone

INSTALL_TIMEOUT = 900  # seconds: a cold pip cache downloads every wheel of the lock


def _fresh_machine_env(tmp_path: Path) -> dict[str, str]:
    """os.environ without the test virtualenv or any ARCHIVER_* setting, plus the test's paths."""
    test_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ARCHIVER_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != test_bin)
    (tmp_path / "run").mkdir()
    env.update(ARCHIVER_VENV=str(tmp_path / "venv"), ARCHIVER_HOME=str(tmp_path / "home"),
               XDG_RUNTIME_DIR=str(tmp_path / "run"),  # where gunicorn would put its control socket
               PIP_NO_COMPILE="1")
    return env


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until /healthz answers 200; AssertionError with the log's tail if serve exits or times out."""
    deadline = time.monotonic() + INSTALL_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"scripts/serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no 200 from /healthz after {INSTALL_TIMEOUT}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the service's process group (gunicorn stops gracefully), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the jobs child, should it outlive the arbiter
    except ProcessLookupError:
        pass
    wait_group_gone(proc.pid)


def test_scripts_serve_builds_a_fresh_serve_venv_and_answers_healthz(tmp_path: Path) -> None:
    env, port, log = _fresh_machine_env(tmp_path), free_port(), tmp_path / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([str(ROOT / "scripts" / "serve"), "--port", str(port)], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_healthy(proc, port, log)
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["ok"] is True, health.text
        assert list((tmp_path / "run").iterdir()) == []  # no shared gunicorn control socket
    finally:
        _stop(proc)

    venv_python = tmp_path / "venv" / "bin" / "python"
    check = subprocess.run([str(venv_python), "-m", "pip", "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    probe = subprocess.run([str(venv_python), "-c",
                            "import importlib.util as u; print([m for m in ('pytest', 'hypothesis', 'moto', 'mypy')"
                            " if u.find_spec(m)])"], capture_output=True, text=True, env=env)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr  # the serve lock only: no test extras
    stamp = (tmp_path / "venv" / ".archiver-stamp.serve").read_text().split()
    assert stamp[0] == hashlib.sha256((ROOT / "requirements" / "serve.txt").read_bytes()).hexdigest()
    assert "generated ARCHIVER_APP_SECRET" in log.read_text()
    assert (tmp_path / "home" / "secrets" / "app-secret").stat().st_mode & 0o777 == 0o600
