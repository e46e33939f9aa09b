"""``sqlite:///path``: the embedded search index, SQLite FTS5 in one file.

Layout: ``docs`` holds each document's fields and original text (rowid = seq); ``fts``
is a plain FTS5 table (rowid = seq) holding only the folded terms from text.py. The
``ascii`` tokenizer splits on spaces and keeps every non-ASCII character, so FTS5 sees
exactly the terms OpenSearch's ``whitespace`` analyzer sees. Both tables are written by
explicit statements in one transaction, so no triggers are needed.

A query tree compiles to a SQL condition over ``docs``: each maximal text-only subtree
becomes one ``MATCH`` subquery, filters become column tests. Equality uses ``IS`` so a
missing value is false, never NULL, and ``NOT`` stays exact. Every call opens its own
connection (WAL mode), so threads and processes can share the file.

SQL text is assembled only from our own column names and compiled fragments; every value,
including each MATCH expression, is a bound parameter (hence the ``noqa: S608``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from archiver import home
from archiver.errors import ConfigError, SearchUnavailable
from archiver.search import (
    DOC_FIELDS,
    Hit,
    IndexState,
    SearchResult,
    check_page,
    check_size,
    empty_facets,
    merge_patches,
    text,
    unique,
)
from archiver.search import query as ql

# "from" and "to" are SQL keywords; everything else keeps its document name.
_COLUMN = {name: {"from": "from_id", "to": "to_id"}.get(name, name) for name in DOC_FIELDS}
_COLUMNS = ", ".join(_COLUMN.values())
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS docs (
        seq INTEGER PRIMARY KEY, wamid TEXT, kind TEXT, type TEXT, direction TEXT,
        channel TEXT, time INTEGER NOT NULL, from_id TEXT, to_id TEXT, contact TEXT,
        contact_name TEXT, number TEXT, text TEXT NOT NULL, has_media INTEGER NOT NULL,
        mime_type TEXT, status TEXT, edit_of INTEGER, revoked INTEGER NOT NULL,
        revoked_by INTEGER, edited_by INTEGER, retention_class TEXT)""",
    "CREATE INDEX IF NOT EXISTS docs_time ON docs(time, seq)",
    "CREATE INDEX IF NOT EXISTS docs_contact ON docs(contact, time, seq)",
    # from:/to: are the other filters that pick few documents out of many. Low-cardinality
    # filters (kind:, channel:, ...) stay scans: SQLite would take an index even for
    # kind:message and read half the table through it.
    "CREATE INDEX IF NOT EXISTS docs_from ON docs(from_id, time, seq)",
    "CREATE INDEX IF NOT EXISTS docs_to ON docs(to_id, time, seq)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(folded, tokenize='ascii')",
    # IndexState: one row, written in the transaction of the documents it covers.
    "CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), archive TEXT NOT NULL, seq INTEGER NOT NULL)",
)
log = logging.getLogger(__name__)

_BATCH = 500
_MATCH_SQL = "d.seq IN (SELECT rowid FROM fts WHERE fts MATCH ?)"
_ORDER = {"newest": "d.time DESC, d.seq DESC", "oldest": "d.time ASC, d.seq ASC"}
# One pass over the matches gives the total, the facets and the seqs of the page; the
# page's documents are then read by seq (sorting whole rows, text included, costs more).
_SEARCH_SQL = """WITH m AS MATERIALIZED (SELECT d.seq, d.direction, d.channel, d.type, d.time FROM docs d WHERE {cond})
    SELECT 'direction', direction, count(*) FROM m WHERE direction IS NOT NULL GROUP BY 2
    UNION ALL SELECT 'channel', channel, count(*) FROM m WHERE channel IS NOT NULL GROUP BY 2
    UNION ALL SELECT 'type', type, count(*) FROM m WHERE type IS NOT NULL GROUP BY 2
    UNION ALL SELECT 'month', strftime('%Y-%m', time, 'unixepoch'), count(*) FROM m GROUP BY 2
    UNION ALL SELECT 'total', '', count(*) FROM m
    UNION ALL SELECT * FROM (SELECT 'page', seq, time FROM m d ORDER BY {order} LIMIT ? OFFSET ?)"""

Sql = tuple[str, list[Any]]


