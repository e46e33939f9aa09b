"""Fixtures shared by the end-to-end suites."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from archiver.cli import main
from archiver.config import Settings
from archiver.services import Services
from tests import backends
from tests.conftest import make_env
from tests.contract.test_catalog import _pg_schema_url


@pytest.fixture(params=["fts5", pytest.param("opensearch", marks=pytest.mark.opensearch)])
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Services on the embedded default, searching with SQLite FTS5 or with the real OpenSearch
    that scripts/test started (a fresh index alias per test, dropped afterwards)."""
    extra = {}
    if request.param == "opensearch":
        extra["ARCHIVER_SEARCH_URL"] = f"{backends.opensearch_url()}/e2e-{uuid.uuid4().hex[:10]}?replicas=0"
    services = Services.open(Settings.from_env(make_env(tmp_path / "home", **extra)))
    yield services
    drop = getattr(services.search, "drop", None)
    if drop is not None:
        drop()
    else:
        services.search.reset()
    services.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """ARCHIVER_* of an instance on the embedded SQLite catalog or on the real PostgreSQL
    (a fresh schema, dropped afterwards)."""
    if request.param == "sqlite":
        yield make_env(tmp_path / "home")
    else:
        for url in _pg_schema_url():
            yield make_env(tmp_path / "home", ARCHIVER_CATALOG_URL=url)


@pytest.fixture
def catalog_cli(catalog_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``catalog_cli(*args)`` -> click Result of ``archiver ARGS`` in-process, on the archive of ``catalog_env``."""
    for k, v in catalog_env.items():
        monkeypatch.setenv(k, v)

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args))
    return run
