"""The catalog's schema evolves by migrations, on SQLite and on a real PostgreSQL.

An archive is built on the schema as archiver/catalog.py created it before migrations
existed (frozen in tests/e2e/catalog_schema/, or revision 0001), filled with sealed
records by the pipeline, refused while outdated (naming ``archiver migrate``), migrated by
that command and then verified by ``archiver verify``; ``archiver serve`` migrates at start
or, told not to, refuses with the command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from archiver import catalog, indexer, keys, migrations, sealer, stats
from archiver.app import create_app
from archiver.config import Settings
from archiver.errors import CatalogOutdated, CatalogUnknown
from archiver.services import Services
from archiver.store import open_store
from tests.contract.test_catalog import _pg_schema_url
from tests.conftest import all_fixture_bodies, make_env, sign
from tests.serving import ROOT, free_port, start_service, stop_service

SCHEMA = Path(__file__).with_name("catalog_schema")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        yield from _pg_schema_url()


def env_for(tmp_path: Path, catalog_url: str, **extra: str) -> dict[str, str]:
    return make_env(tmp_path / "home", ARCHIVER_CATALOG_URL=catalog_url, **extra)


def raw_engine(url: str) -> Engine:
    """An engine on the catalog that neither checks nor creates its schema."""
    return catalog.make_engine(url, check_schema=False)


def create_old_schema(engine: Engine) -> None:
    """Run the DDL that ``Base.metadata.create_all`` issued before migrations existed."""
    ddl = (SCHEMA / f"{engine.dialect.name}.sql").read_text()
    statements = [s for s in (re.sub(r"(?m)^--.*$", "", part).strip() for part in ddl.split(";")) if s]
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def old_services(settings: Settings, engine: Engine) -> Services:
    """Services on a catalog of the old schema (Services.open would refuse it)."""
    return Services(settings=settings, engine=engine, sessions=catalog.make_sessionmaker(engine),
                    store=open_store(settings.store_url, allow_unlocked=settings.allow_unlocked_store),
                    kek=keys.Kek.from_file(settings.kek_path),
                    signing_key=keys.load_signing_key(settings.signing_key_path))


def fill(services: Services) -> int:
    """Post every fixture as Meta would and seal it; leave the old indexer's catalog cursor. Returns the chain head."""
    client = create_app(services=services).test_client()
    for _, body in all_fixture_bodies():
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    assert sealer.seal_pending(services) > 0
    with services.sessions.begin() as session:
        head = catalog.chain_head(session).seq
        catalog.set_cursor(session, "index", head)  # where the indexer kept its cursor then
    return head


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archiver.cli", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def shape(conn: Connection) -> dict[str, Any]:
    """Tables, columns (name, type, nullable), keys, unique constraints and indexes, as reflected."""
    insp = inspect(conn)
    out: dict[str, Any] = {}
    for table in sorted(set(insp.get_table_names()) - {migrations.VERSION_TABLE}):
        out[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                          for f in insp.get_foreign_keys(table)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)),
        }
    return out


# --- the revisions ---------------------------------------------------------------------------


def test_revision_0001_is_the_schema_create_all_made_before(catalog_url: str) -> None:
    if catalog_url.startswith("sqlite"):
        old_url = catalog_url.replace("catalog.db", "old.db")
    else:
        old_url = next(schemas := _pg_schema_url())
    old, new = raw_engine(old_url), raw_engine(catalog_url)
    try:
        create_old_schema(old)
        with new.begin() as conn:
            command.upgrade(migrations.config(conn), "0001")
        with old.connect() as a, new.connect() as b:
            assert shape(a) == shape(b)
            assert set(shape(b)) == set(migrations.scripts().get_revision("0001").module.TABLES)
    finally:
        old.dispose()
        new.dispose()
        if not catalog_url.startswith("sqlite"):
            next(schemas, None)


def test_the_revisions_in_turn_make_the_models_schema(catalog_url: str) -> None:
    chain, fresh = raw_engine(catalog_url), None
    try:
        with chain.begin() as conn:
            command.upgrade(migrations.config(conn), "head")
        with chain.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), catalog.Base.metadata) == []
            assert migrations.status(conn).state == "current"
            chained = shape(conn)
        # A brand-new catalog is created at head by the models: the same schema.
        if catalog_url.startswith("sqlite"):
            fresh = catalog.make_engine(catalog_url.replace("catalog.db", "fresh.db"))
            with fresh.connect() as conn:
                assert shape(conn) == chained
    finally:
        chain.dispose()
        if fresh is not None:
            fresh.dispose()