class Fts5Index:
    """The SQLite FTS5 driver of :class:`archiver.search.SearchIndex`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    @classmethod
    def from_url(cls, url: str) -> Fts5Index:
        """Open (creating if needed) the file named by ``sqlite:///path``.

        Raises ConfigError if the URL has no path or the file cannot be created.
        """
        raw = url.split("://", 1)[1] if "://" in url else ""
        path = raw[1:].split("?", 1)[0] if raw.startswith("/") else ""
        if not path:
            raise ConfigError(f"search URL {url!r} needs a file path: sqlite:////var/lib/archiver/search.db")
        index = cls(Path(path))
        try:
            home.private_dir(index.path.parent)
            with index._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                _create(db)
                _add_new_columns(db)
            home.private_file(index.path)  # it holds every message's text in clear
        except (OSError, SearchUnavailable) as exc:
            raise ConfigError(f"cannot open the search index at {path}") from exc
        return index

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode. Raises SearchUnavailable on SQLite errors."""
        try:
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            db.execute("PRAGMA secure_delete=ON")  # a deleted or updated document's text is zeroed
        except sqlite3.Error as exc:
            raise SearchUnavailable(f"cannot open the search index: {type(exc).__name__}") from exc
        try:
            yield db
        except sqlite3.Error as exc:
            # The SQLite message may quote the query; the error name is enough.
            name = getattr(exc, "sqlite_errorname", type(exc).__name__)
            raise SearchUnavailable(f"search index failed ({name})") from exc
        finally:
            db.close()

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A connection inside one transaction, rolled back if the block raises."""
        with self._connect() as db:
            db.execute(f"BEGIN {mode}")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- writing ---------------------------------------------------------------------

    def index(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Add or replace ``docs`` by seq. Raises ValueError, SearchUnavailable."""
        rows = unique(docs)
        if rows:
            with self._transaction() as db:
                _write(db, rows)

    def update(self, patches: Sequence[Mapping[str, Any]]) -> None:
        """Change fields of indexed documents (the text stays). Raises ValueError, SearchUnavailable."""
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for seq, changes in merge_patches(patches).items():
            if changes:
                groups.setdefault(tuple(changes), []).append([*changes.values(), seq])
        if not groups:
            return
        with self._transaction() as db:
            for names, rows in groups.items():
                sets = ", ".join(f"{_COLUMN[name]} = ?" for name in names)
                db.executemany(f"UPDATE docs SET {sets} WHERE seq = ?", rows)  # noqa: S608

    def delete(self, seqs: Sequence[int]) -> None:
        """Remove documents by seq. Raises SearchUnavailable."""
        with self._transaction() as db:
            _delete(db, list(seqs))

    def rebuild(self, docs: Iterable[Mapping[str, Any]], state: IndexState | None = None) -> int:
        """Replace everything by ``docs`` (the state by ``state``) in one transaction.

        Raises ValueError, SearchUnavailable.
        """
        count = 0
        with self._transaction() as db:
            for table in ("docs", "fts", "state"):
                db.execute(f"DROP TABLE IF EXISTS {table}")
            _create(db)
            stream = iter(docs)
            while batch := unique(islice(stream, _BATCH)):
                _write(db, batch)
                count += len(batch)
            if state is not None:
                _mark(db, state)
        log.info("search.rebuilt", extra={"documents": count})
        return count

    def state(self) -> IndexState | None:
        """The recorded archive and seq, None if never recorded. Raises SearchUnavailable."""
        with self._connect() as db:
            row = db.execute("SELECT archive, seq FROM state WHERE id = 1").fetchone()
        return IndexState(archive=row[0], seq=int(row[1])) if row else None

    def mark(self, state: IndexState) -> None:
        """Record ``state``. Raises SearchUnavailable."""
        with self._transaction() as db:
            _mark(db, state)

    def reset(self) -> None:
        """Drop everything and start empty. Raises SearchUnavailable."""
        self.rebuild(())

    # --- reading ---------------------------------------------------------------------

    def search(self, query: str, *, page: int = 1, size: int = 20, sort: str = "newest") -> SearchResult:
        """One page of ``query``. Raises QuerySyntaxError, ValueError, SearchUnavailable."""
        tree = ql.parse(query)
        check_page(page, size, sort)
        cond, params = _where(tree)
        # One read transaction, so the total, facets and page come from one snapshot.
        with self._transaction("DEFERRED") as db:
            sql = _SEARCH_SQL.format(cond=cond, order=_ORDER[sort])
            total, facets, seqs = _summary(db.execute(sql, [*params, size, (page - 1) * size]))
            marks = ", ".join("?" * len(seqs))
            found = db.execute(f"SELECT {_COLUMNS} FROM docs d WHERE d.seq IN ({marks})", seqs)  # noqa: S608
            by_seq = {doc["seq"]: doc for doc in map(_doc, found)}
        patterns = ql.highlights(tree)
        hits = [Hit.from_doc(by_seq[seq], text.snippet(by_seq[seq]["text"], patterns)) for seq in seqs]
        return SearchResult(total=total, hits=hits, facets=facets, page=page, size=size)

    def conversation(self, contact: str, around_seq: int | None = None, size: int = 50,
                     aliases: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The contact's documents in time order, around ``around_seq`` or the latest.

        Raises ValueError, SearchUnavailable.
        """
        check_size(size)
        contacts = list(dict.fromkeys(c.removeprefix("+") for c in (contact, *aliases)))
        marks = ", ".join("?" * len(contacts))
        select = f"SELECT {_COLUMNS} FROM docs d WHERE d.contact IN ({marks})"  # noqa: S608 - placeholders only
        with self._transaction("DEFERRED") as db:
            if around_seq is None:
                rows = db.execute(f"{select} ORDER BY {_ORDER['newest']} LIMIT ?", [*contacts, size]).fetchall()
                return [_doc(row) for row in reversed(rows)]
            anchor = db.execute(f"{select} AND d.seq = ?", [*contacts, around_seq]).fetchone()
            if anchor is None:
                return []
            time = _doc(anchor)["time"]
            key = [time, time, around_seq]
            before = db.execute(
                f"{select} AND (d.time < ? OR (d.time = ? AND d.seq < ?)) ORDER BY {_ORDER['newest']} LIMIT ?",
                [*contacts, *key, size // 2]).fetchall()
            after = db.execute(
                f"{select} AND (d.time > ? OR (d.time = ? AND d.seq >= ?)) ORDER BY {_ORDER['oldest']} LIMIT ?",
                [*contacts, *key, size - len(before)]).fetchall()
        return [_doc(row) for row in [*reversed(before), *after]]

    def matching_seqs(self, query: str, *, after: int, through: int, limit: int = 1000) -> list[int]:
        """Matching seqs in ``(after, through]``, ascending. Raises QuerySyntaxError, SearchUnavailable."""
        cond, params = _where(ql.parse(query))
        with self._transaction("DEFERRED") as db:
            rows = db.execute(f"SELECT d.seq FROM docs d WHERE {cond} AND d.seq > ? AND d.seq <= ? "  # noqa: S608 - compiled conditions, placeholders
                              "ORDER BY d.seq LIMIT ?", [*params, after, through, limit]).fetchall()
        return [int(row[0]) for row in rows]

    def max_seq(self) -> int:
        """Highest indexed seq, 0 when empty. Raises SearchUnavailable."""
        with self._connect() as db:
            return int(db.execute("SELECT coalesce(max(seq), 0) FROM docs").fetchone()[0])

    def ping(self) -> None:
        """Check the file opens and has our tables. Raises SearchUnavailable."""
        with self._connect() as db:
            db.execute("SELECT 1 FROM docs LIMIT 1").fetchall()


# --- writing helpers -------------------------------------------------------------------


def _create(db: sqlite3.Connection) -> None:
    """Create the tables if missing (statement by statement: executescript would COMMIT)."""
    for statement in _SCHEMA:
        db.execute(statement)


def _mark(db: sqlite3.Connection, state: IndexState) -> None:
    db.execute("INSERT OR REPLACE INTO state (id, archive, seq) VALUES (1, ?, ?)", (state.archive, state.seq))


def _add_new_columns(db: sqlite3.Connection) -> None:
    """Give a file written by an older version the columns added since (all nullable)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(docs)")}
    for name, column in _COLUMN.items():
        if column not in have:
            kind = "TEXT" if DOC_FIELDS[name] is str else "INTEGER"
            db.execute(f"ALTER TABLE docs ADD COLUMN {column} {kind}")


def _write(db: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
    """Replace the documents of ``rows`` (normalized) in both tables."""
    _delete(db, [row["seq"] for row in rows])
    marks = ", ".join("?" * len(_COLUMN))
    db.executemany(f"INSERT OR REPLACE INTO docs ({_COLUMNS}) VALUES ({marks})",  # noqa: S608
                   [[row[name] for name in _COLUMN] for row in rows])
    db.executemany("INSERT INTO fts (rowid, folded) VALUES (?, ?)",
                   [(row["seq"], text.folded(row["text"])) for row in rows])


def _delete(db: sqlite3.Connection, seqs: list[int]) -> None:
    """Delete ``seqs`` from both tables, in chunks below SQLite's variable limit."""
    for i in range(0, len(seqs), _BATCH):
        chunk = seqs[i:i + _BATCH]
        marks = ", ".join("?" * len(chunk))
        db.execute(f"DELETE FROM fts WHERE rowid IN ({marks})", chunk)  # noqa: S608
        db.execute(f"DELETE FROM docs WHERE seq IN ({marks})", chunk)  # noqa: S608


# --- reading helpers -------------------------------------------------------------------


def _doc(row: Sequence[Any]) -> dict[str, Any]:
    """A ``docs`` row as a normalized document."""
    doc = dict(zip(_COLUMN, row, strict=True))
    doc["has_media"], doc["revoked"] = bool(doc["has_media"]), bool(doc["revoked"])
    return doc


def _summary(rows: Iterable[Sequence[Any]]) -> tuple[int, dict[str, dict[str, int]], list[int]]:
    """The total, the facets and the page's seqs (in order) from the rows of :data:`_SEARCH_SQL`."""
    total, facets, seqs = 0, empty_facets(), []
    for facet, value, count in rows:
        if facet == "total":
            total = count
        elif facet == "page":
            seqs.append(value)
        else:
            facets[facet][value] = count
    return total, {name: dict(sorted(counts.items())) for name, counts in facets.items()}, seqs


# --- compiling the query tree ----------------------------------------------------------


def _where(node: ql.Node) -> Sql:
    """A SQL condition over ``docs d`` that holds exactly for the matching documents."""
    expr = _match(node)
    if expr is not None:
        return _MATCH_SQL, [expr]
    if isinstance(node, ql.And):
        return _where_and(node.items)
    if isinstance(node, ql.Or):
        return _join([_where(item) for item in node.items], " OR ")
    if isinstance(node, ql.Not):
        sql, params = _where(node.item)
        return f"NOT ({sql})", params
    return _filter(node)


def _where_and(items: tuple[ql.Node, ...]) -> Sql:
    """An ``And``: its text items in one MATCH (FTS5 does ``a NOT b``), the rest in SQL."""
    positive, negative, rest = _split(items)
    parts = [_where(item) for item in rest]
    if positive:
        parts.insert(0, (_MATCH_SQL, [_and_not(positive, negative)]))
    else:  # FTS5 has no unary NOT: pure negations stay in SQL
        parts += [(f"NOT ({_MATCH_SQL})", [expr]) for expr in negative]
    return _join(parts, " AND ")


def _join(parts: list[Sql], glue: str) -> Sql:
    """Join conditions with ``glue``, in parentheses."""
    return "(" + glue.join(sql for sql, _ in parts) + ")", [p for _, params in parts for p in params]


def _filter(node: ql.Node) -> Sql:
    """A column test for a filter leaf."""
    if isinstance(node, ql.Field):
        if node.name == "has_media":
            return "d.has_media = 1", []
        return f"d.{_COLUMN[node.name]} IS ?", [node.value]
    if isinstance(node, ql.After):
        return "d.time >= ?", [node.epoch]
    if isinstance(node, ql.Before):
        return "d.time < ?", [node.epoch]
    raise TypeError(f"not a query node: {type(node).__name__}")


def _match(node: ql.Node) -> str | None:
    """The FTS5 expression of a text-only subtree, or None if it has filters or pure NOTs."""
    if isinstance(node, (ql.Word, ql.Prefix, ql.Phrase)):
        return _fts_leaf(node)
    if isinstance(node, ql.Or):
        parts = [_match(item) for item in node.items]
        return None if None in parts else "(" + " OR ".join(p for p in parts if p) + ")"
    if isinstance(node, ql.And):
        positive, negative, rest = _split(node.items)
        return _and_not(positive, negative) if positive and not rest else None
    return None


def _split(items: tuple[ql.Node, ...]) -> tuple[list[str], list[str], list[ql.Node]]:
    """Sort ``And`` items into FTS5 positives, FTS5 negatives and the rest."""
    positive: list[str] = []
    negative: list[str] = []
    rest: list[ql.Node] = []
    for item in items:
        expr = _match(item)
        inner = _match(item.item) if isinstance(item, ql.Not) else None
        if expr is not None:
            positive.append(expr)
        elif inner is not None:
            negative.append(inner)
        else:
            rest.append(item)
    return positive, negative, rest


def _and_not(positive: list[str], negative: list[str]) -> str:
    """``(p1 AND p2) NOT n1 NOT n2`` with explicit parentheses."""
    expr = "(" + " AND ".join(positive) + ")"
    for item in negative:
        expr = f"({expr} NOT {item})"
    return expr


def _fts_leaf(node: ql.Text) -> str:
    """A quoted FTS5 string (several terms make a phrase); ``*`` makes the last a prefix."""
    quoted = '"' + " ".join(node.terms).replace('"', '""') + '"'
    return quoted + "*" if isinstance(node, ql.Prefix) else quoted
