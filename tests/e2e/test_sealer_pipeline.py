"""The sealer's pipeline (plan -> commit -> publish) with small batches.

Batches here hold three journal rows, so de-duplication, status ordering and failures all
happen across batches that are planned while earlier ones are still being committed. Every
test runs twice: with the writer and publisher on threads, and in a forked writer process
(what a large backlog on the local store gets).
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from archiver import pipeline, records, sealer
from archiver.catalog import MessageState, PendingLink, Record
from archiver.errors import StoreError
from tests.e2e.test_pipeline import counts, msg_body, post, report, status_body
from tests.serving import wait_until


@pytest.fixture(autouse=True, params=["threads", "process"])
def small_batches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sealer, "MAX_JOURNAL_ROWS", 3)
    forked = request.param == "process"
    monkeypatch.setattr(pipeline, "FORK_BACKLOG", 1 if forked else 10**9)
    real_run, runs = pipeline.ForkedWriter.run, []

    def counted(self: Any, max_batches: Any) -> int:
        runs.append(max_batches)
        return real_run(self, max_batches)

    monkeypatch.setattr(pipeline.ForkedWriter, "run", counted)
    yield
    assert bool(runs) == forked, f"the {request.param} pipeline was not the one that ran"


def _no_sealer_threads() -> bool:
    """No sealer thread or writer process is left behind."""
    return not [t for t in threading.enumerate() if t.name.startswith("sealer-")] and not multiprocessing.active_children()


def _dead(pid: int) -> bool:
    """True once process ``pid`` has exited (a zombie not yet reaped counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _post_mixed(client: Any) -> None:
    """Four messages, each delivered three times far apart, and statuses out of order."""
    for round_ in range(3):
        for i in range(4):
            post(client, msg_body(f"wamid.P{i}", f"text {i}"))
        post(client, status_body("wamid.P0", ("read", "sent", "delivered")[round_]))


def _assert_complete(services: Any) -> None:
    c = counts(services)
    assert c["pending"] == 0 and c["deliveries"] == 15
    assert c["items"]["message"] == 4 and c["items"]["status"] == 3
    assert c["duplicates"] == 8  # two later copies of each of the four messages
    with services.sessions() as session:
        assert session.get(MessageState, "wamid.P0").state == "read"
    r = report(services)
    assert r.ok, r.first_error
    assert r.records == 1 + 15 + 4 + 3 and r.segments == 5  # the policy record heads the first batch


def test_duplicates_across_batches_in_flight_are_caught(client: Any, services: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _post_mixed(client)
    before, during = gc.get_threshold(), []
    real_plan = sealer._plan
    monkeypatch.setattr(sealer, "_plan", lambda *a, **k: (during.append(gc.get_threshold()), real_plan(*a, **k))[1])
    assert sealer.seal_pending(services) == 1 + 15 + 4 + 3  # the policy record, then the rest
    _assert_complete(services)
    assert _no_sealer_threads()
    assert during[0][0] == pipeline.GC_THRESHOLD and gc.get_threshold() == before  # raised for the run only


def test_store_failure_mid_run_keeps_the_outbox_and_resumes(client: Any, services: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _post_mixed(client)
    real_put, calls = services.store.put_locked, []

    def flaky_put(key: str, *args: Any, **kwargs: Any) -> None:
        calls.append(key)
        if len(calls) == 5:  # the third segment's put
            raise StoreError("store unreachable (test)")
        real_put(key, *args, **kwargs)

    monkeypatch.setattr(services.store, "put_locked", flaky_put)
    with pytest.raises(StoreError):
        sealer.seal_pending(services)
    assert _no_sealer_threads()
    monkeypatch.setattr(services.store, "put_locked", real_put)
    sealer.seal_pending(services)
    _assert_complete(services)


def test_commit_failure_stops_planning_and_nothing_is_half_sealed(client: Any, services: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _post_mixed(client)
    real_write, calls = sealer._write, []

    def failing_write(svc: Any, batch: Any) -> Any:
        calls.append(batch.no)
        if len(calls) == 2:
            raise RuntimeError("catalog went away (test)")
        return real_write(svc, batch)

    monkeypatch.setattr(sealer, "_write", failing_write)
    with pytest.raises(RuntimeError, match="catalog went away"):
        sealer.seal_pending(services)
    assert _no_sealer_threads()
    assert counts(services)["pending"] == 12  # the first batch (3 rows) committed, the rest did not
    monkeypatch.setattr(sealer, "_write", real_write)
    sealer.seal_pending(services)
    _assert_complete(services)


def test_planning_failure_lets_planned_batches_finish(client: Any, services: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _post_mixed(client)
    real_plan, calls = sealer._plan, []

    def failing_plan(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("parser bug (test)")
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(sealer, "_plan", failing_plan)
    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="parser bug"):
        sealer.seal_pending(services)
    assert _no_sealer_threads()
    assert gc.get_threshold() == before
    assert counts(services)["pending"] == 15 - 6  # the two batches planned before it were sealed
    monkeypatch.setattr(sealer, "_plan", real_plan)
    sealer.seal_pending(services)
    _assert_complete(services)


def _edit(wamid: str, original: str) -> bytes:
    body = json.loads(msg_body(wamid))
    msg = body["entry"][0]["changes"][0]["value"]["messages"][0]
    msg.update(type="edit", edit={"original_message_id": original, "message": {"type": "text", "text": {"body": "x"}}})
    del msg["text"]
    return json.dumps(body).encode()


def _sealed(services: Any, wamid: str, kind: str) -> tuple[int, dict[str, Any]]:
    """(seq, record as stored in WORM) of the record of ``kind`` for ``wamid``."""
    with services.sessions() as session:
        seq = session.scalar(select(Record.seq).where(Record.wamid == wamid, Record.kind == kind))
        return seq, records.read_record(services, session, seq)  # "links" as sealed in WORM


@pytest.mark.parametrize("apart", [True, False], ids=["separate-runs", "batches-in-flight"])
def test_an_edit_sealed_before_its_message_is_linked_in_the_chain(client: Any, services: Any, apart: bool) -> None:
    post(client, _edit("wamid.E1", "wamid.O1"))
    post(client, _edit("wamid.E2", "wamid.O1"))
    if apart:
        sealer.seal_pending(services)
    for i in range(4):  # other traffic, so the original lands in a later batch
        post(client, msg_body(f"wamid.F{i}"))
    post(client, msg_body("wamid.O1", "the original"))
    sealer.seal_pending(services)
    e1, _ = _sealed(services, "wamid.E1", "edit")
    e2, _ = _sealed(services, "wamid.E2", "edit")
    original, stored = _sealed(services, "wamid.O1", "message")
    assert stored["links"]["edited_by"] == e2  # the WORM record names the latest edit sealed before it
    with services.sessions() as session:
        links = dict(session.execute(select(Record.seq, Record.links).where(Record.seq.in_([e1, e2]))).all())
        assert session.scalar(select(func.count()).select_from(PendingLink)) == 0
    assert links[e1]["original"] == original and links[e2]["original"] == original
    r = report(services)
    assert r.ok, r.first_error


@pytest.mark.parametrize("small_batches", ["process"], indirect=True)  # only a process can die on its own
@pytest.mark.parametrize("planner", ["done-planning", "still-planning"])
def test_a_writer_process_that_dies_is_reported_and_its_batches_are_sealed_next_run(
        client: Any, services: Any, monkeypatch: pytest.MonkeyPatch, planner: str, tmp_path: Path) -> None:
    _post_mixed(client)
    real_write, real_plan, calls, waited = sealer._write, sealer._plan, [], []
    died = tmp_path / "writer-died"  # the writer's pid, written just before it dies
    if planner == "still-planning":  # the planner's next send then meets a closed pipe
        def slow_plan(*args: Any, **kwargs: Any) -> Any:
            if args[3] == 2:  # batches 0 and 1 are with the writer, which dies on batch 1
                wait_until(lambda: died.exists() and _dead(int(died.read_text())), 30, "the writer process to die")
                waited.append(True)
            return real_plan(*args, **kwargs)
        monkeypatch.setattr(sealer, "_plan", slow_plan)

    def dying_write(svc: Any, batch: Any) -> Any:
        calls.append(batch.no)
        if len(calls) == 2:
            (tmp_path / "pid").write_text(str(os.getpid()))
            (tmp_path / "pid").rename(died)
            os._exit(1)  # as if the OOM killer took the writer process mid-run
        return real_write(svc, batch)

    monkeypatch.setattr(sealer, "_write", dying_write)
    with pytest.raises(RuntimeError, match="writer process exited"):
        sealer.seal_pending(services)
    assert waited == ([True] if planner == "still-planning" else [])  # the planner was mid-plan when it died
    assert _no_sealer_threads()
    assert counts(services)["pending"] == 12  # the first batch committed; nothing half-sealed
    monkeypatch.setattr(sealer, "_write", real_write)
    monkeypatch.setattr(sealer, "_plan", real_plan)
    sealer.seal_pending(services)
    _assert_complete(services)
