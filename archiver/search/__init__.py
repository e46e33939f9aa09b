"""The search index: derived from WORM, thrown away and rebuilt at will.

``SearchIndex`` is shaped by its callers: the indexer (``index``, ``update``, ``delete``,
``max_seq``, ``state``, ``mark``, ``rebuild``), the UI/API/CLI (``search``, ``conversation``), litigation
holds (``matching_seqs``), health checks
(``ping``) and tests or operators (``reset``). Drivers are chosen by URL scheme in
:func:`open_index` and imported lazily, so the embedded install never imports opensearch-py:

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: SQLite FTS5 (fts5.py)
- ``http(s)://[user:pass@]host:port[/alias][?timeout=5&shards=1&replicas=0]``: OpenSearch,
  monthly indices behind ``alias`` (default ``archiver-messages``) (opensearch.py)

Both backends give the same answers: the query is parsed once (query.py) and text is
folded in the application (text.py), so a backend only compares terms.

Documents are dicts built by the indexer; keys outside :data:`DOC_FIELDS` are ignored.

The index carries its own identity and cursor (:class:`IndexState`: the archive it was
built for and the last seq it holds), stored with the documents, so a new or wiped
backend reads as "not built" and the indexer refills it by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from archiver.errors import ConfigError

DOC_FIELDS: dict[str, type] = {
    "seq": int, "wamid": str, "kind": str, "type": str, "direction": str, "channel": str,
    "time": int, "from": str, "to": str, "contact": str, "contact_name": str, "number": str,
    "text": str, "has_media": bool, "mime_type": str, "status": str, "edit_of": int,
    "revoked": bool, "revoked_by": int, "edited_by": int, "retention_class": str,
}
"""Every field a document may carry, and its type (all but ``seq`` and ``time`` may be None)."""

_FIELD_TYPES = tuple(DOC_FIELDS.items())
_REQUIRED = ("seq", "time")

UPDATABLE = ("status", "revoked", "revoked_by", "edited_by")
"""Fields that later records change on a document already indexed (see :meth:`SearchIndex.update`):
the delivery state reached, and the links to the revoke and the latest edit of a message."""

FACETS = ("direction", "channel", "type", "month")
SORTS = ("newest", "oldest")
MAX_SIZE = 500
MAX_WINDOW = 10_000
"""Deepest result reachable by paging (OpenSearch's default ``max_result_window``)."""


@dataclass(frozen=True)
class Hit:
    """One matching document, as a result list shows it. Content is kept out of repr."""

    seq: int
    wamid: str | None
    kind: str
    type: str | None
    direction: str | None
    channel: str | None
    time: int
    sender: str | None = field(repr=False)
    recipient: str | None = field(repr=False)
    contact: str | None = field(repr=False)
    contact_name: str | None = field(repr=False)
    number: str | None = field(repr=False)
    has_media: bool
    revoked: bool
    edit_of: int | None
    status: str | None
    """Delivery state reached (sent, delivered, read, played, failed), for messages that have one."""
    revoked_by: int | None
    """Seq of the revoke of this message, once one is archived."""
    edited_by: int | None
    """Seq of the latest edit of this message, once one is archived."""
    snippet: str = field(repr=False)
    """HTML-escaped excerpt with ``<mark>`` around the matches."""

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], snippet: str) -> Hit:
        """Build from a normalized document (see :func:`normalize`)."""
        return cls(
            seq=doc["seq"], wamid=doc["wamid"], kind=doc["kind"], type=doc["type"],
            direction=doc["direction"], channel=doc["channel"], time=doc["time"],
            sender=doc["from"], recipient=doc["to"], contact=doc["contact"],
            contact_name=doc["contact_name"], number=doc["number"],
            has_media=doc["has_media"], revoked=doc["revoked"], edit_of=doc["edit_of"],
            status=doc["status"], revoked_by=doc["revoked_by"], edited_by=doc["edited_by"],
            snippet=snippet,
        )


