"""journal.JournalWriter: group commit that is durable per request, with threads and with gevent."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from archiver.catalog import Journal
from archiver.errors import JournalUnavailable
from tests.conftest import make_env

ROOT = Path(__file__).resolve().parents[2]


def _counting(writer: Any) -> list[int]:
    """Batch sizes of the writer's commits, from now on."""
    sizes: list[int] = []
    real = writer._commit

    def commit(batch: list[Any]) -> None:
        sizes.append(len(batch))
        real(batch)

    writer._commit = commit
    return sizes


def test_concurrent_appends_share_commits_and_each_gets_its_own_row(services: Any) -> None:
    writer = services.journal
    sizes = _counting(writer)
    ids: dict[bytes, int] = {}

    def post(t: int) -> None:
        for i in range(25):
            body = f"body {t}-{i}".encode()
            ids[body] = writer.append("webhook", body, {"n": i})

    threads = [threading.Thread(target=post, args=(t,)) for t in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(sizes) == 300 and len(set(ids.values())) == 300
    assert len(sizes) < 300  # some requests shared a commit
    with services.sessions() as session:
        stored = {body: jid for body, jid in session.execute(select(Journal.body, Journal.id))}
    assert stored == ids  # every request got the id of exactly its own, committed, row


def test_a_failed_commit_fails_its_requests_and_the_next_ones_commit(services: Any) -> None:
    writer = services.journal
    good_sql = writer._sql
    writer._sql = good_sql.replace("journal", "no_such_table", 1)
    with pytest.raises(JournalUnavailable):
        writer.append("webhook", b"lost", {})
    writer._sql = good_sql
    jid = writer.append("webhook", b"kept", {})  # the lead was handed back: no request hangs
    with services.sessions() as session:
        assert session.scalars(select(Journal.body)).all() == [b"kept"]
        assert session.get(Journal, jid).body == b"kept"


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import json, sys
import gevent
from sqlalchemy import func, select
from archiver.catalog import Journal
from archiver.config import Settings
from archiver.services import Services

svc = Services.open(Settings.from_env(json.loads(sys.argv[1])))
writer = svc.journal
sizes = []
real = writer._commit
writer._commit = lambda batch: (sizes.append(len(batch)), real(batch))[1]
ids = []
def post(g):
    for i in range(20):
        ids.append(writer.append("webhook", f"{g}-{i}".encode(), {}))
gevent.joinall([gevent.spawn(post, g) for g in range(16)], raise_error=True)
with svc.sessions() as session:
    rows = session.scalar(select(func.count()).select_from(Journal))
print(json.dumps({"ids": len(set(ids)), "rows": rows, "commits": len(sizes)}))
"""


def test_under_gevent_waiting_requests_join_one_commit(tmp_path: Path) -> None:
    """As in ``archiver serve``'s gevent workers: greenlets that are ready when a commit starts
    share it (gevent's locks let a releasing greenlet take a lock straight back, so waiting on
    the commit lock made every commit a batch of one)."""
    env = make_env(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, json.dumps(env)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ids"] == got["rows"] == 320
    assert got["commits"] <= 320 / 4, got  # 16 greenlets: commits of many rows, not of one


BUSY_LOOP_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import json, sys, time
import gevent
from archiver.config import Settings
from archiver.services import Services

svc = Services.open(Settings.from_env(json.loads(sys.argv[1])))
def busy():  # an event loop that never falls idle (a flood of connections, say)
    while True:
        gevent.sleep(0)
gevent.spawn(busy)
start = time.monotonic()
append = gevent.spawn(svc.journal.append, "webhook", b"{}", {})
append.join(timeout=60)
print(json.dumps({"done": append.successful(), "seconds": time.monotonic() - start}))
"""


def test_under_gevent_a_busy_event_loop_does_not_stall_a_commit(tmp_path: Path) -> None:
    """The commit happens although the loop never idles; how long it waits is measured by scripts/bench."""
    out = subprocess.run([sys.executable, "-c", BUSY_LOOP_SCRIPT, json.dumps(make_env(tmp_path / "home"))], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["done"], got  # without the bounded wait for an idle loop, the append never commits
