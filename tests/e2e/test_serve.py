"""``archiver serve`` as an operator runs it: gevent web workers, the jobs in a child process
that the arbiter restarts, and the WORM self-test before anything is served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from archiver.auth import create_token
from archiver.catalog import Record
from archiver.config import Settings
from archiver.services import Services
from tests import backends
from tests.conftest import make_env, sign
from tests.serving import ROOT, children, free_port, start_service, stop_service, wait_until
from tests.e2e.test_pipeline import msg_body


def _jobs_pid(arbiter: int) -> int:
    (pid,) = [p for p, cmd in children(arbiter).items() if " jobs " in f"{cmd} "]
    return pid


def _sealed(env: dict[str, str], wamid: str, timeout: float = 20) -> bool:
    """True once the message ``wamid`` is sealed; False when ``timeout`` seconds pass first."""
    services = Services.open(Settings.from_env(env))

    def sealed() -> bool:
        with services.sessions() as session:
            return bool(session.scalar(select(Record.seq).where(Record.wamid == wamid, Record.kind == "message")))
    try:
        wait_until(sealed, timeout, f"{wamid} sealed", interval=0.2)
        return True
    except AssertionError:
        return False
    finally:
        services.close()


def _post(port: int, wamid: str) -> None:
    body = msg_body(wamid, "hello")
    r = requests.post(f"http://127.0.0.1:{port}/webhooks/whatsapp", data=body, headers=sign(body), timeout=10)
    assert r.status_code == 200, r.text


def _read_api_through_the_worker(env: dict[str, str], port: int) -> None:
    """Authenticated routes that use the catalog, the store and search work in a gevent worker."""
    services = Services.open(Settings.from_env(env))
    try:
        with services.sessions.begin() as session:
            headers = {"Authorization": f"Bearer {create_token(session, 'compliance', 'serve-test')}"}
        with services.sessions() as session:
            seq = session.scalar(select(Record.seq).where(Record.wamid == "wamid.S1", Record.kind == "message"))
    finally:
        services.close()
    base = f"http://127.0.0.1:{port}/api/v1"
    stats = requests.get(f"{base}/stats", headers=headers, timeout=10)
    assert stats.status_code == 200 and stats.json()["chain"]["seq"] >= seq
    record = requests.get(f"{base}/records/{seq}", headers=headers, timeout=10)
    assert record.status_code == 200 and record.json()["kind"] == "message"
    assert requests.get(f"{base}/stats", timeout=10).status_code == 401


def test_serve_seals_in_its_jobs_process_and_restarts_it_when_it_dies(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home", ARCHIVER_SEAL_INTERVAL="0.5")
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start_service(env, port, log)
    try:
        first = _jobs_pid(proc.pid)
        _post(port, "wamid.S1")
        assert _sealed(env, "wamid.S1"), "the jobs process did not seal the webhook"
        _read_api_through_the_worker(env, port)
        os.kill(first, signal.SIGKILL)
        _post(port, "wamid.S2")  # intake does not depend on the jobs
        assert _sealed(env, "wamid.S2"), "the jobs process was not restarted"
        assert _jobs_pid(proc.pid) != first
    finally:
        stop_service(proc)
    text = log.read_text()
    assert "Using worker: gevent" in text
    # gunicorn's arbiter imported no TLS client before the workers patched the stdlib.
    assert "MonkeyPatchWarning" not in text and "RecursionError" not in text


@pytest.mark.s3
def test_serve_refuses_a_bucket_without_object_lock_before_serving(tmp_path: Path) -> None:
    settings = backends.s3_settings()
    bucket = backends.new_bucket(locked=False)
    env = make_env(tmp_path / "home", ARCHIVER_STORE_URL=(
        f"s3://{bucket}?endpoint_url={settings.endpoint_url}&region={settings.region}"),
        AWS_ACCESS_KEY_ID=settings.access_key, AWS_SECRET_ACCESS_KEY=settings.secret_key)
    out = subprocess.run([sys.executable, "-m", "archiver.cli", "serve", "--port", str(free_port())], cwd=ROOT,
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error[worm-not-enforced]" in out.stderr
    assert "listening" not in out.stdout
