"""kill -9 of the running service under load: every delivery that got a 200 is sealed once.

Each post carries a body of its own, so "sealed" is checked delivery by delivery: the SHA-256
of every acknowledged body must be the SHA-256 of exactly one sealed delivery's plaintext.
The kill lands once sealing has started (an acknowledged delivery is sealed) while acknowledged rows are
still waiting in the journal, on the embedded SQLite catalog and on the real PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import event, func, select, text

from archiver import records, sealer
from archiver import verify as verifier
from archiver.catalog import Journal, Record, Segment
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import sign
from tests.e2e.test_pipeline import msg_body
from tests.serving import ROOT, free_port, start_service, wait_group_gone, wait_until

__all__ = ["ROOT", "free_port", "start_service", "wait_group_gone"]  # older imports of these names

THREADS = 2


def load(port: int, thread: int, acked: list[tuple[str, bytes]], stop: threading.Event, limit: int = 3000) -> None:
    """Post signed webhooks, each body distinct, until told to stop (bounded); keep the bodies that got a 200."""
    session = requests.Session()
    for i in range(limit):
        if stop.is_set():
            return
        wamid = f"wamid.K{thread}-{i}"
        body = msg_body(wamid, f"load from thread {thread}, post {i}")
        try:
            r = session.post(f"http://127.0.0.1:{port}/webhooks/whatsapp", data=body, headers=sign(body), timeout=10)
        except requests.RequestException:
            return  # the service is gone
        if r.status_code == 200:
            acked.append((wamid, body))


def sealed_segments(services: Services) -> int:
    """Segments committed to the catalog, stored or still "writing" (their upload resumes on restart)."""
    with services.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Segment)) or 0)


def journal_state(services: Services) -> dict[str, bool]:
    """body_sha256 -> sealed, for every webhook row of the journal."""
    with services.sessions() as session:
        rows = session.execute(select(Journal.body_sha256, Journal.sealed).where(Journal.source == "webhook")).all()
    return {sha: bool(sealed) for sha, sealed in rows}


def acked_sealed_and_pending(services: Services, acked: list[list[tuple[str, bytes]]]) -> bool:
    """Has one acknowledged delivery been sealed while another still waits (the moment to kill)?"""
    state = journal_state(services)
    sealed = [bool(state.get(hashlib.sha256(body).hexdigest())) for posts in acked for _, body in list(posts)]
    return any(sealed) and not all(sealed)


def sealed_delivery_hashes(services: Services) -> Counter[str]:
    """SHA-256 of every sealed delivery's decrypted plaintext, counted."""
    with services.sessions() as session:
        return Counter(hashlib.sha256(plain).hexdigest()
                       for rec, plain in records.iter_decrypted(services, session, 0, kinds={"delivery"})
                       if rec["kind"] == "delivery" and plain is not None)


@pytest.mark.parametrize("workers", [None, 2], ids=["default-workers", "2-workers"])
def test_kill_9_under_load_loses_nothing_and_seals_nothing_twice(tmp_path: Path, catalog_env: dict[str, str],
                                                                 workers: int | None) -> None:
    env = catalog_env
    port = free_port()
    proc = start_service(env, port, tmp_path / "serve.log", workers)
    acked: list[list[tuple[str, bytes]]] = [[] for _ in range(THREADS)]
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(port, n, acked[n], stop)) for n in range(THREADS)]
    for t in threads:
        t.start()
    watcher = Services.open(Settings.from_env(env))
    try:
        # The in-process sealer has sealed an acknowledged delivery (not only the policy record sealed at
        # start-up) and load goes on: the kill lands mid-sealing.
        # A sealer fast enough to catch up with the load between two polls must not make the kill land
        # when nothing acknowledged is pending: wait for a moment with both.
        wait_until(lambda: sum(map(len, acked)) > 50 and acked_sealed_and_pending(watcher, acked), 90,
                   "50 acknowledged posts, one of them sealed and one still pending")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_group_gone(proc.pid)  # the jobs process too: one caught in an fsync dies when it returns
        stop.set()
        for t in threads:
            t.join(timeout=30)
    all_acked = [body for posts in acked for _, body in posts]
    assert all(acked), "a load thread got no 200 at all"
    assert len(all_acked) > 50, "the load generator got too few answers to prove anything"
    acked_sha = [hashlib.sha256(body).hexdigest() for body in all_acked]
    assert len(set(acked_sha)) == len(acked_sha), "two posts carried the same body"

    at_kill = journal_state(watcher)
    # A delivery's journal row is marked sealed in the transaction that commits its segment as "writing";
    # the upload that makes it "stored" may be the very step the kill interrupts.
    assert sealed_segments(watcher) >= 1, "nothing was sealed before the kill"
    assert any(at_kill.get(sha) for sha in acked_sha), "no acknowledged delivery was sealed before the kill"
    assert not all(at_kill.get(sha) for sha in acked_sha), "the kill did not land while acknowledged rows were pending"
    watcher.close()

    services = Services.open(Settings.from_env(env))
    try:
        sealer.seal_pending(services)
        sealed = sealed_delivery_hashes(services)
        missing = [sha for sha in acked_sha if sealed[sha] == 0]
        twice = [sha for sha in acked_sha if sealed[sha] > 1]
        assert not missing, f"{len(missing)} acknowledged deliveries were never sealed"
        assert not twice, f"{len(twice)} acknowledged deliveries were sealed more than once"
        with services.sessions() as session:
            wamids = set(session.scalars(select(Record.wamid).where(Record.kind == "message")))
            journal = session.scalar(select(func.count()).select_from(Journal).where(Journal.source == "webhook"))
            unsealed = session.scalar(select(func.count()).select_from(Journal).where(Journal.sealed.is_(False)))
            report = verifier.audit(services.store, services.signing_key.public_key(), session)
        assert sum(sealed.values()) == journal and unsealed == 0  # each journaled body sealed exactly once
        assert all(count == 1 for count in sealed.values())
        assert {wamid for posts in acked for wamid, _ in posts} <= wamids  # and each one's message item
        assert report.ok, report.first_error
    finally:
        services.close()


def test_the_sqlite_catalog_syncs_every_commit_to_disk(services: Any) -> None:
    """A 200 means the body is on disk: every catalog connection runs with synchronous=FULL in WAL mode,
    also where SQLite was built to default to NORMAL in WAL mode (SQLITE_DEFAULT_WAL_SYNCHRONOUS=1)."""
    def build_default_normal(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    services.engine.dispose()  # every connection from now on is a new one
    event.listen(services.engine, "connect", build_default_normal, insert=True)  # runs before the catalog's own
    conns = [services.engine.connect() for _ in range(3)]  # three pooled connections, each set up on connect
    try:
        for conn in conns:
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # 2 = FULL (1 = NORMAL, 0 = OFF)
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        for conn in conns:
            conn.close()
    raw = services.journal._engine.raw_connection()  # the connection intake's group commit writes on
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA synchronous")
        assert cur.fetchone()[0] == 2
    finally:
        raw.close()
