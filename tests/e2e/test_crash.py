"""kill -9 of the running service under load: every delivery that got a 200 is sealed once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from archiver import sealer
from archiver import verify as verifier
from archiver.catalog import Journal, Record
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import make_env, sign
from tests.e2e.test_pipeline import msg_body

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(env: dict[str, str], port: int, log: Path, workers: int | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "archiver.cli", "serve", "--port", str(port),
           *(["--workers", str(workers)] if workers else [])]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"service did not start: {log.read_text()[-2000:]}")


def wait_group_gone(pgid: int, timeout: float = 20) -> None:
    """Wait until every process of the killed service's group has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {pgid} outlived SIGKILL by {timeout}s")


def load(port: int, acked: list[str], stop: threading.Event, limit: int = 3000) -> None:
    """Post signed webhooks until told to stop (bounded); remember which got a 200."""
    session = requests.Session()
    for i in range(limit):
        if stop.is_set():
            return
        wamid = f"wamid.K{i}"
        body = msg_body(wamid, f"load {i}")
        try:
            r = session.post(f"http://127.0.0.1:{port}/webhooks/whatsapp", data=body, headers=sign(body), timeout=5)
        except requests.RequestException:
            return  # the service is gone
        if r.status_code == 200:
            acked.append(wamid)


@pytest.mark.parametrize("workers", [None, 2], ids=["default-workers", "2-workers"])
def test_kill_9_under_load_loses_nothing_and_seals_nothing_twice(tmp_path: Path, workers: int | None) -> None:
    env = make_env(tmp_path / "home")
    port = free_port()
    proc = start_service(env, port, tmp_path / "serve.log", workers)
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(port, acked, stop)) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3)  # the in-process sealer runs meanwhile, so the kill lands mid-sealing
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait_group_gone(proc.pid)  # the jobs process too: one caught in an fsync dies when it returns
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(acked) > 50, "the load generator got too few answers to prove anything"

    services = Services.open(Settings.from_env(env))
    sealer.seal_pending(services)
    with services.sessions() as session:
        sealed = set(session.scalars(select(Record.wamid).where(Record.kind == "message")))
        journal = session.scalar(select(func.count()).select_from(Journal).where(Journal.source == "webhook"))
        deliveries = session.scalar(select(func.count()).select_from(Record).where(Record.kind == "delivery"))
        unsealed = session.scalar(select(func.count()).select_from(Journal).where(Journal.sealed.is_(False)))
        report = verifier.audit(services.store, services.signing_key.public_key(), session)
    assert set(acked) <= sealed  # every 200 is sealed
    assert deliveries == journal and unsealed == 0  # each journaled body sealed exactly once
    assert report.ok, report.first_error
    services.close()
