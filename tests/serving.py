"""Running the real ``archiver serve`` in a test, and waiting on conditions instead of sleeping.

    from tests.serving import free_port, start_service, stop_service, wait_until

    proc = start_service(env, port, tmp_path / "serve.log")   # returns once /healthz answers 200
    wait_until(lambda: sealed(wamid), timeout=20, what="the webhook sealed")
    stop_service(proc)                                         # SIGTERM, then every child gone

A test never sleeps a fixed time to let something happen: it waits for the condition that
says it happened, with a deadline, and fails naming what it waited for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import requests

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

#: How long ``archiver serve`` may take to answer its first /healthz on a loaded machine
#: (the WORM self-test, imports and the first request all run before it).
START_TIMEOUT = 90.0
#: Per-request timeout of a /healthz poll: generous, since a slow first answer is not a failure.
POLL_REQUEST_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``predicate`` until it returns something truthy and return that.

    Raises AssertionError naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}")
        time.sleep(interval)


def healthy(port: int, request_timeout: float = POLL_REQUEST_TIMEOUT) -> bool:
    """True when ``/healthz`` on ``port`` answers 200; False while it cannot (refused, slow, reset)."""
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=request_timeout).status_code == 200
    except requests.RequestException:  # ConnectionError, ReadTimeout, ConnectTimeout, a reset mid-answer
        return False


def start_service(env: dict[str, str], port: int, log: Path, workers: int | None = None,
                  timeout: float = START_TIMEOUT, verbose: bool = False,
                  args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start ``archiver serve`` on ``port`` in its own process group and return once /healthz answers 200.

    stdout and stderr go to ``log`` (``verbose``: ``archiver -v``, INFO logs); ``args`` are more
    ``serve`` options (``--role``...). Raises AssertionError (with the log's tail) when the
    service exits or does not become healthy within ``timeout`` seconds; it is killed then.
    """
    cmd = [sys.executable, "-m", "archiver.cli", *(["-v"] if verbose else []), "serve", "--port", str(port),
           *(["--workers", str(workers)] if workers else []), *args]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or healthy(port), timeout, "archiver serve to answer /healthz",
                   interval=0.2)
    except AssertionError as exc:
        _kill_group(proc)
        raise AssertionError(f"service did not start in {timeout:g}s: {log.read_text(errors='replace')[-2000:]}") from exc
    if proc.poll() is not None:
        raise AssertionError(f"service exited ({proc.returncode}) before serving: "
                             f"{log.read_text(errors='replace')[-2000:]}")
    return proc


def group_gone(pgid: int) -> bool:
    """True once no process of the group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_group_gone(pgid: int, timeout: float = 20) -> None:
    """Wait until every process of the (killed) service's group has exited. Raises AssertionError."""
    wait_until(lambda: group_gone(pgid), timeout, f"every process of group {pgid} to exit")


def stop_service(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM the service's group, wait for the arbiter and every child to exit. Raises AssertionError."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    proc.wait(timeout=timeout)
    wait_group_gone(proc.pid)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def children(pid: int) -> dict[int, str]:
    """Direct children of ``pid`` (from /proc): pid -> command line."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out[int(entry.name)] = cmd
    return out
