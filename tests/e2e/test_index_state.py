"""The search index carries its own identity and cursor, on FTS5 and on a real OpenSearch.

Pointing ``ARCHIVER_SEARCH_URL`` of an indexed archive at a new backend, or wiping the
one it uses, once gave 0 hits for every query, an ``archiver index`` of 0 documents and
no lag in the stats, because the cursor lived in the catalog. Now a new or wiped index
reads as not built and the next index run fills it by itself; an index built for
another archive is reported and left alone until ``archiver reindex``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archiver import indexer, sealer, stats
from archiver.app import create_app
from archiver.catalog import archive_id
from archiver.config import Settings
from archiver.errors import SearchUnavailable
from archiver.search import IndexState
from archiver.services import Services
from tests import backends
from tests.conftest import make_env, sign
from tests.e2e.test_pipeline import msg_body
from tests.serving import ROOT


@pytest.fixture(params=["fts5", pytest.param("opensearch", marks=pytest.mark.opensearch)])
def search_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """``new()`` -> the URL of a new, empty index of the backend (OpenSearch aliases dropped afterwards)."""
    made: list[str] = []

    def new() -> str:
        if request.param == "fts5":
            made.append(f"sqlite:///{tmp_path / f'search-{len(made)}.db'}")
        else:
            made.append(f"{backends.opensearch_url()}/state-{uuid.uuid4().hex[:10]}?replicas=0")
        return made[-1]

    yield new
    for url in made:
        if url.startswith("http"):
            from archiver.search import open_index

            open_index(url).drop()  # type: ignore[attr-defined]  # OpenSearchIndex.drop


def archive(home: Path, search: str) -> Services:
    return Services.open(Settings.from_env(make_env(home, ARCHIVER_SEARCH_URL=search)))


def feed(services: Services, *texts: str) -> int:
    """Post one message per text, seal them; return the chain head."""
    client = create_app(services=services).test_client()
    for text in texts:
        body = msg_body(f"wamid.{uuid.uuid4().hex[:12]}", text)
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(services)
    return head_of(services)


def head_of(services: Services) -> int:
    with services.sessions() as session:
        return int(stats.collect(session)["chain"]["seq"])


def index_stats(services: Services) -> dict[str, Any]:
    with services.sessions() as session:
        return stats.collect(session, services.search)["index"]  # type: ignore[no-any-return]


def test_an_indexed_archive_pointed_at_a_new_index_refills_it_by_itself(tmp_path: Path, search_url: Any) -> None:
    first = archive(tmp_path / "home", search_url())
    head = feed(first, "refund for the blue kettle", "refund approved", "thanks")
    assert indexer.index_pending(first) == 3
    assert index_stats(first) == {"state": "built", "indexed": head, "lag": 0}
    first.close()

    moved = archive(tmp_path / "home", search_url())  # the same archive, a new backend
    try:
        assert index_stats(moved) == {"state": "not-built", "indexed": 0, "lag": head}
        assert moved.search.search("refund").total == 0
        assert indexer.index_pending(moved) == 3  # filled by itself, no reindex
        assert moved.search.search("refund").total == 2
        with moved.sessions() as session:
            assert moved.search.state() == IndexState(archive_id(session), head)
        assert index_stats(moved) == {"state": "built", "indexed": head, "lag": 0}
        head = feed(moved, "refund again")
        assert index_stats(moved)["lag"] > 0
        assert indexer.index_pending(moved) == 1  # then incremental, from the index's cursor
        assert index_stats(moved) == {"state": "built", "indexed": head, "lag": 0}
    finally:
        moved.close()


def test_a_wiped_index_is_reported_and_refilled(tmp_path: Path, search_url: Any) -> None:
    services = archive(tmp_path / "home", search_url())
    try:
        head = feed(services, "refund for the blue kettle", "thanks")
        assert indexer.index_pending(services) == 2
        drop = getattr(services.search, "drop", None)
        if drop is not None:
            drop()  # every index and the template gone, as on a wiped cluster
        else:
            services.search.reset()
        assert index_stats(services) == {"state": "not-built", "indexed": 0, "lag": head}
        assert indexer.index_pending(services) == 2
        assert services.search.search("refund").total == 1
        assert index_stats(services)["state"] == "built"
    finally:
        services.close()


def test_an_index_of_another_archive_is_reported_and_left_alone_until_reindex(tmp_path: Path, search_url: Any) -> None:
    shared = search_url()
    theirs = archive(tmp_path / "theirs", shared)
    feed(theirs, "their refund")
    assert indexer.index_pending(theirs) == 1
    ours = archive(tmp_path / "ours", shared)
    try:
        assert index_stats(ours) == {"state": "foreign", "indexed": None, "lag": None}
        feed(ours, "our refund", "our thanks")
        with pytest.raises(SearchUnavailable, match="another archive"):
            indexer.index_pending(ours)
        assert ours.search.search("refund").total == 1  # their document, untouched
        assert index_stats(theirs)["state"] == "built"
        assert indexer.reindex(ours) == 2  # the operator's explicit choice
        assert index_stats(ours)["state"] == "built" and index_stats(theirs)["state"] == "foreign"
        assert ours.search.search("refund").total == 1
    finally:
        ours.close()
        theirs.close()


def test_archiver_stats_and_index_on_a_new_index(tmp_path: Path, search_url: Any) -> None:
    home = tmp_path / "home"
    services = archive(home, search_url())
    head = feed(services, "refund for the blue kettle")
    assert indexer.index_pending(services) == 1
    services.close()
    env = {**os.environ, **make_env(home, ARCHIVER_SEARCH_URL=search_url())}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "archiver.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    before = run("stats", "--json")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["index"] == {"state": "not-built", "indexed": 0, "lag": head}
    indexed = run("index")
    assert indexed.returncode == 0 and "indexed 1 document" in indexed.stdout, indexed.stderr
    after = run("stats", "--json")
    assert json.loads(after.stdout)["index"] == {"state": "built", "indexed": head, "lag": 0}