@dataclass(frozen=True)
class SearchResult:
    """One page of matches, newest first unless asked otherwise.

    ``total`` and ``facets`` cover the whole result set, not just this page. ``facets``
    maps each of :data:`FACETS` to ``{value: count}`` (``month`` values are ``YYYY-MM``,
    UTC); documents without a value are not counted.
    """

    total: int
    hits: list[Hit]
    facets: dict[str, dict[str, int]] = field(repr=False)
    page: int = 1
    size: int = 20


@dataclass(frozen=True)
class IndexState:
    """Which archive an index was built for (the catalog's archive id) and the last seq it
    has taken in (every sealed record up to ``seq`` is in it)."""

    archive: str
    seq: int


@runtime_checkable
class SearchIndex(Protocol):
    """What the indexer, the UI/API and health checks need from a full-text index."""

    url: str

    def index(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Add or replace documents by ``seq``; they are searchable when this returns.

        Raises ValueError for a document without an int ``seq``/``time`` or with a field
        of the wrong type, SearchUnavailable if the backend cannot take them.
        """

    def update(self, patches: Sequence[Mapping[str, Any]]) -> None:
        """Change fields of documents already indexed; they are searchable when this returns.

        Each patch names a ``seq`` and new values for some of :data:`UPDATABLE`; the other
        fields, the text included, stay as they are. Several patches of one seq apply in
        order. Seqs not in the index are ignored (a record never indexed, or deleted).
        Raises ValueError for a patch without an int ``seq``, naming another field or with
        a value of the wrong type; SearchUnavailable if the backend cannot take them.
        """

    def delete(self, seqs: Sequence[int]) -> None:
        """Remove documents by ``seq`` (disposition, crypto-shredding); unknown seqs are ignored.

        Raises SearchUnavailable.
        """

    def search(self, query: str, *, page: int = 1, size: int = 20, sort: str = "newest") -> SearchResult:
        """Run ``query`` (see :mod:`archiver.search.query`) and return one page of it.

        ``sort`` is ``"newest"`` (time, then seq, descending) or ``"oldest"``.
        Raises QuerySyntaxError for a bad query, ValueError for a bad page, size or sort,
        SearchUnavailable if the backend cannot answer.
        """

    def conversation(self, contact: str, around_seq: int | None = None, size: int = 50,
                     aliases: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Up to ``size`` documents of ``contact``, oldest first.

        With ``around_seq``, a window of about ``size // 2`` documents before it, then it
        and those after; ``[]`` if that seq is not one of the contact's documents. Without
        it, the latest ``size`` documents. ``aliases`` are more identifiers of the same
        person (``identity.resolve``): their documents are hers too. Raises ValueError for
        a bad size, SearchUnavailable.
        """

    def matching_seqs(self, query: str, *, after: int, through: int, limit: int = 1000) -> list[int]:
        """Seqs of the documents matching ``query`` with ``after < seq <= through``, ascending,
        at most ``limit`` (call again from the last to read on). Litigation holds use it.

        Raises QuerySyntaxError, SearchUnavailable.
        """

    def max_seq(self) -> int:
        """The highest indexed seq, 0 when empty (the indexer's resume point). Raises SearchUnavailable."""

    def state(self) -> IndexState | None:
        """The archive and seq recorded by the last :meth:`mark` or :meth:`rebuild`, or None
        for an index that never recorded one (new, wiped, reset, or built before indexes
        carried it). Raises SearchUnavailable."""

    def mark(self, state: IndexState) -> None:
        """Record ``state`` (after the documents up to ``state.seq`` were written). Raises SearchUnavailable."""

    def rebuild(self, docs: Iterable[Mapping[str, Any]], state: IndexState | None = None) -> int:
        """Replace the whole index by ``docs`` (and its state by ``state``) and return how many were indexed.

        Searches keep seeing the old index until the new one is complete (OpenSearch
        writes new indices and swaps the alias; FTS5 commits one transaction). Must not
        run at the same time as :meth:`index`. Raises ValueError, SearchUnavailable; on
        failure the old index (and state) stays in place.
        """

    def reset(self) -> None:
        """Drop everything and start empty, with no state (``rebuild([])``). Raises SearchUnavailable."""

    def ping(self) -> None:
        """Cheap reachability check. Raises SearchUnavailable."""


def open_index(url: str) -> SearchIndex:
    """Open the index named by ``url`` without contacting any server.

    Raises ConfigError for an unknown scheme, a bad URL or a missing extra.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from archiver.search.fts5 import Fts5Index

        return Fts5Index.from_url(url)
    if scheme in ("http", "https"):
        try:
            from archiver.search.opensearch import OpenSearchIndex
        except ImportError as exc:  # opensearch-py is the optional extra
            raise ConfigError(
                "http(s):// search URLs need opensearch-py: pip install 'whatsapp-archiver[opensearch]'"
            ) from exc
        return OpenSearchIndex.from_url(url)
    raise ConfigError(f"unknown search URL scheme {scheme!r}; use sqlite:/// or http(s)://")


def normalize(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the known fields of ``doc`` with their defaults; ignore the rest.

    A lone surrogate in a string (JSON allows it, UTF-8 does not, so neither backend could
    store it) becomes U+FFFD; the original stays in the archive.

    Raises ValueError if ``seq`` or ``time`` is not an int or a field has the wrong type.
    """
    out = {name: doc.get(name) for name in DOC_FIELDS}
    out.update(text=out["text"] or "", has_media=bool(out["has_media"]), revoked=bool(out["revoked"]))
    for name, kind in _FIELD_TYPES:
        value = out[name]
        if value.__class__ is not kind and (value is not None or name in _REQUIRED):  # the common cases first
            _check_field(name, value)
        elif kind is str and isinstance(value, str) and not value.isascii():
            out[name] = _encodable(value)
    return out


def _encodable(value: str) -> str:
    """``value`` with each lone surrogate (JSON can carry them; UTF-8 cannot) replaced by U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value


def unique(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Normalize ``docs``, keeping only the last of several with the same seq.

    Raises ValueError like :func:`normalize`.
    """
    return list({row["seq"]: row for row in map(normalize, docs)}.values())


def merge_patches(patches: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """``{seq: {field: value}}`` of ``patches``, later patches of a seq overriding earlier ones.

    Raises ValueError for a patch without an int ``seq``, with a field outside
    :data:`UPDATABLE` or a value of the wrong type (``revoked`` may not be None).
    """
    merged: dict[int, dict[str, Any]] = {}
    for patch in patches:
        seq = patch.get("seq")
        _check_field("seq", seq)
        changes = {name: value for name, value in patch.items() if name != "seq"}
        for name, value in changes.items():
            if name not in UPDATABLE:
                raise ValueError(f"document field {name!r} cannot be updated; only {', '.join(UPDATABLE)}")
            _check_field(name, value)
        if changes.get("revoked", False) is None:
            raise ValueError("document field 'revoked' must be bool")
        merged.setdefault(seq, {}).update(changes)  # type: ignore[arg-type]  # _check_field: an int
    return merged


def _check_field(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` suits document field ``name``."""
    kind = DOC_FIELDS[name]
    if value is None and name not in _REQUIRED:
        return
    # bool is an int: a True seq would silently become 1.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"document field {name!r} must be {kind.__name__}")


def check_page(page: int, size: int, sort: str) -> None:
    """Raise ValueError unless ``page``, ``size`` and ``sort`` are usable."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    if not 1 <= size <= MAX_SIZE or page < 1:
        raise ValueError(f"page must be >= 1 and size between 1 and {MAX_SIZE}")
    if page * size > MAX_WINDOW:
        raise ValueError(f"paging stops at result {MAX_WINDOW}; narrow the query")


def check_size(size: int) -> None:
    """Raise ValueError unless ``size`` is between 1 and :data:`MAX_SIZE`."""
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"size must be between 1 and {MAX_SIZE}")


def month(epoch: int) -> str:
    """``YYYY-MM`` of ``epoch`` in UTC (facets, monthly index names)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m")


def empty_facets() -> dict[str, dict[str, int]]:
    """A facets dict with every facet present and no counts."""
    return {name: {} for name in FACETS}