def test_a_new_catalog_is_created_at_head_with_an_archive_id(catalog_url: str) -> None:
    engine = catalog.make_engine(catalog_url)
    try:
        with engine.connect() as conn:
            assert migrations.status(conn).revision == migrations.head() == "0004"
            rows = conn.execute(text("SELECT id, archive_id FROM archive")).all()
        assert len(rows) == 1 and rows[0][0] == 1 and re.fullmatch(r"[0-9a-f]{32}", rows[0][1])
        catalog.make_engine(catalog_url).dispose()  # opening again creates nothing more
        with engine.connect() as conn:
            assert conn.execute(text("SELECT archive_id FROM archive")).scalars().all() == [rows[0][1]]
    finally:
        engine.dispose()


# --- an archive of today's schema, migrated ----------------------------------------------------


@pytest.mark.parametrize("built_by", ["create_all", "revision-0001"])
def test_an_old_archive_is_refused_then_migrated_and_verifies(catalog_url: str, tmp_path: Path, built_by: str) -> None:
    env = env_for(tmp_path, catalog_url)
    settings = Settings.from_env(env)
    engine = raw_engine(catalog_url)
    if built_by == "create_all":
        create_old_schema(engine)
    else:
        with engine.begin() as conn:
            command.upgrade(migrations.config(conn), "0001")
    old = old_services(settings, engine)
    head = fill(old)
    with old.sessions() as session:
        records = session.scalar(text("SELECT count(*) FROM records"))
    old.close()

    with pytest.raises(CatalogOutdated) as refused:
        Services.open(settings)
    assert "archiver migrate" in str(refused.value) and "0001" in str(refused.value)
    denied = cli(env, "verify")
    assert denied.returncode == 2 and "error[catalog-outdated]" in denied.stderr, denied.stderr
    assert "archiver migrate" in denied.stderr

    done = cli(env, "migrate")
    assert done.returncode == 0, done.stderr
    assert "migrated from revision 0001 to 0004" in done.stdout
    again = cli(env, "migrate")
    assert again.returncode == 0 and "nothing to migrate" in again.stdout, again.stderr

    verified = cli(env, "verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(f"ok: {records} records")

    services = Services.open(settings)
    try:
        with services.sessions() as session:
            assert session.scalar(text("SELECT count(*) FROM records")) == records
            assert session.scalar(text("SELECT count(*) FROM cursors WHERE name = 'index'")) == 0
            assert re.fullmatch(r"[0-9a-f]{32}", catalog.archive_id(session))
            assert catalog.chain_head(session).seq == head
            # The search index states nothing for this archive yet: reported, then built by the indexer.
            assert stats.collect(session, services.search)["index"] == {"state": "not-built", "indexed": 0, "lag": head}
        assert indexer.index_pending(services) > 0
        with services.sessions() as session:
            assert stats.collect(session, services.search)["index"] == {"state": "built", "indexed": head, "lag": 0}
        # New sealing goes on at the migrated catalog.
        client = create_app(services=services).test_client()
        body = all_fixture_bodies()[0][1].replace(b"wamid.", b"wamid.after-migration.")
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
        assert sealer.seal_pending(services) > 0
    finally:
        services.close()
    assert cli(env, "verify").returncode == 0


def test_an_unknown_revision_or_foreign_tables_are_refused(catalog_url: str, tmp_path: Path) -> None:
    engine = catalog.make_engine(catalog_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(CatalogUnknown, match="9999"):
            catalog.make_engine(catalog_url)
        refused = cli(env_for(tmp_path, catalog_url), "migrate")
        assert refused.returncode == 2 and "error[catalog-unknown]" in refused.stderr, refused.stderr
        with engine.begin() as conn:
            for table in [*catalog.Base.metadata.sorted_tables][::-1]:
                conn.execute(text(f"DROP TABLE {table.name}"))
            conn.execute(text(f"DROP TABLE {migrations.VERSION_TABLE}"))
            conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
        with pytest.raises(CatalogUnknown, match="no archive schema"):
            catalog.make_engine(catalog_url)
    finally:
        engine.dispose()


# --- archiver serve ---------------------------------------------------------------------------


def test_serve_migrates_at_start_or_refuses_naming_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = raw_engine(url)
    create_old_schema(engine)
    engine.dispose()
    refusing = env_for(tmp_path, url, ARCHIVER_MIGRATE_ON_START="0")
    port = free_port()
    refused = subprocess.run([sys.executable, "-m", "archiver.cli", "serve", "--port", str(port)], cwd=ROOT,
                             env={**os.environ, **refusing}, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "archiver migrate" in refused.stderr, refused.stderr
    with raw_engine(url).connect() as conn:
        assert migrations.status(conn).state == "outdated"  # refused, untouched

    env = env_for(tmp_path, url)
    proc = start_service(env, port, tmp_path / "serve.log")
    try:
        with raw_engine(url).connect() as conn:
            assert migrations.status(conn).state == "current"
        assert "migrated from revision 0001 to 0004" in (tmp_path / "serve.log").read_text()
    finally:
        stop_service(proc)
