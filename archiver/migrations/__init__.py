"""Catalog schema revisions (Alembic), on SQLite and PostgreSQL alike.

Revisions live in ``versions/`` (how to add one: docs/migrations.md). Opening the catalog
(:func:`archiver.catalog.make_engine`) calls :func:`check`:

- a brand-new, empty catalog is created at the head revision (the models'
  ``create_all``, which a test keeps equal to the revisions applied in turn), with its
  random archive id, and stamped;
- a catalog at the head revision opens;
- an older one (or one created before migrations existed, which has revision 0001's
  tables and no ``alembic_version``) raises CatalogOutdated naming ``archiver migrate``;
- any other revision, or tables that are not an archive's, raise CatalogUnknown.

:func:`upgrade` (``archiver migrate``, and ``archiver serve`` at start) applies what is
pending in one transaction, holding a lock so two processes never migrate at once:
PostgreSQL's transactional DDL and SQLite's make a failed migration leave the catalog
as it was.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from archiver.errors import CatalogOutdated, CatalogUnknown

HERE = Path(__file__).resolve().parent
BASELINE = "0001"
"""The revision of a catalog created before migrations existed."""
VERSION_TABLE = "alembic_version"


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for these scripts; ``connection`` is what env.py migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("file_template", "r%%(rev)s_%%(slug)s")  # r0003_what_it_does.py
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    """The revision scripts (read once per process)."""
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision: the schema this version of the code reads and writes."""
    found = scripts().get_current_head()
    assert found is not None, "no revision scripts under archiver/migrations/versions"
    return found


def known() -> list[str]:
    """Every revision, oldest first."""
    return [script.revision for script in reversed(list(scripts().walk_revisions()))]


@dataclass(frozen=True)
class Status:
    """Where a catalog stands: ``empty``, ``current``, ``outdated`` or ``unknown``, at ``revision``."""

    state: str
    revision: str | None
    tables: frozenset[str]


def status(conn: Connection) -> Status:
    """Read the catalog's revision on ``conn`` (nothing is written)."""
    tables = frozenset(inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        revision = MigrationContext.configure(conn).get_current_revision()
    else:
        revision = BASELINE if _baseline_tables() <= tables else None
    if revision is None:
        return Status("unknown" if tables else "empty", None, tables)
    if revision == head():
        return Status("current", revision, tables)
    return Status("outdated" if revision in known() else "unknown", revision, tables)


@functools.cache
def _baseline_tables() -> frozenset[str]:
    """The tables revision 0001 creates: a catalog without a version table that has them all
    was created by the code before migrations."""
    module = scripts().get_revision(BASELINE).module
    return frozenset(module.TABLES)


def check(engine: Engine) -> None:
    """Open the catalog only at the head revision; create an empty one there.

    Raises CatalogOutdated (the fix: ``archiver migrate``) or CatalogUnknown.
    """
    with engine.connect() as conn:
        found = status(conn)
    if found.state == "empty":
        with _locked(engine) as conn:  # another process may have created it meanwhile
            found = status(conn)
            if found.state == "empty":
                _create(conn)
                return
    _require_current(found, engine)


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Apply every pending revision (or create an empty catalog at head).

    Returns (revision before, revision after). Raises CatalogUnknown for a revision this
    version does not know; a migration that fails rolls back and its error goes on.
    """
    with _locked(engine) as conn:
        found = status(conn)
        if found.state == "unknown":
            _require_current(found, engine)
        if found.state == "empty":
            _create(conn)
            return None, head()
        if found.state == "outdated":
            if VERSION_TABLE not in found.tables:  # created before migrations: it is 0001
                MigrationContext.configure(conn).stamp(scripts(), BASELINE)
            command.upgrade(config(conn), "head")
        return found.revision, head()


def _require_current(found: Status, engine: Engine) -> None:
    where = engine.url.render_as_string(hide_password=True)
    if found.state == "current":
        return
    if found.state == "outdated":
        raise CatalogOutdated(f"the catalog {where} is at schema revision {found.revision}, this version needs "
                              f"{head()}: run `archiver migrate`")
    if found.revision is not None:
        raise CatalogUnknown(f"the catalog {where} is at schema revision {found.revision}, which this version "
                             f"does not know (it knows {', '.join(known())})")
    raise CatalogUnknown(f"the catalog {where} holds tables but no archive schema revision")


def _create(conn: Connection) -> None:
    """A new catalog at head: the models' tables, the archive's random id, the revision stamp."""
    from archiver.catalog import Archive, Base, utcnow

    Base.metadata.create_all(conn)
    conn.execute(Archive.__table__.insert().values(id=1, archive_id=new_archive_id(), created_at=utcnow()))
    MigrationContext.configure(conn).stamp(scripts(), "head")


def new_archive_id() -> str:
    """A random archive id (32 hex digits)."""
    return uuid.uuid4().hex


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction that no other process migrating or creating this catalog runs beside.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: the catalog's write gate (an
    flock beside the database) and ``BEGIN IMMEDIATE``.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            key = int.from_bytes(hashlib.sha256(b"archiver-migrate").digest()[:4], "big") >> 1
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            yield conn
        return
    from archiver.catalog import WriteGate, gate_path

    gate = WriteGate(gate_path(engine))
    try:
        with gate.held(), engine.connect() as conn:
            conn = conn.execution_options(catalog_write=True)
            with conn.begin():
                yield conn
    finally:
        gate.close()
